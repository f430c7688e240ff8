"""The whole-field rigid registration of ses-2 to ses-1: a Mattes-MI pyramid, started from the
labels' centroids where they agree (docs/methods/registration.md)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from spineflow.core.itk import set_itk_threads, shrink_factors_for_spacing, write_like
from spineflow.register.masks import lateral_slices, mask_centre, widened_region
from spineflow.register.metric import central_difference_gradients
from spineflow.register.out_of_plane import search_out_of_plane
from spineflow.register.settings import DEFAULTS, RegisterSettings

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
    fixed_mask: sitk.Image | None,
    *,
    settings: RegisterSettings,
) -> sitk.ImageRegistrationMethod:
    """Mattes MI, random (seeded) sampling, regular-step gradient descent, linear interp."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(float(settings.sampling_fraction), int(settings.seed))
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    central_difference_gradients(method)
    # the slab of thick sagittal slices around the spine barely pins the turns out of its plane:
    # free, they wandered 5-18 deg from the truth on the demo cohort; they keep their start
    # here and are searched for afterwards (``search_out_of_plane``)
    method.SetOptimizerWeights([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    step_descent(
        method,
        settings.step_mm,
        settings.min_step_mm,
        settings.iterations,
        settings.relaxation,
        settings.gradient_tolerance,
    )
    return method


def step_descent(method, step_mm, min_step_mm, iterations, relaxation, tolerance) -> None:
    """Linear interpolation and regular-step gradient descent, steps in "mm of largest voxel
    shift" (one unit of rotation moves the far corner about a millimetre)."""
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=step_mm,
        minStep=min_step_mm,
        numberOfIterations=int(iterations),
        relaxationFactor=relaxation,
        gradientMagnitudeTolerance=tolerance,
    )
    method.SetOptimizerScalesFromPhysicalShift()


def rigid_parameters(transform: sitk.Euler3DTransform) -> dict:
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
    fixed_dseg: str | Path | None = None,
    moving_dseg: str | Path | None = None,
    threads: int | None = None,
    *,
    settings: RegisterSettings = DEFAULTS,
) -> dict:
    """Rigidly register moving (session 2) to fixed (session 1): the pitch (the turn in the sagittal
    plane) and the shift by gradient descent; with label maps, the turns out of the plane by
    exhaustive search across the spine's slices (``search_out_of_plane``). Each vertebra is refined
    afterwards (``register_levels``).

    Writes ``out_tfm`` (ITK Euler3DTransform, fixed-space LPS points -> moving space) and
    ``out_resampled`` (moving resampled onto the fixed grid, float32, fixed's NIfTI header).
    Reproducible for a given seed (single-threaded; more threads may change the last digits). With
    both sessions' label maps (``fixed_dseg``, ``moving_dseg``) the spines are first put on each
    other (``label_transform``: the fields of view of two visits may lie centimetres apart), only
    the spine and ``spine_margin_mm`` around it drive the metric (the bowel and the pelvis move on
    their own), and the result is checked against the labels (``_checked_against_labels``). Returns
    facts for the JSON sidecar."""
    n_threads = set_itk_threads(threads)
    fixed = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
    fixed_mask = spine_mask(fixed_dseg, fixed, settings.spine_margin_mm) if fixed_dseg else None
    centroids = (
        (label_centroids(fixed_dseg), label_centroids(moving_dseg))
        if fixed_dseg and moving_dseg
        else None
    )
    initial = label_transform(*centroids) if centroids else None
    if initial is not None:
        transform = sitk.Euler3DTransform(initial)  # a copy: the registration works in place
    else:  # image centres (not intensity moments: sessions may differ in field of view)
        transform = sitk.Euler3DTransform(
            sitk.CenteredTransformInitializer(
                fixed, moving, sitk.Euler3DTransform(),
                sitk.CenteredTransformInitializerFilter.GEOMETRY,
            )
        )  # fmt: skip

    levels = []
    method = None
    for in_plane_shrink, sigma_mm in zip(
        settings.pyramid_shrink, settings.pyramid_sigma_mm, strict=True
    ):
        # Fixed is smoothed and shrunk (fewer samples); moving only smoothed (it is interpolated).
        fixed_level = _pyramid_level(fixed, in_plane_shrink, sigma_mm, shrink=True)
        moving_level = _pyramid_level(moving, in_plane_shrink, sigma_mm, shrink=False)
        method = _registration_method(fixed_mask, settings=settings)
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

    quality = {}
    if initial is not None:
        transform, quality = _checked_against_labels(
            transform, initial, *centroids, settings=settings
        )
        spine = widened_region(
            sitk.ReadImage(str(fixed_dseg)) > 0,
            fixed,
            settings.spine_search_margin_mm,
            lateral_slices(fixed, settings.lateral_reach_mm),
        )
        transform, quality["OutOfPlane"] = search_out_of_plane(
            fixed, moving, spine, transform, mask_centre(spine), settings=settings
        )
    Path(out_tfm).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteTransform(transform, str(out_tfm))
    resampled = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    write_like(fixed_path, resampled, out_resampled, np.float32)

    return {
        "Software": f"SimpleITK {sitk.Version.VersionString()} ImageRegistrationMethod",
        "TransformType": "Euler3DTransform",
        "TransformDirection": "fixed (ses-1) LPS mm -> moving (ses-2) LPS mm",
        "Metric": f"MattesMutualInformation ({settings.histogram_bins} bins)",
        "SamplingFraction": float(settings.sampling_fraction),
        "RandomSeed": int(settings.seed),
        "FinalMetricValue": levels[-1]["MetricValue"],
        "StopCondition": levels[-1]["StopCondition"],
        "Iterations": sum(level["Iterations"] for level in levels),
        "Levels": levels,
        **rigid_parameters(transform),
        **quality,
        "Threads": n_threads,
    }


