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

from spineflow.gridsearch import refined_minimum
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
# left-right, a vertebra is pinned by its lateral walls and pedicles, ~20-25 mm either side of
# the midline: its mask for the left-right search reaches that far across the slices; the label
# fit's left-right shift is good to a slice (3 mm) or two, searched on a 0.5 mm grid
LATERAL_REACH_MM = 25.0
LEFT_RIGHT_SEARCH_MM = 6.0
LEFT_RIGHT_STEP_MM = 0.5


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
    """Rigidly register moving (session 2) to fixed (session 1).

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
    the structures labelled in both sessions on each other (least squares; they trace the
    curved spine, so pitch and shift are well defined), or their mean shift when fewer than
    three are shared."""
    common = sorted(set(fixed) & set(moving))
    if not common:
        return None
    fixed_points = np.array([fixed[label] for label in common])
    moving_points = np.array([moving[label] for label in common])
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(fixed_points.mean(axis=0)))
    if len(common) < 3:
        transform.SetTranslation(tuple(moving_points.mean(axis=0) - fixed_points.mean(axis=0)))
        return transform
    fitted = sitk.LandmarkBasedTransformInitializer(
        sitk.VersorRigid3DTransform(),
        [float(c) for c in fixed_points.ravel()],
        [float(c) for c in moving_points.ravel()],
    )
    transform.SetMatrix(fitted.GetMatrix())
    centre = fixed_points.mean(axis=0)
    transform.SetTranslation(tuple(np.array(fitted.TransformPoint(tuple(centre))) - centre))
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
    radius = [max(1, int(round(margin_mm / s))) for s in region.GetSpacing()]
    radius[int(np.argmax(region.GetSpacing()))] = slices
    mask = sitk.BinaryDilate(region, radius)
    return sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


# ---------------------------------------------------------------- per-level refinement


def vertebra_mask(dseg: sitk.Image, label: int, reference: sitk.Image, margin_mm=3.0,
                  lateral_mm: float | None = None):  # fmt: skip
    """Mask (uint8, on the reference grid) of one vertebra for a masked registration: its label,
    widened by margin_mm in the sagittal plane (its endplates and walls, the edges that pin
    it, lie on the border) and by one slice either way, or across the slices within
    ``lateral_mm`` of its labelled ones."""
    thick_mm = max(reference.GetSpacing())
    slices = 1 if lateral_mm is None else max(1, int(round(lateral_mm / thick_mm)))
    return _widened(dseg == label, reference, margin_mm, slices=slices)


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


def _crop_to(image: sitk.Image, region: sitk.Image, margin_mm: float) -> sitk.Image:
    """The part of ``image`` around the non-zero voxels of ``region`` (same grid), with an
    in-plane margin; all slices kept (they are few and thick)."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(region > 0, sitk.sitkUInt8))
    if 1 not in stats.GetLabels():
        return image
    box = stats.GetBoundingBox(1)
    dims = image.GetDimension()
    start, size = list(box[:dims]), list(box[dims:])
    thick = int(np.argmax(image.GetSpacing()))
    for axis in range(dims):
        if axis == thick:
            start[axis], size[axis] = 0, image.GetSize()[axis]
            continue
        pad = int(np.ceil(margin_mm / image.GetSpacing()[axis]))
        low = max(0, start[axis] - pad)
        high = min(image.GetSize()[axis], start[axis] + size[axis] + pad)
        start[axis], size[axis] = low, high - low
    return sitk.RegionOfInterest(image, size, start)


def _touches_edge(mask: sitk.Image) -> bool:
    """Whether the mask reaches the image's in-plane border (the thick axis aside)."""
    array = sitk.GetArrayViewFromImage(mask)  # (k, j, i): numpy order is reversed
    thick = 2 - int(np.argmax(mask.GetSpacing()))
    edges = [np.take(array, index, axis=axis).any()
             for axis in range(3) if axis != thick for index in (0, -1)]  # fmt: skip
    return bool(any(edges))


def _mapped_box(mask: sitk.Image, transform: sitk.Transform, moving: sitk.Image) -> sitk.Image:
    """Where the mask lands in the moving image under the transform, as a mask on its grid."""
    return sitk.Resample(mask, moving, transform.GetInverse(), sitk.sitkNearestNeighbor, 0)


def _mask_centre(mask: sitk.Image) -> np.ndarray:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return np.array(stats.GetCentroid(1))


