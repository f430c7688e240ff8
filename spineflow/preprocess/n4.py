"""N4 bias-field correction of sagittal lumbar MRI: dark air around the body and thick slices
(~1.1 x 1.1 x 3.3 mm), so the mask and the shrink are chosen per axis (``core.itk``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from spineflow.core.itk import cap_to_size, set_itk_threads, shrink_factors_for_spacing, write_like

# ---------------------------------------------------------------- foreground mask


def _largest_components(binary: sitk.Image, min_fraction_of_largest: float) -> sitk.Image:
    """Keep the largest connected component and any at least this fraction of its size."""
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(binary), sortByObjectSize=True)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    if not stats.GetLabels():
        return binary
    sizes_vox = {label: stats.GetNumberOfPixels(label) for label in stats.GetLabels()}
    largest_vox = max(sizes_vox.values())
    keep = [lab for lab, n in sizes_vox.items() if n >= min_fraction_of_largest * largest_vox]
    return sitk.BinaryThreshold(labels, 1, max(keep), 1, 0)  # relabelled: kept labels are 1..k


def foreground_mask(
    image: sitk.Image, smoothing_sigma_mm: float = 2.0, min_fraction_of_largest: float = 0.1
) -> sitk.Image:
    """Body mask (uint8): Otsu on a smoothed image, holes filled, largest components kept.

    Smoothing first stops noise in the dark air from becoming speckle; filling holes keeps dark
    tissue inside the body (cortical bone, CSF on T1, ligaments) in the N4 fit.
    """
    smoothed = sitk.SmoothingRecursiveGaussian(image, smoothing_sigma_mm)
    # OtsuThreshold labels voxels below the threshold "inside"; we want the bright body.
    body = sitk.OtsuThreshold(smoothed, 0, 1)
    body = sitk.BinaryFillhole(body)
    body = _largest_components(body, min_fraction_of_largest)
    return sitk.Cast(body, sitk.sitkUInt8)


# ---------------------------------------------------------------- N4


def _record_iterations(corrector: sitk.N4BiasFieldCorrectionImageFilter, log: dict) -> None:
    """Record the iterations and last convergence value per fitting level during Execute."""

    def on_iteration() -> None:
        level = int(corrector.GetCurrentLevel())
        log[level] = (
            int(corrector.GetElapsedIterations()),
            float(corrector.GetCurrentConvergenceMeasurement()),
        )

    corrector.AddCommand(sitk.sitkIterationEvent, on_iteration)


def n4_bias_correct(
    in_path: str | Path,
    out_path: str | Path,
    field_path: str | Path | None = None,
    mask_path: str | Path | None = None,
    shrink_factor: int = 3,
    iterations: Sequence[int] = (50, 50, 30),
    convergence_threshold: float = 1e-3,
    threads: int | None = None,
) -> dict:
    """N4 bias-field correction; writes the corrected image (float32) and optionally the
    multiplicative bias field (float32) and the foreground mask (uint8).

    The field is fitted on a shrunken image (speed) and evaluated at full resolution from the
    B-spline control points, then the full-resolution image is divided by it (standard recipe).
    ``threads=None`` uses ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS, else 1.
    Returns facts for the JSON sidecar.
    """
    n_threads = set_itk_threads(threads)
    image = sitk.ReadImage(str(in_path), sitk.sitkFloat32)
    mask = foreground_mask(image)

    factors = shrink_factors_for_spacing(image.GetSpacing(), shrink_factor)
    factors = cap_to_size(factors, image.GetSize())
    small_image = sitk.Shrink(image, factors)
    small_mask = sitk.Shrink(mask, factors)

    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(n) for n in iterations])
    corrector.SetConvergenceThreshold(float(convergence_threshold))
    corrector.SetNumberOfThreads(n_threads)
    level_log: dict[int, tuple[int, float]] = {}
    _record_iterations(corrector, level_log)
    corrector.Execute(small_image, small_mask)

    log_field = corrector.GetLogBiasFieldAsImage(image)  # B-spline evaluated on the full grid
    field = sitk.Cast(sitk.Exp(log_field), sitk.sitkFloat32)
    corrected = sitk.Cast(image / field, sitk.sitkFloat32)

    write_like(in_path, corrected, out_path, np.float32)
    if field_path is not None:
        write_like(in_path, field, field_path, np.float32)
    if mask_path is not None:
        write_like(in_path, mask, mask_path, np.uint8)

    mask_fraction = float(sitk.GetArrayViewFromImage(mask).mean())
    levels = sorted(level_log)
    field_in_mask = sitk.GetArrayViewFromImage(field)[sitk.GetArrayViewFromImage(mask) > 0]
    return {
        "Software": f"SimpleITK {sitk.Version.VersionString()} N4BiasFieldCorrectionImageFilter",
        "ShrinkFactorsPerAxis": factors,
        "MaximumIterationsPerLevel": [int(n) for n in iterations],
        "IterationsPerLevel": [level_log[level][0] for level in levels],
        "FinalConvergencePerLevel": [level_log[level][1] for level in levels],
        "ConvergenceThreshold": float(convergence_threshold),
        "MaskVoxelFraction": mask_fraction,
        "BiasFieldRangeInMask": [float(field_in_mask.min()), float(field_in_mask.max())]
        if field_in_mask.size
        else None,
        "Threads": n_threads,
    }
