"""The out-of-plane search: a vertebra's left-right shift and its roll and yaw, on a grid, where a
thick-sliced sagittal image cannot steer an optimiser (docs/methods/registration.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from spineflow.core.gridsearch import refined_minimum, walked_minimum_value
from spineflow.register.masks import around_landing, on_mask, recentred_transform
from spineflow.register.metric import mapped_inside, masked_correlation, masked_mutual_information
from spineflow.register.settings import DEFAULTS, RegisterSettings


class _Cue(NamedTuple):
    """What a metric over a fixed mask reads, the fixed image and the mask on the mask's
    bounding box (``on_mask``), and the metric (``masked_correlation`` or
    ``masked_mutual_information``)."""

    fixed: sitk.Image
    moving: sitk.Image
    mask: sitk.Image
    metric: Callable

    def value(self, transform: sitk.Transform) -> float:
        return self.metric(self.fixed, self.moving, self.mask, transform)


def metric_images(fixed, moving, mask, metric=None) -> _Cue:
    return _Cue(on_mask(fixed, mask), moving, on_mask(mask, mask), metric or masked_correlation)


def _grid(half_range: float, step: float) -> np.ndarray:
    return np.arange(-half_range, half_range + 1e-9, step)


def _turned(transform, centre_mm, roll_deg=0.0, yaw_deg=0.0, shift_mm=0.0):
    """The transform followed by a turn about the point it maps ``centre_mm`` to (about LPS y,
    anterior-posterior: roll; about LPS z, the long axis: yaw) and a left-right shift (LPS x)."""
    base = recentred_transform(transform, centre_mm)
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
    between them). Every angle is searched; over the shifts, each angle's least is walked to
    from the previous angle's best shift (the first from the middle one): the best shift moves
    little from one angle to the next, and the walk reads a third of the shifts a whole row
    would. The same samples throughout: where the moving image ends, samples falling off it
    would make the metric jump by more than the motion changes it."""
    corners = [build(a, s) for a in (angles[0], 0.0, angles[-1]) for s in (shifts[0], shifts[-1])]
    cue = cue._replace(mask=cue.mask & mapped_inside(cue.moving, cue.mask, corners))
    if not sitk.GetArrayViewFromImage(cue.mask).any():
        return None  # none of it lands in the moving image at every corner
    least, best_shift = [], len(shifts) // 2
    for angle in angles:
        value, best_shift = walked_minimum_value(
            lambda k, angle=angle: cue.value(build(angle, shifts[k])), len(shifts), best_shift
        )
        least.append(value)
    return refined_minimum(angles, least)


def _best_turn(
    cue,
    transform,
    centre_mm,
    turn: dict,
    axis: str,
    half_range_deg,
    step_deg,
    shift_range_mm,
    *,
    settings: RegisterSettings,
):
    """The turn about one axis (``turn``'s key ``axis``: roll_deg or yaw_deg), on top of
    ``turn`` (and its shift_mm), where the cue's metric is least, each angle at its best
    left-right shift (within +-shift_range_mm of turn's, on a ``coarse_left_right_step_mm`` grid);
    0 where it does not peak within the range."""

    def build(angle, shift_mm):
        return _moved(transform, centre_mm, turn, **{axis: angle, "shift_mm": shift_mm})

    shifts = _grid(shift_range_mm, settings.coarse_left_right_step_mm)
    return _grid_search(cue, build, _grid(half_range_deg, step_deg), shifts) or 0.0


def search_out_of_plane(
    fixed: sitk.Image,
    moving: sitk.Image,
    wide_mask: sitk.Image,
    transform,
    centre_mm,
    shift_range_mm: float | None = None,
    *,
    settings: RegisterSettings = DEFAULTS,
) -> tuple[sitk.Euler3DTransform, dict]:
    """The motion out of the sagittal plane of what ``wide_mask`` covers (a vertebra across its
    whole width, or the whole labelled spine): the mean of the motions where, over it, the
    intensities' mutual information and their edges' (``edge_sigma_mm``) normalised correlation
    peak, each found alone (``_peak_motion``), turning about ``centre_mm``: its yaw and its roll
    (``_best_turn``; a roll left out moves the yaw's peak and the other way round), then its
    left-right shift to a fraction of the ``left_right_step_mm`` grid (parabola through the peak);
    all twice, the second time within ``second_round_steps`` and ``fine_left_right_mm`` of the
    first. Exhaustive searches, because a few thick slices give a gradient too little to go on. A
    peak on the edge of a range is no peak (what drives the correlation is not the bone): that
    motion keeps its start. The shift is searched over +-``shift_range_mm`` (default:
    ``left_right_search_mm``). Returns the transform and what was applied, and per cue what it found
    (shift None: no peak; the mean is of the cues that peak)."""
    if shift_range_mm is None:
        shift_range_mm = settings.left_right_search_mm
    # the mutual information reads every voxel of the moving image for its range (on a whole
    # image, 1.7 times as long)
    moving = around_landing(moving, wide_mask, transform, settings=settings)
    cues = {
        "Intensity": metric_images(
            fixed, moving, wide_mask, partial(masked_mutual_information, settings=settings)
        ),
        "Edges": metric_images(
            _edges(fixed, settings=settings), _edges(moving, settings=settings), wide_mask
        ),
    }
    found = {name: _peak_motion(cue, transform, centre_mm, shift_range_mm, settings=settings)
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


def _edges(image: sitk.Image, *, settings: RegisterSettings) -> sitk.Image:
    return sitk.GradientMagnitudeRecursiveGaussian(image, settings.edge_sigma_mm)


def _peak_motion(
    cue, transform, centre_mm, shift_range_mm, *, settings: RegisterSettings
) -> tuple[dict, float | None]:
    """``search_out_of_plane``'s searches with one cue: the turn (roll_deg, yaw_deg) and the
    left-right shift where its metric is least. Twice: the second round within
    ``second_round_steps`` of the first's angles and ``fine_left_right_mm`` of its shift, so that
    its metric reads every voxel that lands inside the moving image over that narrower reach
    (``_grid_search``). The shift is None where neither round finds a peak."""
    motion = {"roll_deg": 0.0, "yaw_deg": 0.0, "shift_mm": 0.0}
    reach_mm, peaked = shift_range_mm, False
    for second_round in (False, True):
        for axis, half_range_deg, step_deg in (
            ("yaw_deg", settings.yaw_search_deg, settings.yaw_step_deg),
            ("roll_deg", settings.roll_search_deg, settings.roll_step_deg),
        ):
            half_range_deg = (
                settings.second_round_steps * step_deg if second_round else half_range_deg
            )
            motion[axis] += _best_turn(
                cue,
                transform,
                centre_mm,
                motion,
                axis,
                half_range_deg,
                step_deg,
                reach_mm,
                settings=settings,
            )
        shift = _grid_search(
            cue, lambda a, _: _moved(transform, centre_mm, motion, shift_mm=a),
            _grid(reach_mm, settings.left_right_step_mm), np.zeros(1),
        )  # fmt: skip
        if shift is not None:
            motion["shift_mm"] += shift
            reach_mm, peaked = min(reach_mm, settings.fine_left_right_mm), True
    turn = {axis: motion[axis] for axis in ("roll_deg", "yaw_deg")}
    return turn, motion["shift_mm"] if peaked else None