def search_left_right(
    fixed: sitk.Image, moving: sitk.Image, wide_mask: sitk.Image, transform: sitk.Euler3DTransform
) -> float | None:
    """Set the transform's left-right shift (LPS x, in place) where the normalised correlation
    over ``wide_mask`` (the vertebra across its whole width) peaks within LEFT_RIGHT_SEARCH_MM
    of its start, to a fraction of the LEFT_RIGHT_STEP_MM grid (parabola through the peak): an
    exhaustive search, because a few thick slices give the gradient too little to go on. A
    peak on the edge of the range is no peak (the vertebra is not yet aligned in its plane, or
    what drives the correlation is not it): the shift stays. Returns the shift applied (mm) or
    None."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetMetricFixedMask(_crop_to(wide_mask, wide_mask, 20.0))
    method.SetInterpolator(sitk.sitkLinear)
    fixed = _crop_to(fixed, wide_mask, 20.0)
    offsets = np.arange(-LEFT_RIGHT_SEARCH_MM, LEFT_RIGHT_SEARCH_MM + 1e-9, LEFT_RIGHT_STEP_MM)
    start = np.array(transform.GetTranslation())
    values = []
    for offset in offsets:
        trial = sitk.Euler3DTransform(transform)
        trial.SetTranslation(tuple(start + [offset, 0.0, 0.0]))
        method.SetInitialTransform(trial)
        values.append(method.MetricEvaluate(fixed, moving))  # minus the squared correlation
    shift = refined_minimum(offsets, values)
    if shift is not None:
        transform.SetTranslation(tuple(start + [shift, 0.0, 0.0]))
    return shift


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
    sagittal plane; the rest keeps its start (left-right: ``search_left_right``). A vertebra
    cut by the edge of either image keeps the rotation too: a part of a body holds too little
    to turn it by."""
    transform = _recentred(initial, _mask_centre(mask))
    cut = _touches_edge(mask) or _touches_edge(_mapped_box(mask, transform, moving))
    fixed, mask = _crop_to(fixed, mask, 20.0), _crop_to(mask, mask, 20.0)
    moving = _crop_to(moving, _mapped_box(mask, transform, moving), 20.0)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetMetricFixedMask(mask)
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
    its left-right shift searched over its whole width (``search_left_right``), then its motion
    in the sagittal plane refined (``register_vertebra``).

    The middle vertebra starts from the whole-field transform, each further one from its
    refined neighbour's (adjacent levels move little relative to each other; the sacrum may
    tilt by degrees relative to the whole field), shifted so that the vertebra's label
    centroids of the two sessions meet (``moving_dseg``). A refinement that runs further than
    MAX_REFINE_SHIFT_MM / MAX_REFINE_ROTATION_DEG in the sagittal plane is dropped for its
    start (with the left-right shift found). A
    vertebra not labelled in the fixed session keeps its neighbour's transform, and says so.
    Returns facts per vertebra for the sidecar."""
    set_itk_threads(threads)
    fixed = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
    whole = sitk.Euler3DTransform(sitk.ReadTransform(str(whole_tfm)))
    centroids = (
        (_label_centroids(fixed_dseg), _label_centroids(moving_dseg)) if moving_dseg else ({}, {})
    )
    fixed_labels = sitk.ReadImage(str(fixed_dseg))
    names = list(out_tfms)
    refined: dict[str, sitk.Euler3DTransform] = {}
    facts = {}
    for name, neighbour in _chain_order(names, names[len(names) // 2]):
        initial = _onto_centroids(refined[neighbour] if neighbour else whole, labels[name],
                                  *centroids)  # fmt: skip
        mask = vertebra_mask(fixed_labels, labels[name], fixed)
        if mask is None:
            refined[name], facts[name] = (
                initial,
                {"Refined": False, "Note": "not labelled at ses-1"},
            )
        elif not sitk.GetArrayViewFromImage(_mapped_box(mask, initial, moving)).any():
            refined[name] = initial
            facts[name] = {"Refined": False, "Note": "outside the ses-2 field of view"}
        else:
            wide = vertebra_mask(fixed_labels, labels[name], fixed, lateral_mm=LATERAL_REACH_MM)
            left_right = search_left_right(fixed, moving, wide, initial)
            refined[name], facts[name] = _bounded(
                register_vertebra(fixed, moving, mask, initial), initial, _mask_centre(mask)
            )
            facts[name]["LeftRightShiftMillimetres"] = left_right  # None: no peak in range
        Path(out_tfms[name]).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteTransform(refined[name], str(out_tfms[name]))
    return facts


def _onto_centroids(transform: sitk.Euler3DTransform, label: int, fixed: dict, moving: dict):
    """The transform, shifted in the sagittal plane so that the fixed centroid of ``label``
    lands on the moving one (left-right stays: labels on a few thick slices do not fix it)."""
    if label not in fixed or label not in moving:
        return sitk.Euler3DTransform(transform)
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
