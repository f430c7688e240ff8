"""Label maps completed with the structures that lie between the ones they hold.

Segmenters and manual tracings give vertebral bodies only, discs only, or both. The measurement
needs each study disc and the vertebrae on either side of it (``measure``), so a map missing one
kind gets it from the other, slice by slice:

- a disc between two labelled bodies: the space between the upper body's caudal surface and the
  lower body's cranial surface, across the AP extent the two bodies' facing ends share;
- a body between two labelled discs: the space between them, across the AP extent of their
  facing surfaces; a body beyond the outermost disc (L1 above L1-L2, S1 below L5-S1) only its
  first ``end_body_mm``, enough to say the vertebra is there: its far endplate is sought in the
  image (``endplate.locate_far_endplate``).

Only what is missing is filled; labelled voxels are never changed.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from spineflow.core.anatomy import NAMES_CAUDAL_TO_CRANIAL, VERTEBRA_LABELS, disc_label
from spineflow.segment.settings import DEFAULTS, SegmentSettings

CRANIAL_TO_CAUDAL = list(reversed(NAMES_CAUDAL_TO_CRANIAL))  # T10 ... L5, S1


def _coordinates(mask: np.ndarray, spacing_yz) -> np.ndarray:
    return np.argwhere(mask) * np.asarray(spacing_yz, float)


def _facing(
    points: np.ndarray, other: np.ndarray, *, settings: SegmentSettings = DEFAULTS
) -> np.ndarray:
    """The points within ``facing_mm`` of the other structure (all of them if none is)."""
    near = cKDTree(other).query(points)[0] <= settings.facing_mm
    return points[near] if near.sum() >= 3 else points


def _surface(points: np.ndarray, axis_up: np.ndarray, axis_ap: np.ndarray, bins, side: int):
    """Per AP bin, the extreme of the points along ``axis_up`` (side +1: highest, -1: lowest);
    NaN in bins without points."""
    u, t = points @ axis_ap, points @ axis_up
    index = np.digitize(u, bins) - 1
    out = np.full(len(bins) - 1, np.nan)
    for k in np.unique(index[(index >= 0) & (index < len(out))]):
        values = t[index == k]
        out[k] = values.max() if side > 0 else values.min()
    return out


def fill_between(
    upper: np.ndarray,
    lower: np.ndarray,
    spacing_yz,
    reach_mm: float | None = None,
    *,
    settings: SegmentSettings = DEFAULTS,
):
    """The pixels of a sagittal slice between two structures' masks (2D [y, z]): above the
    lower one's cranial surface and below the upper one's caudal surface, across the AP extent
    both share. With ``reach_mm`` and one mask empty, the first ``reach_mm`` beyond the other
    (towards where the missing one would be) instead. Empty where that cannot be drawn."""
    spacing_yz = np.asarray(spacing_yz, float)
    out = np.zeros(upper.shape, bool)
    known = [m for m in (upper, lower) if m.any()]
    if not known or (len(known) == 1 and reach_mm is None):
        return out
    pa, pb = _coordinates(upper, spacing_yz), _coordinates(lower, spacing_yz)
    if len(known) == 2:  # between their facing parts (a whole sacrum's centre lies far off)
        pa, pb = _facing(pa, pb, settings=settings), _facing(pb, pa, settings=settings)
        axis_up = pa.mean(axis=0) - pb.mean(axis=0)
    else:  # along the structure's short axis, towards the missing neighbour
        points = pa if len(pa) else pb
        _, _, axes = np.linalg.svd(points - points.mean(axis=0), full_matrices=False)
        axis_up = axes[1] * np.sign(axes[1][1] + 1e-12)  # cranial is +z
    axis_up = axis_up / np.linalg.norm(axis_up)
    axis_ap = np.array([axis_up[1], -axis_up[0]])
    extents = (
        [(p @ axis_ap).min() for p in (pa, pb) if len(p)],
        [(p @ axis_ap).max() for p in (pa, pb) if len(p)],
    )
    lo, hi = max(extents[0]), min(extents[1])
    if hi - lo < 2 * settings.bin_mm:
        return out
    bins = np.arange(
        lo - settings.bin_mm / 2, hi + settings.bin_mm, settings.bin_mm
    )  # pixel centres lo ... hi inside
    top = _surface(pb, axis_up, axis_ap, bins, +1) if len(pb) else None
    bottom = _surface(pa, axis_up, axis_ap, bins, -1) if len(pa) else None
    if top is None:
        top = bottom - reach_mm
    if bottom is None:
        bottom = top + reach_mm
    pixels = _coordinates(np.ones(upper.shape, bool), spacing_yz)
    u, t = pixels @ axis_ap, pixels @ axis_up
    index = np.digitize(u, bins) - 1
    valid = (index >= 0) & (index < len(bins) - 1)
    inside = np.zeros(len(pixels), bool)
    k = index[valid]
    inside[valid] = (t[valid] > top[k]) & (t[valid] < bottom[k])
    return inside.reshape(upper.shape) & ~upper & ~lower


def _neighbours():
    """(upper vertebra, disc, lower vertebra) label triples, cranial to caudal."""
    names = CRANIAL_TO_CAUDAL
    return [(VERTEBRA_LABELS[a], disc_label(a), VERTEBRA_LABELS[b])
            for a, b in zip(names[:-1], names[1:])]  # fmt: skip


def complete(
    labels: np.ndarray, spacing_mm, *, settings: SegmentSettings = DEFAULTS
) -> tuple[np.ndarray, list[str]]:
    """The map ([x, y, z], canonical) with missing discs and bodies filled in each sagittal
    slice (module docstring); returns it and what was filled, by name."""
    out = labels.copy()
    present = set(np.unique(labels).tolist())
    names = {v: n for n, v in VERTEBRA_LABELS.items()}
    filled = []
    spacing_yz = np.asarray(spacing_mm[1:], float)
    triples = _neighbours()
    for upper, disc, lower in triples:  # discs between two bodies
        if disc in present or not {upper, lower} <= present:
            continue
        if _fill(out, labels, disc, upper, lower, spacing_yz, None, settings=settings):
            filled.append(f"{names[upper]}-{names[lower]} between its vertebrae")
    discs_present = {d for _, d, _ in triples if d in present}
    for k, (upper, disc, _) in enumerate(triples):  # bodies between two discs, or beyond
        above = triples[k - 1][1] if k > 0 else None
        if upper in present or not ({above, disc} & discs_present):
            continue
        reach = None if {above, disc} <= discs_present else settings.end_body_mm
        if _fill(out, labels, upper, above if above in discs_present else None,
                 disc if disc in discs_present else None, spacing_yz, reach,
                 settings=settings):  # fmt: skip
            filled.append(f"{names[upper]} between its discs" if reach is None
                          else f"{names[upper]} next to its disc")  # fmt: skip
    _, last_disc, last_lower = triples[-1]  # the body below the lowest disc (S1)
    if last_lower not in present and last_disc in discs_present:
        if _fill(
            out,
            labels,
            last_lower,
            last_disc,
            None,
            spacing_yz,
            settings.end_body_mm,
            settings=settings,
        ):
            filled.append(f"{names[last_lower]} next to its disc")
    return out, filled


def _fill(
    out, labels, value, upper, lower, spacing_yz, reach, *, settings: SegmentSettings = DEFAULTS
) -> bool:
    """Fill ``value`` between structure labels ``upper`` and ``lower`` (None: absent) in every
    slice; whether anything was filled."""
    any_filled = False
    for x in range(labels.shape[0]):
        a = labels[x] == upper if upper is not None else np.zeros(labels.shape[1:], bool)
        b = labels[x] == lower if lower is not None else np.zeros(labels.shape[1:], bool)
        region = fill_between(a, b, spacing_yz, reach, settings=settings) & (out[x] == 0)
        if region.any():
            out[x][region] = value
            any_filled = True
    return any_filled
