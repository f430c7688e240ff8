"""Rigid longitudinal registration: session 2 (moving) onto session 1 (fixed).

Conventions (ITK's, because the .tfm files are ITK's):

- Physical points are LPS millimetres (ITK/DICOM). nibabel affines are RAS: convert with
  :func:`ras_to_lps` / :func:`lps_to_ras` (negate x and y) before/after using a transform.
- The written transform maps *fixed-space* points to *moving-space* points (the direction
  resampling needs: out(x) = moving(T(x))). To move a landmark from session 2 into session 1,
  use the inverse.

The multi-resolution pyramid is built here rather than by ImageRegistrationMethod, because
SimpleITK's SetShrinkFactorsPerLevel shrinks every axis by the same factor, which would reduce
~15 thick (3.3 mm) sagittal slices to 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from spineflow.preprocess import set_itk_threads, shrink_factors_for_spacing, write_like

DEFAULT_SEED = 20240601
# Coarse to fine: in-plane shrink factor and Gaussian smoothing sigma (mm) per level.
PYRAMID_SHRINK = (4, 2, 1)
PYRAMID_SIGMA_MM = (2.0, 1.0, 0.0)
HISTOGRAM_BINS = 50


# ---------------------------------------------------------------- coordinates


def ras_to_lps(points_mm: np.ndarray) -> np.ndarray:
    """RAS (nibabel) to LPS (ITK) millimetres: negate x and y. Its own inverse."""
    points = np.array(points_mm, dtype=float, copy=True)
    points[..., :2] *= -1
    return points


lps_to_ras = ras_to_lps  # the same flip


def apply_rigid_to_points(tfm_path: str | Path, points_mm: np.ndarray) -> np.ndarray:
    """Map fixed-space LPS points (N x 3, mm) to moving space with the transform in ``tfm_path``.

    For nibabel/RAS points: ``lps_to_ras(apply_rigid_to_points(tfm, ras_to_lps(p)))``.
    """
    transform = sitk.ReadTransform(str(tfm_path))
    points = np.atleast_2d(np.asarray(points_mm, dtype=float))
    return np.array([transform.TransformPoint(tuple(map(float, p))) for p in points])


# ---------------------------------------------------------------- pyramid


def _pyramid_level(image: sitk.Image, in_plane_shrink: int, sigma_mm: float, shrink: bool):
    """Smooth (physical sigma) and optionally shrink per axis, sparing the thick slice axis."""
    if sigma_mm > 0:
        image = sitk.SmoothingRecursiveGaussian(image, sigma_mm)
    if shrink and in_plane_shrink > 1:
        factors = shrink_factors_for_spacing(image.GetSpacing(), in_plane_shrink)
        factors = [max(1, min(f, n)) for f, n in zip(factors, image.GetSize(), strict=True)]
        image = sitk.Shrink(image, factors)
    return image


def _registration_method(
    sampling_fraction: float, iterations: int, seed: int, fixed_mask: sitk.Image | None
) -> sitk.ImageRegistrationMethod:
    """Mattes MI, random (seeded) sampling, regular-step gradient descent, linear interp."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(float(sampling_fraction), int(seed))
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    # Step lengths in "mm of maximum voxel shift": 1 unit of rotation moves the far corner ~1 mm.
    # Relaxation 0.7 (not 0.5): with a randomly sampled, noisy metric, halving the step on every
    # direction change stopped some seeds early, 0.3 deg short in rotation.
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=int(iterations),
        relaxationFactor=0.7,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    return method


def _rigid_parameters(transform: sitk.Euler3DTransform) -> dict:
    """The 6 rigid parameters in readable units, plus the rotation centre."""
    rx, ry, rz, tx, ty, tz = transform.GetParameters()
    return {
        "RotationDegrees": [math.degrees(a) for a in (rx, ry, rz)],
        "TranslationMillimetres": [tx, ty, tz],
        "CenterOfRotationMillimetres": list(transform.GetCenter()),
    }


# ---------------------------------------------------------------- registration


def register_rigid(
    fixed_path: str | Path,
    moving_path: str | Path,
    out_tfm: str | Path,
    out_resampled: str | Path,
    fixed_mask_path: str | Path | None = None,
    sampling_fraction: float = 0.25,
    iterations: int = 200,
    threads: int | None = None,
    seed: int = DEFAULT_SEED,
    shrink_per_level: Sequence[int] = PYRAMID_SHRINK,
    sigma_mm_per_level: Sequence[float] = PYRAMID_SIGMA_MM,
) -> dict:
    """Rigidly register moving (session 2) to fixed (session 1).

    Writes ``out_tfm`` (ITK Euler3DTransform, fixed-space LPS points -> moving space) and
    ``out_resampled`` (moving resampled onto the fixed grid, float32, fixed's NIfTI header).
    Reproducible for a given seed (single-threaded; more threads may change the last digits).
    Returns facts for the JSON sidecar.
    """
    n_threads = set_itk_threads(threads)
    fixed = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
    fixed_mask = None
    if fixed_mask_path is not None:
        fixed_mask = sitk.Cast(sitk.ReadImage(str(fixed_mask_path)) > 0, sitk.sitkUInt8)

    # Align image centres (not intensity moments: sessions may differ in field of view).
    transform = sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
        )
    )

    levels = []
    method = None
    for in_plane_shrink, sigma_mm in zip(shrink_per_level, sigma_mm_per_level, strict=True):
        # Fixed is smoothed and shrunk (fewer samples); moving only smoothed (it is interpolated).
        fixed_level = _pyramid_level(fixed, in_plane_shrink, sigma_mm, shrink=True)
        moving_level = _pyramid_level(moving, in_plane_shrink, sigma_mm, shrink=False)
        method = _registration_method(sampling_fraction, iterations, seed, fixed_mask)
        method.SetInitialTransform(transform, inPlace=True)
        method.Execute(fixed_level, moving_level)
        levels.append(
            {
                "InPlaneShrink": int(in_plane_shrink),
                "SmoothingSigmaMillimetres": float(sigma_mm),
                "FixedSizeVoxels": list(fixed_level.GetSize()),
                "Iterations": int(method.GetOptimizerIteration()),
                "MetricValue": float(method.GetMetricValue()),
                "StopCondition": method.GetOptimizerStopConditionDescription(),
            }
        )

    Path(out_tfm).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteTransform(transform, str(out_tfm))
    resampled = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    write_like(fixed_path, resampled, out_resampled, np.float32)

    return {
        "Software": f"SimpleITK {sitk.Version.VersionString()} ImageRegistrationMethod",
        "TransformType": "Euler3DTransform",
        "TransformDirection": "fixed (ses-1) LPS mm -> moving (ses-2) LPS mm",
        "Metric": f"MattesMutualInformation ({HISTOGRAM_BINS} bins)",
        "SamplingFraction": float(sampling_fraction),
        "RandomSeed": int(seed),
        "FinalMetricValue": levels[-1]["MetricValue"],
        "StopCondition": levels[-1]["StopCondition"],
        "Iterations": sum(level["Iterations"] for level in levels),
        "Levels": levels,
        **_rigid_parameters(transform),
        "Threads": n_threads,
    }
