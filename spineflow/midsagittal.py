"""The spine's own mid-sagittal plane, and the 2D image and profiles sampled in it.

Images are handled in nibabel's closest canonical (RAS) orientation: axis 0 runs left to right
across the sagittal slices, axis 1 posterior to anterior, axis 2 inferior to superior. In-plane
positions are millimetres (y_mm, z_mm) = (j * dy, k * dz): distances in them are physical.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

# a thecal sac is ~10-25 mm deep: wider bright blobs (bowel, bladder) and thin lines (skin,
# vessel walls) are not canal
CANAL_MAX_WIDTH_MM = 35.0
CANAL_MIN_WIDTH_MM = 4.0
LOCAL_CONTRAST = 1.3  # CSF over the mean of its 15 mm neighbourhood


@dataclass(frozen=True)
class Volume:
    data: np.ndarray  # [x, y, z] float32, canonical RAS axes
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]

    @property
    def plane_spacing_mm(self) -> np.ndarray:
        return np.array(self.spacing_mm[1:])


def load_canonical(path) -> Volume:
    image = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D image, got shape {data.shape}")
    return Volume(data, image.affine, tuple(float(z) for z in image.header.get_zooms()[:3]))


def _bright_tubes(plane: np.ndarray, spacing_mm):
    """Components of the image that are brighter than the tissue around them (the image over
    the 15 mm Gaussian mean of the body's pixels, air left out: a bias field that N4 left
    behind brightens whole regions, not a narrow band within them): the component labels, each
    pixel's local contrast and its brightness relative to the image's brightest."""
    smooth = ndimage.gaussian_filter(plane, 1.0)
    top = np.percentile(smooth, 99.5)
    body = (smooth > 0.1 * top).astype(float)
    sigma = 15.0 / np.asarray(spacing_mm)
    background = ndimage.gaussian_filter(smooth * body, sigma) / np.maximum(
        ndimage.gaussian_filter(body, sigma), 1e-6
    )
    contrast = smooth / np.maximum(background, 1e-6)
    labels, _ = ndimage.label((contrast > LOCAL_CONTRAST) & (smooth > 0.2 * top))
    return labels, contrast, smooth / top, body > 0


def _lr_narrowness(volume: Volume, mask: np.ndarray) -> float:
    """1 minus the share of the slices where the structure is brighter than half its peak: a
    tube (the thecal sac, ~20 mm wide) is narrow across the slices, a sheet (skin, a band of
    residual bias) is bright in all of them."""
    profile = volume.data[:, mask].mean(axis=1)
    profile = profile - profile.min()
    if profile.max() <= 0:
        return 0.0
    return float(1.0 - np.mean(profile >= 0.5 * profile.max()))


def find_canal(plane: np.ndarray, spacing_mm, volume: Volume | None = None, near=None):
    """Mask of the thecal sac: the bright, long, narrow structure of a fluid-sensitive image.

    Candidates are locally bright components 4-35 mm wide; the score favours long, bright ones
    that stand out most and have no air around them; with the volume, also ones that are narrow
    across the slices (a tube, not a sheet). With ``near`` (a mask), the candidate overlapping
    it most is taken instead."""
    labels, contrast, brightness, body = _bright_tubes(plane, spacing_mm)
    ring = ndimage.generate_binary_structure(2, 1)
    best, best_score = None, 0.0
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels[region] == index
        extent_mm = mask.shape[1] * spacing_mm[1]  # cranio-caudal extent
        width_mm = mask.sum() * spacing_mm[0] * spacing_mm[1] / max(extent_mm, 1e-6)
        if not CANAL_MIN_WIDTH_MM < width_mm < CANAL_MAX_WIDTH_MM:
            continue
        if near is not None:
            score = float(np.sum(near[region] & mask))
        else:
            # CSF is the brightest tissue of a fluid-sensitive image, in the image as a whole too
            score = extent_mm * (float(np.mean(contrast[region][mask])) - 1.0)
            score *= float(np.mean(brightness[region][mask]))
            # the canal lies deep in the body; the skin, bright near a surface coil, borders air
            whole = labels == index
            around = ndimage.binary_dilation(whole, ring, iterations=int(10 / spacing_mm[0]))
            score *= float(np.mean(body[around & ~whole]))
            if volume is not None:
                score *= _lr_narrowness(volume, whole) ** 2
        if score > best_score:
            best, best_score = index, score
    if best is None:
        raise ValueError("no spinal canal found (no long, narrow, bright structure)")
    return labels == best


def _lr_centre(profile: np.ndarray) -> float:
    """Centroid of the central run of an LR profile above half its range (NaN if flat)."""
    profile = profile - profile.min()
    if not np.isfinite(profile).all() or profile.max() <= 0:
        return float("nan")
    runs, _ = ndimage.label(profile >= 0.5 * profile.max())
    weights = np.where(runs == runs[int(np.argmax(profile))], profile, 0.0)
    return float(np.sum(weights * np.arange(len(profile))) / np.sum(weights))


def canal_projection(volume: Volume) -> np.ndarray:
    """The canal in the maximum-intensity projection across the slices (a [y, z] mask)."""
    return find_canal(volume.data.max(axis=0), volume.plane_spacing_mm, volume)


def find_midline(volume: Volume, canal: np.ndarray | None = None) -> np.ndarray:
    """Fractional slice index of the spine's mid-sagittal surface for every row z.

    The canal is found in the maximum-intensity projection (``canal_projection``); in each row
    the CSF signal across the slices is symmetric about the midline, so its centroid (above
    half maximum) locates it to a fraction of the slice spacing. A coronal curve or a tilted
    patient moves the midline from slice to slice along the spine, so it is followed row by
    row (``smooth_midline``).
    """
    canal = canal_projection(volume) if canal is None else canal
    rows = np.flatnonzero(canal.sum(axis=0) >= 2)
    centres = np.array([_lr_centre(volume.data[:, canal[:, k], k].mean(axis=1)) for k in rows])
    keep = np.isfinite(centres)
    if not keep.any():
        raise ValueError("no spinal canal found across the slices")
    return smooth_midline(rows[keep], centres[keep], volume.data.shape, volume.spacing_mm)


def smooth_midline(rows: np.ndarray, centres: np.ndarray, shape, spacing_mm) -> np.ndarray:
    """The midline of every row z from its centres in some rows: a robust quadratic in z over
    those rows (rows a stray bright slice pulled off the curve dropped), held constant beyond
    them."""
    z_mm = rows * spacing_mm[2]
    coef = np.array([np.median(centres)])
    inlier = np.ones(len(rows), bool)
    if len(rows) >= 20:
        for _ in range(3):
            coef = np.polyfit(z_mm[inlier], centres[inlier], 2)
            residual = centres - np.polyval(coef, z_mm)
            inlier = np.abs(residual) <= max(3 * 1.4826 * np.median(np.abs(residual)), 0.1)
    all_z = np.clip(np.arange(shape[2]) * spacing_mm[2], z_mm.min(), z_mm.max())
    return np.clip(np.polyval(coef, all_z), 0, shape[0] - 1)


# a label map whose bodies are this wide across the slices holds the whole bodies (another
# tool's map, a manual tracing), not the few slices around a midline the built-in one labels
WHOLE_BODY_LABELS_MM = 15.0


def labels_midline(labels: np.ndarray, spacing_mm) -> np.ndarray | None:
    """The mid-sagittal surface from a label map of whole vertebral bodies: per row z the
    centroid of its body voxels across the slices (``smooth_midline``); None when the bodies
    are labelled only near a midline (narrower than WHOLE_BODY_LABELS_MM)."""
    bodies = (labels > 0) & (labels < 100)
    per_row = bodies.sum(axis=1)  # [x, z]: voxels per slice and row
    rows = np.flatnonzero(per_row.sum(axis=0) > 0)
    if not len(rows):
        return None
    width_slices = np.median([np.ptp(np.flatnonzero(per_row[:, k])) + 1 for k in rows])
    if width_slices * spacing_mm[0] < WHOLE_BODY_LABELS_MM:
        return None
    x = np.arange(labels.shape[0])
    centres = (per_row[:, rows] * x[:, None]).sum(axis=0) / per_row[:, rows].sum(axis=0)
    return smooth_midline(rows, centres, labels.shape, spacing_mm)


def find_midline_x(volume: Volume) -> float:
    """The mid-sagittal surface's slice position averaged over the rows (a single number)."""
    return float(np.mean(find_midline(volume)))


