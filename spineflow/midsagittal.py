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


def find_canal(plane: np.ndarray, spacing_mm) -> np.ndarray:
    """Mask of the thecal sac: the bright, long, narrow structure of a fluid-sensitive image."""
    smooth = ndimage.gaussian_filter(plane, 1.0)
    threshold = 0.5 * np.percentile(smooth, 99.8)
    labels, n = ndimage.label(smooth > threshold)
    best, best_extent = None, 0.0
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels[region] == index
        extent_mm = mask.shape[1] * spacing_mm[1]  # cranio-caudal extent
        width_mm = mask.sum() * spacing_mm[0] * spacing_mm[1] / max(extent_mm, 1e-6)
        if CANAL_MIN_WIDTH_MM < width_mm < CANAL_MAX_WIDTH_MM and extent_mm > best_extent:
            best, best_extent = index, extent_mm
    if best is None:
        raise ValueError("no spinal canal found (no long, narrow, bright structure)")
    return labels == best


def find_midline_x(volume: Volume) -> float:
    """Fractional slice index of the mid-sagittal plane, from the canal's left-right profile.

    The canal is found in the maximum-intensity projection; the per-slice CSF signal inside it
    is symmetric about the midline, so its centroid (above half maximum) locates the plane to a
    fraction of the 3 mm slice spacing.
    """
    projection = volume.data.max(axis=0)
    canal = find_canal(projection, volume.plane_spacing_mm)
    profile = volume.data[:, canal].mean(axis=1)
    profile = profile - profile.min()
    keep = profile >= 0.5 * profile.max()
    # the central run of slices above half maximum (ignore stray bright slices far lateral)
    runs, n = ndimage.label(keep)
    peak_run = runs[int(np.argmax(profile))]
    weights = np.where(runs == peak_run, profile, 0.0)
    return float(np.sum(weights * np.arange(len(profile))) / np.sum(weights))


def plane_at(volume: Volume, x_index: float) -> np.ndarray:
    """2D [y, z] image at a fractional slice position (linear between neighbouring slices)."""
    lower = int(np.clip(np.floor(x_index), 0, volume.data.shape[0] - 1))
    upper = min(lower + 1, volume.data.shape[0] - 1)
    weight = float(np.clip(x_index - lower, 0.0, 1.0))
    return (1 - weight) * volume.data[lower] + weight * volume.data[upper]


def sample(plane: np.ndarray, spacing_mm, points_mm: np.ndarray) -> np.ndarray:
    """Bilinear samples of a 2D [y, z] image at (y_mm, z_mm) points; NaN outside the image."""
    coords = (np.asarray(points_mm, dtype=float) / np.asarray(spacing_mm)).T
    values = ndimage.map_coordinates(plane, coords, order=1, mode="constant", cval=np.nan)
    return values


def inside_mm(plane_shape, spacing_mm, points_mm, margin_px: float = 0.5) -> np.ndarray:
    coords = np.asarray(points_mm) / np.asarray(spacing_mm)
    upper = np.asarray(plane_shape) - 1 - margin_px
    return np.all((coords >= margin_px) & (coords <= upper), axis=-1)
