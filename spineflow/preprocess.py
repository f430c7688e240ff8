"""Intensity preprocessing: N4 bias-field correction, plus helpers shared by image stages.

Images are sagittal lumbar MRI: dark air around the body and thick slices (~1.1 x 1.1 x 3.3 mm),
so every downsampling here is per axis and never shrinks the thick (slice) axis.

Processing runs in SimpleITK; outputs are written with nibabel using the input's own NIfTI
header, so the affine, qform/sform codes and units are kept bit for bit (a SimpleITK round trip
re-derives the affine from an orthonormalised direction matrix and can change it slightly).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from .bids import bids_uris
from .fileio import jsonable

THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


# ---------------------------------------------------------------- shared helpers


def set_itk_threads(threads: int | None = None) -> int:
    """Set SimpleITK's global thread count and return it.

    An explicit ``threads`` wins; otherwise ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS (set per job by
    the workflow) is honoured; otherwise 1, so a job never uses more cores than it was given.
    """
    if threads is None:
        threads = int(os.environ.get(THREADS_ENV, "1") or 1)
    threads = max(1, int(threads))
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)
    return threads


def shrink_factors_for_spacing(spacing_mm: Sequence[float], factor: int) -> list[int]:
    """Per-axis integer shrink factors that make voxels roughly isotropic-coarse.

    The finest axis is shrunk by ``factor``; coarser axes by proportionally less, never below 1.
    With 1.1 x 1.1 x 3.3 mm and factor 3 this gives (3, 3, 1): thick slices are left alone.
    """
    finest_mm = min(spacing_mm)
    return [max(1, int(round(factor * finest_mm / s))) for s in spacing_mm]


def _cap_to_size(factors: Sequence[int], size_vox: Sequence[int]) -> list[int]:
    """Never shrink an axis to fewer than 1 voxel (tiny test volumes, thin slabs)."""
    return [max(1, min(f, n)) for f, n in zip(factors, size_vox, strict=True)]


def write_like(reference_path: str | Path, image: sitk.Image, out_path: str | Path, dtype) -> None:
    """Write ``image`` (on the reference's voxel grid) with the reference's NIfTI header.

    SimpleITK keeps NIfTI voxel order (index i, j, k), so its (k, j, i) array transposed is the
    nibabel (i, j, k) array; the reference affine and qform/sform codes are copied unchanged.
    """
    reference = nib.load(str(reference_path))
    data_ijk = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(dtype)
    if data_ijk.shape != reference.shape[:3]:
        raise ValueError(f"image shape {data_ijk.shape} != reference {reference.shape[:3]}")
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    out = nib.Nifti1Image(data_ijk, reference.affine, header)
    # Keep the reference's exact qform and sform (and codes), not nibabel's re-derived ones.
    out.set_qform(reference.get_qform(), int(reference.header["qform_code"]))
    out.set_sform(reference.get_sform(), int(reference.header["sform_code"]))
    out.header.set_slope_inter(1.0, 0.0)  # data are stored unscaled
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(out_path))


def write_sidecar(path: str | Path, facts: dict) -> None:
    """Write a BIDS-derivatives-style JSON sidecar (sorted keys, 2-space indent, UTF-8), its
    ``Sources`` as BIDS URIs (``bids.bids_uris``)."""
    if "Sources" in facts:
        facts = {**facts, "Sources": bids_uris(facts["Sources"], path)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(facts), indent=2, sort_keys=True, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


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
    factors = _cap_to_size(factors, image.GetSize())
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