def plane_at(volume: Volume, x_index) -> np.ndarray:
    """2D [y, z] image on a sagittal surface at fractional slice position(s), one per row z or
    one for all (linear between neighbouring slices)."""
    x = np.broadcast_to(np.asarray(x_index, dtype=float), (volume.data.shape[2],))
    lower = np.clip(np.floor(x).astype(int), 0, volume.data.shape[0] - 1)
    upper = np.minimum(lower + 1, volume.data.shape[0] - 1)
    weight = np.clip(x - lower, 0.0, 1.0)
    z = np.arange(volume.data.shape[2])
    return (1 - weight) * volume.data[lower, :, z].T + weight * volume.data[upper, :, z].T


def sample(plane: np.ndarray, spacing_mm, points_mm: np.ndarray) -> np.ndarray:
    """Bilinear samples of a 2D [y, z] image at (y_mm, z_mm) points; NaN outside the image."""
    coords = (np.asarray(points_mm, dtype=float) / np.asarray(spacing_mm)).T
    values = ndimage.map_coordinates(plane, coords, order=1, mode="constant", cval=np.nan)
    return values


def inside_mm(plane_shape, spacing_mm, points_mm, margin_px: float = 0.5) -> np.ndarray:
    coords = np.asarray(points_mm) / np.asarray(spacing_mm)
    upper = np.asarray(plane_shape) - 1 - margin_px
    return np.all((coords >= margin_px) & (coords <= upper), axis=-1)
