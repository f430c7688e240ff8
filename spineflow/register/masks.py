"""Masks and crops for registration: a vertebra's label widened in the plane, a crop around it,
and where a mask lands once moved."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from spineflow.register.settings import RegisterSettings


def widened_region(region: sitk.Image, reference: sitk.Image, margin_mm: float, slices: int):
    """A label region dilated by margin_mm in-plane and by ``slices`` along the thick slice axis
    (the labels sit on the mid-sagittal slices), resampled onto the reference grid; None if the
    region is empty."""
    region = sitk.Cast(region, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(region).any():
        return None
    mask = sitk.BinaryDilate(region, _radius(region, margin_mm, slices, at_least=1))
    return sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def _radius(image: sitk.Image, in_plane_mm: float, slices: int, at_least: int = 0) -> list[int]:
    """A morphology radius in voxels: in_plane_mm in the sagittal plane (at least
    ``at_least`` voxels), ``slices`` along the thick slice axis."""
    radius = [max(at_least, int(round(in_plane_mm / s))) for s in image.GetSpacing()]
    radius[int(np.argmax(image.GetSpacing()))] = slices
    return radius


# ---------------------------------------------------------------- a vertebra's masks


def vertebra_mask(dseg: sitk.Image, label: int, reference: sitk.Image, margin_mm: float,
                  lateral_mm: float | None = None):  # fmt: skip
    """Mask (uint8, on the reference grid) of one vertebra for a masked registration: its label,
    widened by margin_mm in the sagittal plane (its endplates and walls, the edges that pin
    it, lie on the border) and by one slice either way, or across the slices within
    ``lateral_mm`` of its labelled ones."""
    slices = 1 if lateral_mm is None else lateral_slices(reference, lateral_mm)
    return widened_region(dseg == label, reference, margin_mm, slices=slices)


def eroded_in_plane(mask: sitk.Image, depth_mm: float) -> sitk.Image:
    """The mask eroded by depth_mm in the sagittal plane (not across the thick slices)."""
    return sitk.BinaryErode(mask, _radius(mask, depth_mm, slices=0))


def lateral_slices(reference: sitk.Image, lateral_mm: float) -> int:
    """How many of the reference's thick slices reach lateral_mm (at least one)."""
    return max(1, int(round(lateral_mm / max(reference.GetSpacing()))))


def recentred_transform(transform: sitk.Euler3DTransform, centre_mm) -> sitk.Euler3DTransform:
    """The same rigid mapping with its rotation centre moved (T(x) = R (x - c) + c + t)."""
    moved = sitk.Euler3DTransform()
    moved.SetCenter(tuple(float(c) for c in centre_mm))
    moved.SetRotation(*transform.GetParameters()[:3])
    mapped = np.array(transform.TransformPoint(tuple(float(c) for c in centre_mm)))
    moved.SetTranslation(tuple(mapped - np.asarray(centre_mm, dtype=float)))
    return moved


def crop_to(image: sitk.Image, region: sitk.Image, margin_mm: float, whole_slices=True):
    """The part of ``image`` around the non-zero voxels of ``region`` (same grid), with an
    in-plane margin; all slices kept (they are few and thick; smoothing reads across them)
    unless ``whole_slices`` is False."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(region > 0, sitk.sitkUInt8))
    if 1 not in stats.GetLabels():
        return image
    box = stats.GetBoundingBox(1)
    dims = image.GetDimension()
    start, size = list(box[:dims]), list(box[dims:])
    thick = int(np.argmax(image.GetSpacing()))
    for axis in range(dims):
        if axis == thick and whole_slices:
            start[axis], size[axis] = 0, image.GetSize()[axis]
            continue
        pad = int(np.ceil(margin_mm / image.GetSpacing()[axis]))
        low = max(0, start[axis] - pad)
        high = min(image.GetSize()[axis], start[axis] + size[axis] + pad)
        start[axis], size[axis] = low, high - low
    return sitk.RegionOfInterest(image, size, start)


def on_mask(image: sitk.Image, mask: sitk.Image) -> sitk.Image:
    """``image`` on the mask's bounding box: all that a metric over the mask reads (an
    evaluation over a box with margins took 3.5 times as long: it visits every voxel)."""
    return crop_to(image, mask, 0.0, whole_slices=False)


def _touches_edge(mask: sitk.Image) -> bool:
    """Whether the mask reaches the image's in-plane border (the thick axis aside)."""
    array = sitk.GetArrayViewFromImage(mask)  # (k, j, i): numpy order is reversed
    thick = 2 - int(np.argmax(mask.GetSpacing()))
    edges = [np.take(array, index, axis=axis).any()
             for axis in range(3) if axis != thick for index in (0, -1)]  # fmt: skip
    return bool(any(edges))


def cut_by_border(mask: sitk.Image, mapped: sitk.Image) -> bool:
    """Whether a vertebra is cut by either image's in-plane border: its mask in the fixed one,
    or where it lands in the moving one (``mapped``, ``mapped_box``)."""
    return _touches_edge(mask) or _touches_edge(mapped)


def mapped_box(mask: sitk.Image, transform: sitk.Transform, moving: sitk.Image) -> sitk.Image:
    """Where the mask lands in the moving image under the transform, as a mask on its grid."""
    return sitk.Resample(mask, moving, transform.GetInverse(), sitk.sitkNearestNeighbor, 0)


def around_landing(
    moving: sitk.Image, mask: sitk.Image, transform, *, settings: RegisterSettings
) -> sitk.Image:
    """The part of the moving image around where the mask lands (``mapped_box``), within
    ``crop_margin_mm`` in the plane."""
    return crop_to(moving, mapped_box(mask, transform, moving), settings.crop_margin_mm)


def mask_centre(mask: sitk.Image) -> np.ndarray:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return np.array(stats.GetCentroid(1))
