"""SimpleITK shared by the stages: threads, pyramids, images written like a reference, and
points between nibabel's RAS and ITK's LPS.

Every downsampling is per axis and never shrinks the thick (slice) axis. Images are written with
nibabel using the input's own NIfTI header, so the affine, qform/sform codes and units are kept
bit for bit (a SimpleITK round trip re-derives the affine from an orthonormalised direction
matrix and can change it slightly)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


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


def cap_to_size(factors: Sequence[int], size_vox: Sequence[int]) -> list[int]:
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
