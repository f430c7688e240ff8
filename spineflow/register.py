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

import functools
import math
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from spineflow.gridsearch import refined_minimum, refined_minimum_value
from spineflow.preprocess import set_itk_threads, shrink_factors_for_spacing, write_like

DEFAULT_SEED = 20240601
# Coarse to fine: in-plane shrink factor and Gaussian smoothing sigma (mm) per level.
PYRAMID_SHRINK = (4, 2, 1)
PYRAMID_SIGMA_MM = (2.0, 1.0, 0.0)
HISTOGRAM_BINS = 50
# label centroids of two sessions agree to ~1-2 mm; an image registration that leaves them
# further apart than this beyond the label fit has slid along the spine
LABEL_SLACK_MM = 2.0
# a vertebra's refinement corrects the whole-field fit by a millimetre or two and a few
# degrees; one that moves further has locked onto a neighbour (they look alike)
MAX_REFINE_SHIFT_MM = 4.0
MAX_REFINE_ROTATION_DEG = 5.0
# out of the sagittal plane a vertebra is pinned by its canal, pedicles and body across the
# slices; its mask for that search reaches this far beyond its labelled slices, not into the
# psoas and the vessels beside the body, which move on their own between visits; the
# left-right shift is searched on a 0.5 mm grid over a few slices' range
LATERAL_REACH_MM = 10.0
LEFT_RIGHT_SEARCH_MM = 6.0
LEFT_RIGHT_STEP_MM = 0.5
# a search over +-6 mm reads only what lands inside the moving image at both of its ends: on
# a slab of 15 slices, not a vertebra's outermost slices. The second round searches within
# this of the first round's shift, and so reads them
FINE_LEFT_RIGHT_MM = 2.0
# its turn out of the sagittal plane, about the spine's long axis (yaw) and about the
# anterior-posterior axis (roll), is left to this search by the whole-field fit (which keeps
# the sessions' scanner axes; patients lie within a few degrees of the same way): searched over
# these ranges, each angle at its best left-right shift on a coarse grid
YAW_SEARCH_DEG, YAW_STEP_DEG = 20.0, 2.0
ROLL_SEARCH_DEG, ROLL_STEP_DEG = 12.0, 1.0
COARSE_LEFT_RIGHT_STEP_MM = 1.0
# two cues to the motion out of the plane, searched each alone and averaged: the intensities
# and their edges (gradient magnitude at EDGE_SIGMA_MM). Where fat suppression differs between
# the visits, fat changes its brightness against annulus, muscle and marrow, and the
# intensities' peak moves; the edges' less so, though they follow noise more; their errors are
# nearly independent, so the average beats either. The intensities are compared by mutual
# information, which asks only that one visit's intensities predict the other's (a correlation
# would pull a tissue whose brightness changed onto what matches its old brightness); the
# edges by normalised correlation
EDGE_SIGMA_MM = 1.0
SECOND_ROUND_STEPS = 2  # either side of the first round's angle
MASK_MARGIN_MM = 3.0  # a vertebra's mask reaches this far beyond its label in the plane
# a refinement or search reads the images this far around a vertebra in the plane: beyond what
# a few millimetres and degrees of motion (and smoothing) can reach
CROP_MARGIN_MM = 20.0
# a vertebra's marrow: its label, this far inside its border in the sagittal plane, on slices
# holding at least this many voxels of it
MARROW_DEPTH_MM = 2.0
MARROW_MIN_VOXELS = 30
MATCH_ROUNDS, MATCH_SETTLED_MM = 3, 0.1
# adjacent vertebrae share a disc: between visits they turn about it (lateral bending) but
# hardly slide across it. So each vertebra but the first turns about its joint with the
# neighbour it starts from, and its left-right shift there is searched only this far (a free
# search about its own centre let a sacrum drift to a neighbour's match)
JOINT_SHEAR_MM = 1.0


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
    _central_difference_gradients(method)
    # the slab of thick sagittal slices around the spine barely pins the turns out of its plane:
    # free, they wandered 5-18 deg from the truth on the demo cohort; they keep their start
    # here and are searched for afterwards (``search_out_of_plane``)
    method.SetOptimizerWeights([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    # Relaxation 0.7 (not 0.5): with a randomly sampled, noisy metric, halving the step on every
    # direction change stopped some seeds early, 0.3 deg short in rotation.
    _step_descent(method, 2.0, 1e-3, iterations, 0.7, 1e-6)
    return method


def _step_descent(method, step_mm, min_step_mm, iterations, relaxation, tolerance) -> None:
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


def _central_difference_gradients(method: sitk.ImageRegistrationMethod) -> None:
    """Take the metric's image gradients by central differences at each sample (as ANTs
    does), not from SimpleITK's default gradient-image filter: with that filter the per-vertebra
    correlation's derivative pointed away from its optimum, and the refinement walked 2-4 mm
    off a vertebra it started on (the metric worsening from -0.92 to -0.32)."""
    method.SetMetricUseFixedImageGradientFilter(False)
    method.SetMetricUseMovingImageGradientFilter(False)


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
    fixed_dseg: str | Path | None = None,
    moving_dseg: str | Path | None = None,
    sampling_fraction: float = 0.25,
    iterations: int = 200,
    threads: int | None = None,
    seed: int = DEFAULT_SEED,
    shrink_per_level: Sequence[int] = PYRAMID_SHRINK,
    sigma_mm_per_level: Sequence[float] = PYRAMID_SIGMA_MM,
) -> dict:
    """Rigidly register moving (session 2) to fixed (session 1): the pitch (the turn in the
    sagittal plane) and the shift by gradient descent; with label maps, the turns out of the
    plane by exhaustive search across the spine's slices (``search_out_of_plane``). Each
    vertebra is refined afterwards (``register_levels``).

    Writes ``out_tfm`` (ITK Euler3DTransform, fixed-space LPS points -> moving space) and
    ``out_resampled`` (moving resampled onto the fixed grid, float32, fixed's NIfTI header).
    Reproducible for a given seed (single-threaded; more threads may change the last digits).
    With both sessions' label maps (``fixed_dseg``, ``moving_dseg``) the spines are first put
    on each other (``label_transform``: the fields of view of two visits may lie centimetres
    apart), only the spine and 15 mm around it drive the metric (the bowel and the pelvis move
    on their own), and the result is checked against the labels (``_checked_against_labels``).
    Returns facts for the JSON sidecar.
    """
    n_threads = set_itk_threads(threads)
    fixed = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
    fixed_mask = spine_mask(fixed_dseg, fixed, 15.0) if fixed_dseg else None
    centroids = (
        (_label_centroids(fixed_dseg), _label_centroids(moving_dseg))
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

    quality = {}
    if initial is not None:
        transform, quality = _checked_against_labels(transform, initial, *centroids)
        spine = _widened(sitk.ReadImage(str(fixed_dseg)) > 0, fixed, 3.0, _lateral_slices(fixed))
        transform, quality["OutOfPlane"] = search_out_of_plane(
            fixed, moving, spine, transform, _mask_centre(spine)
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
        **quality,
        "Threads": n_threads,
    }


# ---------------------------------------------------------------- from the label maps


def _label_centroids(dseg_path) -> dict[int, np.ndarray]:
    """LPS centroid of every vertebra and disc label of a label map."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(sitk.ReadImage(str(dseg_path)), sitk.sitkUInt16))
    return {label: np.array(stats.GetCentroid(label)) for label in stats.GetLabels()}


def label_transform(fixed: dict, moving: dict) -> sitk.Euler3DTransform | None:
    """Rigid transform (fixed -> moving) that best puts the centroids (``_label_centroids``) of
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


def _checked_against_labels(transform, initial, fixed: dict, moving: dict):
    """The image registration unless it put the labelled spines further apart than the labels'
    own fit did, by more than LABEL_SLACK_MM (it slid along the spine, which looks alike level
    after level): then the label fit, and the sidecar says so."""
    after = label_residual_mm(transform, fixed, moving)
    before = label_residual_mm(initial, fixed, moving)
    facts = {"LabelResidualMillimetres": after, "InitialLabelResidualMillimetres": before}
    if after > before + LABEL_SLACK_MM:
        facts["Fallback"] = "image registration moved away from the labels: label fit kept"
        return initial, facts
    return transform, facts


def spine_mask(dseg_path, reference: sitk.Image, margin_mm: float) -> sitk.Image | None:
    """The labelled spine widened by margin_mm in the sagittal plane and by two slices either
    way, on the reference grid (None if nothing is labelled)."""
    return _widened(sitk.ReadImage(str(dseg_path)) > 0, reference, margin_mm, slices=2)


def _widened(region: sitk.Image, reference: sitk.Image, margin_mm: float, slices: int):
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


# ---------------------------------------------------------------- per-level refinement


def vertebra_mask(dseg: sitk.Image, label: int, reference: sitk.Image, margin_mm=MASK_MARGIN_MM,
                  lateral_mm: float | None = None):  # fmt: skip
    """Mask (uint8, on the reference grid) of one vertebra for a masked registration: its label,
    widened by margin_mm in the sagittal plane (its endplates and walls, the edges that pin
    it, lie on the border) and by one slice either way, or across the slices within
    ``lateral_mm`` of its labelled ones."""
    slices = 1 if lateral_mm is None else _lateral_slices(reference, lateral_mm)
    return _widened(dseg == label, reference, margin_mm, slices=slices)


def _eroded_in_plane(mask: sitk.Image, depth_mm: float) -> sitk.Image:
    """The mask eroded by depth_mm in the sagittal plane (not across the thick slices)."""
    return sitk.BinaryErode(mask, _radius(mask, depth_mm, slices=0))


def _lateral_slices(reference: sitk.Image, lateral_mm: float = LATERAL_REACH_MM) -> int:
    """How many of the reference's thick slices reach lateral_mm (at least one)."""
    return max(1, int(round(lateral_mm / max(reference.GetSpacing()))))


def _chain_order(names: list[str], start: str) -> list[tuple[str, str | None]]:
    """Vertebrae outwards from ``start``, each with the neighbour it starts from."""
    index = names.index(start)
    order = [(start, None)]
    order += [(names[k], names[k + 1]) for k in range(index - 1, -1, -1)]
    order += [(names[k], names[k - 1]) for k in range(index + 1, len(names))]
    return order


def _recentred(transform: sitk.Euler3DTransform, centre_mm) -> sitk.Euler3DTransform:
    """The same rigid mapping with its rotation centre moved (T(x) = R (x - c) + c + t)."""
    moved = sitk.Euler3DTransform()
    moved.SetCenter(tuple(float(c) for c in centre_mm))
    moved.SetRotation(*transform.GetParameters()[:3])
    mapped = np.array(transform.TransformPoint(tuple(float(c) for c in centre_mm)))
    moved.SetTranslation(tuple(mapped - np.asarray(centre_mm, dtype=float)))
    return moved


def _crop_to(image: sitk.Image, region: sitk.Image, margin_mm: float, whole_slices=True):
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


def _on_mask(image: sitk.Image, mask: sitk.Image) -> sitk.Image:
    """``image`` on the mask's bounding box: all that a metric over the mask reads (an
    evaluation over a box with margins took 3.5 times as long: it visits every voxel)."""
    return _crop_to(image, mask, 0.0, whole_slices=False)


class _Cue(NamedTuple):
    """What a metric over a fixed mask reads, the fixed image and the mask on the mask's
    bounding box (``_on_mask``), and the metric (``_masked_correlation`` or
    ``_masked_mutual_information``)."""

    fixed: sitk.Image
    moving: sitk.Image
    mask: sitk.Image
    metric: Callable

    def value(self, transform: sitk.Transform) -> float:
        return self.metric(self.fixed, self.moving, self.mask, transform)


def _metric_images(fixed, moving, mask, metric=None) -> _Cue:
    return _Cue(_on_mask(fixed, mask), moving, _on_mask(mask, mask), metric or _masked_correlation)


def _touches_edge(mask: sitk.Image) -> bool:
    """Whether the mask reaches the image's in-plane border (the thick axis aside)."""
    array = sitk.GetArrayViewFromImage(mask)  # (k, j, i): numpy order is reversed
    thick = 2 - int(np.argmax(mask.GetSpacing()))
    edges = [np.take(array, index, axis=axis).any()
             for axis in range(3) if axis != thick for index in (0, -1)]  # fmt: skip
    return bool(any(edges))


def _cut(mask: sitk.Image, mapped: sitk.Image) -> bool:
    """Whether a vertebra is cut by either image's in-plane border: its mask in the fixed one,
    or where it lands in the moving one (``mapped``, ``_mapped_box``)."""
    return _touches_edge(mask) or _touches_edge(mapped)


def _mapped_box(mask: sitk.Image, transform: sitk.Transform, moving: sitk.Image) -> sitk.Image:
    """Where the mask lands in the moving image under the transform, as a mask on its grid."""
    return sitk.Resample(mask, moving, transform.GetInverse(), sitk.sitkNearestNeighbor, 0)


def _around_landing(moving: sitk.Image, mask: sitk.Image, transform) -> sitk.Image:
    """The part of the moving image around where the mask lands (``_mapped_box``), within
    CROP_MARGIN_MM in the plane."""
    return _crop_to(moving, _mapped_box(mask, transform, moving), CROP_MARGIN_MM)


def _mask_centre(mask: sitk.Image) -> np.ndarray:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return np.array(stats.GetCentroid(1))


def _grid(half_range: float, step: float) -> np.ndarray:
    return np.arange(-half_range, half_range + 1e-9, step)


def _turned(transform, centre_mm, roll_deg=0.0, yaw_deg=0.0, shift_mm=0.0):
    """The transform followed by a turn about the point it maps ``centre_mm`` to (about LPS y,
    anterior-posterior: roll; about LPS z, the long axis: yaw) and a left-right shift (LPS x)."""
    base = _recentred(transform, centre_mm)
    turn = sitk.Euler3DTransform()
    turn.SetRotation(0.0, math.radians(roll_deg), math.radians(yaw_deg))
    matrix = np.reshape(turn.GetMatrix(), (3, 3)) @ np.reshape(base.GetMatrix(), (3, 3))
    turned = sitk.Euler3DTransform(base)
    turned.SetMatrix(tuple(float(m) for m in matrix.ravel()))
    turned.SetTranslation(tuple(np.add(base.GetTranslation(), [shift_mm, 0.0, 0.0])))
    return turned


def _moved(transform, centre_mm, motion: dict, **more) -> sitk.Euler3DTransform:
    """``_turned`` by ``motion`` (roll_deg, yaw_deg, shift_mm), each plus ``more``'s."""
    return _turned(transform, centre_mm, **{k: v + more.get(k, 0.0) for k, v in motion.items()})


def _grid_search(cue: _Cue, build, angles, shifts) -> float | None:
    """Where the cue's metric of ``build(angle, shift)`` is least on the grid angles x shifts:
    the angle (``refined_minimum`` of each angle's least over the shifts, itself refined
    between them). The same samples throughout: where the moving image ends, samples falling
    off it would make the metric jump by more than the motion changes it."""
    corners = [build(a, s) for a in (angles[0], 0.0, angles[-1]) for s in (shifts[0], shifts[-1])]
    cue = cue._replace(mask=cue.mask & _inside(cue.moving, cue.mask, corners))
    if not sitk.GetArrayViewFromImage(cue.mask).any():
        return None  # none of it lands in the moving image at every corner
    least = [refined_minimum_value([cue.value(build(a, s)) for s in shifts]) for a in angles]
    return refined_minimum(angles, least)


def _best_turn(
    cue, transform, centre_mm, turn: dict, axis: str, half_range_deg, step_deg, shift_range_mm
):
    """The turn about one axis (``turn``'s key ``axis``: roll_deg or yaw_deg), on top of
    ``turn`` (and its shift_mm), where the cue's metric is least, each angle at its best
    left-right shift (within +-shift_range_mm of turn's, on a COARSE_LEFT_RIGHT_STEP_MM grid);
    0 where it does not peak within the range."""

    def build(angle, shift_mm):
        return _moved(transform, centre_mm, turn, **{axis: angle, "shift_mm": shift_mm})

    shifts = _grid(shift_range_mm, COARSE_LEFT_RIGHT_STEP_MM)
    return _grid_search(cue, build, _grid(half_range_deg, step_deg), shifts) or 0.0


def search_out_of_plane(
    fixed: sitk.Image,
    moving: sitk.Image,
    wide_mask: sitk.Image,
    transform,
    centre_mm,
    shift_range_mm: float = LEFT_RIGHT_SEARCH_MM,
) -> tuple[sitk.Euler3DTransform, dict]:
    """The motion out of the sagittal plane of what ``wide_mask`` covers (a vertebra across its
    whole width, or the whole labelled spine): the mean of the motions where, over it, the
    intensities' mutual information and their edges' (EDGE_SIGMA_MM) normalised correlation
    peak, each found alone (``_peak_motion``), turning about ``centre_mm``: its yaw and its roll
    (``_best_turn``; a roll left out moves the yaw's peak and the other way round), then its
    left-right shift to a fraction of the LEFT_RIGHT_STEP_MM grid (parabola through the peak);
    all twice, the second time within SECOND_ROUND_STEPS and FINE_LEFT_RIGHT_MM of the first.
    Exhaustive searches, because a few thick slices give a gradient too little to go on. A
    peak on the edge of a range is no peak (what drives the correlation is not the bone): that
    motion keeps its start. The shift is searched over +-``shift_range_mm``. Returns the
    transform and what was applied, and per cue what it found (shift None: no peak; the mean
    is of the cues that peak)."""
    # the mutual information reads every voxel of the moving image for its range (on a whole
    # image, 1.7 times as long)
    moving = _around_landing(moving, wide_mask, transform)
    cues = {
        "Intensity": _metric_images(fixed, moving, wide_mask, _masked_mutual_information),
        "Edges": _metric_images(_edges(fixed), _edges(moving), wide_mask),
    }
    found = {name: _peak_motion(cue, transform, centre_mm, shift_range_mm)
             for name, cue in cues.items()}  # fmt: skip
    turn = {axis: float(np.mean([t[axis] for t, _ in found.values()]))
            for axis in ("roll_deg", "yaw_deg")}  # fmt: skip
    peaks = [shift for _, shift in found.values() if shift is not None]
    shift = float(np.mean(peaks)) if peaks else None
    facts = {**_motion_facts(turn, shift),
             "PerCue": {cue: _motion_facts(*motion) for cue, motion in found.items()}}  # fmt: skip
    return _turned(transform, centre_mm, **turn, shift_mm=shift or 0.0), facts


def _motion_facts(turn: dict, shift_mm: float | None) -> dict:
    return {"YawDegrees": turn["yaw_deg"], "RollDegrees": turn["roll_deg"],
            "LeftRightShiftMillimetres": shift_mm}  # fmt: skip


def _edges(image: sitk.Image) -> sitk.Image:
    return sitk.GradientMagnitudeRecursiveGaussian(image, EDGE_SIGMA_MM)


def _peak_motion(cue, transform, centre_mm, shift_range_mm) -> tuple[dict, float | None]:
    """``search_out_of_plane``'s searches with one cue: the turn (roll_deg, yaw_deg) and the
    left-right shift where its metric is least. Twice: the second round within
    SECOND_ROUND_STEPS of the first's angles and FINE_LEFT_RIGHT_MM of its shift, so that its
    metric reads every voxel that lands inside the moving image over that narrower reach
    (``_grid_search``). The shift is None where neither round finds a peak."""
    motion = {"roll_deg": 0.0, "yaw_deg": 0.0, "shift_mm": 0.0}
    reach_mm, peaked = shift_range_mm, False
    for second_round in (False, True):
        for axis, half_range_deg, step_deg in (
            ("yaw_deg", YAW_SEARCH_DEG, YAW_STEP_DEG),
            ("roll_deg", ROLL_SEARCH_DEG, ROLL_STEP_DEG),
        ):
            half_range_deg = SECOND_ROUND_STEPS * step_deg if second_round else half_range_deg
            motion[axis] += _best_turn(
                cue, transform, centre_mm, motion, axis, half_range_deg, step_deg, reach_mm
            )
        shift = _grid_search(
            cue, lambda a, _: _moved(transform, centre_mm, motion, shift_mm=a),
            _grid(reach_mm, LEFT_RIGHT_STEP_MM), np.zeros(1),
        )  # fmt: skip
        if shift is not None:
            motion["shift_mm"] += shift
            reach_mm, peaked = min(reach_mm, FINE_LEFT_RIGHT_MM), True
    turn = {axis: motion[axis] for axis in ("roll_deg", "yaw_deg")}
    return turn, motion["shift_mm"] if peaked else None


def _inside(moving: sitk.Image, reference: sitk.Image, transforms) -> sitk.Image:
    """Mask on the reference grid of the points that every transform maps inside the moving
    image, its outermost voxels left out (linear interpolation needs a neighbour there)."""
    inner = np.zeros(sitk.GetArrayViewFromImage(moving).shape, np.uint8)
    inner[1:-1, 1:-1, 1:-1] = 1
    inner_image = sitk.GetImageFromArray(inner)
    inner_image.CopyInformation(moving)
    masks = [sitk.Resample(inner_image, reference, t, sitk.sitkNearestNeighbor, 0)
             for t in transforms]  # fmt: skip
    return functools.reduce(operator.and_, masks)


def register_vertebra(
    fixed: sitk.Image,
    moving: sitk.Image,
    mask: sitk.Image,
    initial: sitk.Euler3DTransform,
    iterations: int = 200,
) -> tuple[sitk.Euler3DTransform, dict]:
    """Rigid refinement of one vertebra in its sagittal plane, masked by it.

    Same sequence at both sessions: normalised correlation over every voxel of the mask, on
    the images cropped around it. Only the motion a sagittal slab pins down is free: rotation
    about the left-right axis (flexion, the articulation between levels) and the shifts in the
    sagittal plane; the rest keeps its start (``search_out_of_plane`` finds it). A vertebra
    cut by the edge of either image keeps the rotation too: a part of a body holds too little
    to turn it by."""
    transform = _recentred(initial, _mask_centre(mask))
    cut = _cut(mask, _mapped_box(mask, transform, moving))
    fixed, mask = _crop_to(fixed, mask, CROP_MARGIN_MM), _crop_to(mask, mask, CROP_MARGIN_MM)
    moving = _around_landing(moving, mask, transform)
    method = _correlation_method(mask)
    _step_descent(method, 0.5, 1e-4, iterations, 0.6, 1e-8)
    # LPS x is (nearly) the slice normal of a sagittal series: the slab cannot pin a shift
    # along it either (the body looks alike a slice to either side), so it keeps the whole-field
    # value too
    method.SetOptimizerWeights([0.0 if cut else 1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    method.SetShrinkFactorsPerLevel([1, 1, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return transform, {
        "Iterations": int(method.GetOptimizerIteration()),
        "MetricValue": float(method.GetMetricValue()),
        "StopCondition": method.GetOptimizerStopConditionDescription(),
        "MaskVoxels": int(sitk.GetArrayViewFromImage(mask).sum()),
        "CutByFieldOfView": cut,
        **_rigid_parameters(transform),
    }


def register_levels(
    fixed_path: str | Path,
    moving_path: str | Path,
    fixed_dseg: str | Path,
    whole_tfm: str | Path,
    out_tfms: dict[str, str | Path],
    labels: dict[str, int],
    moving_dseg: str | Path | None = None,
    threads: int | None = None,
) -> dict:
    """Per-vertebra rigid refinement for every vertebra in out_tfms (listed cranial to caudal):
    its motion in the sagittal plane refined (``register_vertebra``), then its motion out of
    the plane searched across its whole width (``search_out_of_plane``), then the sagittal
    refinement once more (``_refined_vertebra``).

    The first vertebra, the one nearest the middle that both sessions show whole
    (``_chain_start``), starts from the whole-field transform, each further one from its
    refined neighbour's (adjacent levels move little relative to each other; the sacrum may
    tilt by degrees relative to the whole field), both as it is and shifted so that the
    vertebra's label centroids of the two sessions meet (``_starts``); the start that ends
    best-matching is kept. Out of the plane, each further one turns about its joint with that
    neighbour and keeps its left-right place there within JOINT_SHEAR_MM. A refinement that
    runs further than MAX_REFINE_SHIFT_MM / MAX_REFINE_ROTATION_DEG in the sagittal plane is
    dropped for its start. A vertebra not labelled in the fixed session, or not inside the
    moving image (``_lands_inside``), keeps its start, and says so. Returns facts per vertebra
    for the sidecar."""
    set_itk_threads(threads)
    fixed = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
    whole = sitk.Euler3DTransform(sitk.ReadTransform(str(whole_tfm)))
    fixed_centroids = _label_centroids(fixed_dseg)
    centroids = (fixed_centroids, _label_centroids(moving_dseg)) if moving_dseg else ({}, {})
    fixed_labels = sitk.ReadImage(str(fixed_dseg))
    names = list(out_tfms)
    masks = {name: vertebra_mask(fixed_labels, labels[name], fixed) for name in names}
    refined: dict[str, sitk.Euler3DTransform] = {}
    facts = {}
    for name, neighbour in _chain_order(names, _chain_start(masks, whole, moving)):
        starts = _starts(refined[neighbour] if neighbour else whole, labels[name], *centroids)
        initial = starts[-1]
        mask = masks[name]
        if mask is None:
            refined[name], facts[name] = (
                initial,
                {"Refined": False, "Note": "not labelled at ses-1"},
            )
        elif not _lands_inside(_mapped_box(mask, initial, moving)):
            refined[name] = initial
            facts[name] = {"Refined": False, "Note": "outside the ses-2 field of view"}
        else:
            wide = vertebra_mask(fixed_labels, labels[name], fixed, lateral_mm=LATERAL_REACH_MM)
            marrow = _eroded_in_plane(wide, MASK_MARGIN_MM + MARROW_DEPTH_MM)
            joint = _joint(fixed_centroids, labels[name], labels.get(neighbour))
            refined[name], facts[name] = _refined_vertebra(
                fixed, moving, mask, (wide, marrow), starts, joint
            )
            facts[name]["TurnedAboutJointWith"] = neighbour if joint is not None else None
        Path(out_tfms[name]).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteTransform(refined[name], str(out_tfms[name]))
    return facts


def _chain_start(masks: dict, whole: sitk.Transform, moving: sitk.Image) -> str:
    """The vertebra the chain starts from, on the whole-field transform alone: of those whole
    in both sessions (labelled at ses-1, cut by neither field of view where the whole field
    maps them), the one nearest the middle of the list; the middle one if none is. A part of a
    vertebra at the edge of the image holds too little to find its turn out of the plane by,
    and every other vertebra would follow it (its search wandered 5 mm left-right)."""
    names = list(masks)
    middle = len(names) // 2
    whole_ones = [k for k, name in enumerate(names) if _seen_whole(masks[name], whole, moving)]
    return names[min(whole_ones, key=lambda k: abs(k - middle), default=middle)]


def _seen_whole(mask: sitk.Image | None, transform: sitk.Transform, moving: sitk.Image) -> bool:
    """Whether the vertebra ``mask`` covers lies inside the fixed image and, mapped by
    ``transform``, inside the moving one, clear of their in-plane borders."""
    if mask is None:
        return False
    mapped = _mapped_box(mask, transform, moving)
    return _lands_inside(mapped) and not _cut(mask, mapped)


def _lands_inside(mapped: sitk.Image) -> bool:
    """Whether a mask mapped onto the moving image (``_mapped_box``) holds any of its voxels
    off the outermost ones: on those alone, linear interpolation finds no neighbour and a
    metric no sample (a vertebra beyond the field of view whose margin reaches its edge)."""
    return bool(sitk.GetArrayViewFromImage(mapped)[1:-1, 1:-1, 1:-1].any())


def _joint(centroids: dict, label: int, neighbour: int | None) -> np.ndarray | None:
    """Where a vertebra meets its neighbour, near enough for a pivot (a centroid off by 10 mm
    along the spine moves what a 1 deg turn about it leaves by 0.2 mm): midway between their
    label centroids. None without a neighbour or either label."""
    if neighbour not in centroids or label not in centroids:
        return None
    return (centroids[label] + centroids[neighbour]) / 2


def _refined_vertebra(fixed, moving, mask, wide_masks, starts, joint=None):
    """One vertebra's transform: each start refined in the sagittal plane (``_bounded``) and
    the best-matching kept; its motion out of the plane then searched across the vertebra's
    whole width (``_matched_out_of_plane``) and its sagittal motion refined once more from there.
    The in-plane step comes first: a vertebra not yet aligned in its plane moves the
    correlation's out-of-plane peaks by millimetres and degrees. ``wide_masks``: the vertebra
    across its width with its surroundings, and its marrow alone (``_slices_matched``);
    ``joint``: where it meets the neighbour it started from (``_matched_out_of_plane``)."""
    centre = _mask_centre(mask)
    results = [_bounded(register_vertebra(fixed, moving, mask, s), s, centre) for s in starts]
    cue = _metric_images(fixed, moving, mask)
    transform, _ = min(results, key=lambda r: cue.value(r[0]))
    transform, out_of_plane = _matched_out_of_plane(
        fixed, moving, *wide_masks, transform, centre, joint
    )
    transform, facts = _bounded(
        register_vertebra(fixed, moving, mask, transform), transform, centre
    )
    return transform, {**facts, **out_of_plane, "Starts": len(starts)}


def _matched_out_of_plane(fixed, moving, wide, marrow, transform, centre_mm, joint=None):
    """``search_out_of_plane`` from ``transform``, the fixed slices matched to the moving ones
    (``_slices_matched``) where the last round put the vertebra, until a round moves it less
    than MATCH_SETTLED_MM (at most MATCH_ROUNDS): matched where the vertebra is still off,
    the slices' brightness takes up part of what sets it apart (marrow that is not uniform).
    Turning about its centre, the left-right shift searched over +-LEFT_RIGHT_SEARCH_MM; given
    a ``joint`` with a neighbour (which the start transform has placed), turning about that,
    the shift there over +-JOINT_SHEAR_MM."""
    found, facts = transform, {}
    centre = tuple(float(c) for c in centre_mm)
    pivot = (centre_mm, LEFT_RIGHT_SEARCH_MM) if joint is None else (joint, JOINT_SHEAR_MM)
    for rounds in range(1, MATCH_ROUNDS + 1):
        matched = _slices_matched(fixed, moving, marrow, found)
        previous = found
        found, facts = search_out_of_plane(matched, moving, wide, transform, *pivot)
        facts["SliceMatchRounds"] = rounds
        moved = np.subtract(found.TransformPoint(centre), previous.TransformPoint(centre))
        if np.linalg.norm(moved) < MATCH_SETTLED_MM:
            break
    return found, facts


def _slices_matched(fixed, moving, marrow, transform) -> sitk.Image:
    """The fixed image, each slice scaled so that the marrow has the brightness it has in the
    moving image (mapped by ``transform``) there: a differential bias correction, slice by
    slice. The two sessions' bias corrections leave fields that differ by 5-25 % across a
    vertebra's slices; the left-right search, where the slices look alike but for that,
    followed them by up to a millimetre."""
    mapped = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0)
    thick = 2 - int(np.argmax(fixed.GetSpacing()))  # numpy axes are reversed
    f, m, inside = (np.moveaxis(sitk.GetArrayFromImage(x), thick, 0)
                    for x in (fixed, mapped, marrow))  # fmt: skip
    inside = inside > 0
    seen = [k for k in range(len(f)) if inside[k].sum() >= MARROW_MIN_VOXELS]
    if not seen:
        return fixed
    ratios = [np.median(f[k][inside[k]]) / max(np.median(m[k][inside[k]]), 1e-6)
              for k in seen]  # fmt: skip
    scale = np.interp(np.arange(len(f)), seen, ratios)  # beyond the marrow: its last slice's
    matched = sitk.GetImageFromArray(np.moveaxis(f / scale[:, None, None], 0, thick), False)
    matched = sitk.Cast(matched, fixed.GetPixelID())
    matched.CopyInformation(fixed)
    return matched


def _correlation_method(mask: sitk.Image) -> sitk.ImageRegistrationMethod:
    """Normalised correlation over every voxel of the fixed mask (``_over_mask``)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    return _over_mask(method, mask)


def _over_mask(method: sitk.ImageRegistrationMethod, mask: sitk.Image):
    """The method's metric over every voxel of the fixed mask, with central-difference
    gradients (no gradient image to build either: for a metric's value alone, that took 5
    times as long as the value)."""
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetMetricFixedMask(mask)
    _central_difference_gradients(method)
    return method


def _masked_correlation(fixed, moving, mask, transform) -> float:
    """Minus the squared normalised correlation of the images over the fixed mask."""
    return _evaluated(_correlation_method(mask), fixed, moving, transform)


def _masked_mutual_information(fixed, moving, mask, transform) -> float:
    """Minus the Mattes mutual information (HISTOGRAM_BINS bins) of the images over every
    voxel of the fixed mask."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    return _evaluated(_over_mask(method, mask), fixed, moving, transform)


def _evaluated(method: sitk.ImageRegistrationMethod, fixed, moving, transform) -> float:
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform)
    return method.MetricEvaluate(fixed, moving)


def _starts(transform: sitk.Euler3DTransform, label: int, fixed: dict, moving: dict):
    """Where a vertebra's refinement starts: its neighbour's transform, and that transform
    shifted so that the vertebra's label centroids meet (``_onto_centroids``). Either can be
    millimetres off: the neighbour's by the articulation between them, the centroids' where
    one session's label holds more of the vertebra (cut by the field of view, or a sacrum
    segmented further down)."""
    if label not in fixed or label not in moving:
        return [sitk.Euler3DTransform(transform)]
    return [sitk.Euler3DTransform(transform), _onto_centroids(transform, label, fixed, moving)]


def _onto_centroids(transform: sitk.Euler3DTransform, label: int, fixed: dict, moving: dict):
    """The transform, shifted in the sagittal plane so that the fixed centroid of ``label``
    lands on the moving one (left-right stays: labels on a few thick slices do not fix it)."""
    target = np.array(moving[label], dtype=float)
    target[0] = transform.TransformPoint(tuple(fixed[label]))[0]  # LPS x: left-right
    shifted = _recentred(transform, fixed[label])
    shifted.SetTranslation(tuple(target - fixed[label]))
    return shifted


def _bounded(result, initial: sitk.Euler3DTransform, centre_mm: np.ndarray):
    """A refinement's result, or its start where it ran too far in the sagittal plane
    (``register_levels``)."""
    transform, facts = result
    moved = np.subtract(
        transform.TransformPoint(tuple(centre_mm)), initial.TransformPoint(tuple(centre_mm))
    )
    shift = np.linalg.norm(moved[1:])  # LPS x, left-right, is the slab's normal
    turn = math.degrees(np.max(np.abs(np.subtract(transform.GetParameters()[:3],
                                                  initial.GetParameters()[:3]))))  # fmt: skip
    facts.update(
        Refined=True, RefinementShiftMillimetres=float(shift), RefinementRotationDegrees=turn
    )
    if shift > MAX_REFINE_SHIFT_MM or turn > MAX_REFINE_ROTATION_DEG:
        facts.update(
            Refined=False, Note="refinement ran away (a neighbour looks alike): start kept"
        )
        return _recentred(initial, centre_mm), facts
    return transform, facts