# ---------------------------------------------------------------- from the label maps


def label_centroids(dseg_path) -> dict[int, np.ndarray]:
    """LPS centroid of every vertebra and disc label of a label map."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(sitk.ReadImage(str(dseg_path)), sitk.sitkUInt16))
    return {label: np.array(stats.GetCentroid(label)) for label in stats.GetLabels()}


def label_transform(fixed: dict, moving: dict) -> sitk.Euler3DTransform | None:
    """Rigid transform (fixed -> moving) that best puts the centroids (``label_centroids``) of
    the structures labelled in both sessions on each other: their mean shift, and the turn in
    the sagittal plane (about LPS x, the slice normal) that best lines them up there (least
    squares; they trace the curved spine, so pitch is well defined when three or more are
    shared). Not the turns out of the plane: the centroids lie on a few mid slices and nearly
    on a line along the spine, and turning about that line (yaw, for a straight spine) moves
    them by no more than a slice's quantisation, so a full 3D fit made them up by 10-30 deg;
    they are searched for in the images (``search_out_of_plane``)."""
    common = sorted(set(fixed) & set(moving))
    if not common:
        return None
    fixed_points = np.array([fixed[label] for label in common])
    moving_points = np.array([moving[label] for label in common])
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(fixed_points.mean(axis=0)))
    transform.SetTranslation(tuple(moving_points.mean(axis=0) - fixed_points.mean(axis=0)))
    if len(common) >= 3:
        p = fixed_points[:, 1:] - fixed_points[:, 1:].mean(axis=0)  # (y, z): the sagittal plane
        q = moving_points[:, 1:] - moving_points[:, 1:].mean(axis=0)
        cross = np.sum(p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0])
        transform.SetRotation(math.atan2(cross, np.sum(p * q)), 0.0, 0.0)
    return transform


def label_residual_mm(transform: sitk.Transform, fixed: dict, moving: dict) -> float:
    """Median distance (mm) between the moving session's label centroids and the fixed
    session's mapped by the transform: a registration check independent of the image metric."""
    common = sorted(set(fixed) & set(moving))
    mapped = [np.array(transform.TransformPoint(tuple(fixed[label]))) for label in common]
    return float(np.median([np.linalg.norm(m - moving[lab]) for m, lab in zip(mapped, common)]))


def _checked_against_labels(
    transform, initial, fixed: dict, moving: dict, *, settings: RegisterSettings
):
    """The image registration unless it put the labelled spines further apart than the labels'
    own fit did, by more than ``label_slack_mm`` (it slid along the spine, which looks alike level
    after level): then the label fit, and the sidecar says so."""
    after = label_residual_mm(transform, fixed, moving)
    before = label_residual_mm(initial, fixed, moving)
    facts = {"LabelResidualMillimetres": after, "InitialLabelResidualMillimetres": before}
    if after > before + settings.label_slack_mm:
        facts["Fallback"] = "image registration moved away from the labels: label fit kept"
        return initial, facts
    return transform, facts


def spine_mask(dseg_path, reference: sitk.Image, margin_mm: float) -> sitk.Image | None:
    """The labelled spine widened by margin_mm in the sagittal plane and by two slices either
    way, on the reference grid (None if nothing is labelled)."""
    return widened_region(sitk.ReadImage(str(dseg_path)) > 0, reference, margin_mm, slices=2)
