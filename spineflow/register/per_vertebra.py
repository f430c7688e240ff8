"""Each vertebra registered on its own: a chain from the best-seen one, each start checked against
the labels, a masked refinement bounded in shift and turn (docs/methods/registration.md)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from spineflow.core.itk import set_itk_threads
from spineflow.register.masks import (
    around_landing,
    crop_to,
    cut_by_border,
    eroded_in_plane,
    mapped_box,
    mask_centre,
    recentred_transform,
    vertebra_mask,
)
from spineflow.register.metric import correlation_method
from spineflow.register.out_of_plane import metric_images, search_out_of_plane
from spineflow.register.settings import DEFAULTS, RegisterSettings
from spineflow.register.whole_field import label_centroids, rigid_parameters, step_descent


def _chain_order(names: list[str], start: str) -> list[tuple[str, str | None]]:
    """Vertebrae outwards from ``start``, each with the neighbour it starts from."""
    index = names.index(start)
    order = [(start, None)]
    order += [(names[k], names[k + 1]) for k in range(index - 1, -1, -1)]
    order += [(names[k], names[k - 1]) for k in range(index + 1, len(names))]
    return order


def register_vertebra(
    fixed: sitk.Image,
    moving: sitk.Image,
    mask: sitk.Image,
    initial: sitk.Euler3DTransform,
    *,
    settings: RegisterSettings = DEFAULTS,
) -> tuple[sitk.Euler3DTransform, dict]:
    """Rigid refinement of one vertebra in its sagittal plane, masked by it.

    Same sequence at both sessions: normalised correlation over every voxel of the mask, on
    the images cropped around it. Only the motion a sagittal slab pins down is free: rotation
    about the left-right axis (flexion, the articulation between levels) and the shifts in the
    sagittal plane; the rest keeps its start (``search_out_of_plane`` finds it). A vertebra
    cut by the edge of either image keeps the rotation too: a part of a body holds too little
    to turn it by."""
    transform = recentred_transform(initial, mask_centre(mask))
    cut = cut_by_border(mask, mapped_box(mask, transform, moving))
    fixed, mask = (
        crop_to(fixed, mask, settings.crop_margin_mm),
        crop_to(mask, mask, settings.crop_margin_mm),
    )
    moving = around_landing(moving, mask, transform, settings=settings)
    method = correlation_method(mask)
    step_descent(
        method,
        settings.vertebra_step_mm,
        settings.vertebra_min_step_mm,
        settings.vertebra_iterations,
        settings.vertebra_relaxation,
        settings.vertebra_gradient_tolerance,
    )
    # LPS x is (nearly) the slice normal of a sagittal series: the slab cannot pin a shift
    # along it either (the body looks alike a slice to either side), so it keeps the whole-field
    # value too
    method.SetOptimizerWeights([0.0 if cut else 1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    method.SetShrinkFactorsPerLevel([1, 1, 1])
    method.SetSmoothingSigmasPerLevel(list(settings.vertebra_sigma_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return transform, {
        "Iterations": int(method.GetOptimizerIteration()),
        "MetricValue": float(method.GetMetricValue()),
        "StopCondition": method.GetOptimizerStopConditionDescription(),
        "MaskVoxels": int(sitk.GetArrayViewFromImage(mask).sum()),
        "CutByFieldOfView": cut,
        **rigid_parameters(transform),
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
    *,
    settings: RegisterSettings = DEFAULTS,
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
    neighbour and keeps its left-right place there within ``joint_shear_mm``. A refinement that
    runs further than ``max_refine_shift_mm`` / ``max_refine_rotation_deg`` in the sagittal plane is
    dropped for its start. A vertebra not labelled in the fixed session, or not inside the
    moving image (``_lands_inside``), keeps its start, and says so. Returns facts per vertebra
    for the sidecar."""
    set_itk_threads(threads)
    fixed = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
    whole = sitk.Euler3DTransform(sitk.ReadTransform(str(whole_tfm)))
    fixed_centroids = label_centroids(fixed_dseg)
    centroids = (fixed_centroids, label_centroids(moving_dseg)) if moving_dseg else ({}, {})
    fixed_labels = sitk.ReadImage(str(fixed_dseg))
    names = list(out_tfms)
    masks = {
        name: vertebra_mask(fixed_labels, labels[name], fixed, settings.mask_margin_mm)
        for name in names
    }
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
        elif not _lands_inside(mapped_box(mask, initial, moving)):
            refined[name] = initial
            facts[name] = {"Refined": False, "Note": "outside the ses-2 field of view"}
        else:
            wide = vertebra_mask(
                fixed_labels,
                labels[name],
                fixed,
                settings.mask_margin_mm,
                settings.lateral_reach_mm,
            )
            marrow = eroded_in_plane(wide, settings.mask_margin_mm + settings.marrow_depth_mm)
            joint = _joint(fixed_centroids, labels[name], labels.get(neighbour))
            refined[name], facts[name] = _refined_vertebra(
                fixed, moving, mask, (wide, marrow), starts, joint, settings=settings
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
    mapped = mapped_box(mask, transform, moving)
    return _lands_inside(mapped) and not cut_by_border(mask, mapped)


def _lands_inside(mapped: sitk.Image) -> bool:
    """Whether a mask mapped onto the moving image (``mapped_box``) holds any of its voxels
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


def _refined_vertebra(
    fixed, moving, mask, wide_masks, starts, joint=None, *, settings: RegisterSettings
):
    """One vertebra's transform: each start refined in the sagittal plane (``_bounded``) and
    the best-matching kept; its motion out of the plane then searched across the vertebra's
    whole width (``_matched_out_of_plane``) and its sagittal motion refined once more from there.
    The in-plane step comes first: a vertebra not yet aligned in its plane moves the
    correlation's out-of-plane peaks by millimetres and degrees. ``wide_masks``: the vertebra
    across its width with its surroundings, and its marrow alone (``_slices_matched``);
    ``joint``: where it meets the neighbour it started from (``_matched_out_of_plane``)."""
    centre = mask_centre(mask)
    results = [
        _bounded(
            register_vertebra(fixed, moving, mask, s, settings=settings),
            s,
            centre,
            settings=settings,
        )
        for s in starts
    ]
    cue = metric_images(fixed, moving, mask)
    transform, _ = min(results, key=lambda r: cue.value(r[0]))
    transform, out_of_plane = _matched_out_of_plane(
        fixed, moving, *wide_masks, transform, centre, joint, settings=settings
    )
    transform, facts = _bounded(
        register_vertebra(fixed, moving, mask, transform, settings=settings),
        transform,
        centre,
        settings=settings,
    )
    return transform, {**facts, **out_of_plane, "Starts": len(starts)}


def _matched_out_of_plane(
    fixed, moving, wide, marrow, transform, centre_mm, joint=None, *, settings: RegisterSettings
):
    """``search_out_of_plane`` from ``transform``, the fixed slices matched to the moving ones
    (``_slices_matched``) where the last round put the vertebra, until a round moves it less
    than ``match_settled_mm`` (at most ``match_rounds``): matched where the vertebra is still off,
    the slices' brightness takes up part of what sets it apart (marrow that is not uniform).
    Turning about its centre, the left-right shift searched over +-``left_right_search_mm``; given
    a ``joint`` with a neighbour (which the start transform has placed), turning about that,
    the shift there over +-``joint_shear_mm``."""
    found, facts = transform, {}
    centre = tuple(float(c) for c in centre_mm)
    pivot = (
        (centre_mm, settings.left_right_search_mm)
        if joint is None
        else (joint, settings.joint_shear_mm)
    )
    for rounds in range(1, settings.match_rounds + 1):
        matched = _slices_matched(fixed, moving, marrow, found, settings=settings)
        previous = found
        found, facts = search_out_of_plane(
            matched, moving, wide, transform, *pivot, settings=settings
        )
        facts["SliceMatchRounds"] = rounds
        moved = np.subtract(found.TransformPoint(centre), previous.TransformPoint(centre))
        if np.linalg.norm(moved) < settings.match_settled_mm:
            break
    return found, facts


def _slices_matched(fixed, moving, marrow, transform, *, settings: RegisterSettings) -> sitk.Image:
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
    seen = [k for k in range(len(f)) if inside[k].sum() >= settings.marrow_min_voxels]
    if not seen:
        return fixed
    ratios = [np.median(f[k][inside[k]]) / max(np.median(m[k][inside[k]]), 1e-6)
              for k in seen]  # fmt: skip
    scale = np.interp(np.arange(len(f)), seen, ratios)  # beyond the marrow: its last slice's
    matched = sitk.GetImageFromArray(np.moveaxis(f / scale[:, None, None], 0, thick), False)
    matched = sitk.Cast(matched, fixed.GetPixelID())
    matched.CopyInformation(fixed)
    return matched


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
    shifted = recentred_transform(transform, fixed[label])
    shifted.SetTranslation(tuple(target - fixed[label]))
    return shifted


def _bounded(
    result, initial: sitk.Euler3DTransform, centre_mm: np.ndarray, *, settings: RegisterSettings
):
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
    if shift > settings.max_refine_shift_mm or turn > settings.max_refine_rotation_deg:
        facts.update(
            Refined=False, Note="refinement ran away (a neighbour looks alike): start kept"
        )
        return recentred_transform(initial, centre_mm), facts
    return transform, facts
