"""Built-in segmentation: vertebral bodies and discs on the mid-sagittal surface, labelled from
the sacrum upwards.

No trained weights: the vertebral column is straightened along the anterior wall of the spinal
canal, continued below the thecal sac along the posterior wall of the sacrum; in the
straightened image vertebral bodies are runs of homogeneous marrow and discs are the runs
between them. Each gap's height is then measured like a disc's (``discs.locate_gap``): the
fused sacral segments are separated by thin remnants, so the lowest gap of a real disc's height
is L5-S1 and labels come from anatomy, not from position in the image. Label values follow
SPINEPS (``core/anatomy.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from spineflow.core.anatomy import (
    NAMES_CAUDAL_TO_CRANIAL,
    VERTEBRA_LABELS,
    disc_label,
    lookup_table,
    scheme,
    to_spineflow,
)
from spineflow.core.discs import locate_gap
from spineflow.core.midsagittal import (
    Canal,
    Volume,
    canal_projection,
    find_canal,
    front_curve,
    inside_mm,
    midline_and_scatter,
    plane_at,
    resample_curve,
    sample,
    symmetric_midline,
)
from spineflow.core.plane import Plane
from spineflow.segment import learned, structures
from spineflow.segment.settings import DEFAULTS, SegmentSettings

# the sidecar's record of the mid-sagittal surface: the fractional sagittal slice index of
# each row along the superior axis, both in the image's closest canonical (RAS) orientation
MIDSAGITTAL_SURFACE = "MidsagittalSurfaceSliceIndexPerRow"
PROVISIONAL_GAP = 200  # provisional label values while the anchor is not known


@dataclass
class Column:
    """The vertebral column straightened along the canal's anterior wall."""

    points_mm: np.ndarray  # (n, 2) curve points (y, z), 1 mm apart, caudal to cranial
    normals: np.ndarray  # (n, 2) unit vectors pointing anterior
    depth_mm: np.ndarray  # sample depths along the normal
    image: np.ndarray  # (n, len(depth_mm)) straightened intensities

    @cached_property
    def likeness(self, *, settings: SegmentSettings = DEFAULTS) -> np.ndarray:
        """marrow_rows' likeness of this column, computed once (every level and body asks)."""
        return marrow_rows(self, settings=settings)[0]


def canal_front_curve(plane: np.ndarray, spacing_mm, canal: Canal) -> tuple[np.ndarray, np.ndarray]:
    """Anterior wall of the canal in the plane (the tube of its brightness overlapping the
    canal found across the slices, ``midsagittal.front_curve``)."""
    mask = find_canal(plane, spacing_mm, canal)
    return front_curve(mask, spacing_mm)


def _sample_column(
    plane, spacing_mm, points, normals, *, settings: SegmentSettings = DEFAULTS
) -> Column:
    depth = np.arange(0.0, settings.column_depth_mm, settings.step_mm)
    grid = points[:, None, :] + depth[None, :, None] * normals[:, None, :]
    image = sample(plane, spacing_mm, grid.reshape(-1, 2)).reshape(len(points), len(depth))
    return Column(points, normals, depth, image)


def _marrow_edge_mm(profile: np.ndarray, depth: np.ndarray, level: float, tolerance: float):
    """Depth where a profile (posterior -> anterior) enters a vertebral body: marrow for at
    least 10 mm (NaN if it never does)."""
    marrow = ndimage.uniform_filter1d((np.abs(profile - level) < tolerance).astype(float), 3)
    run = int(round(10.0 / (depth[1] - depth[0])))
    inside = ndimage.minimum_filter1d(marrow >= 0.6, run, origin=-(run // 2))
    hits = np.flatnonzero(inside[: len(inside) - run])
    return float(depth[hits[0]]) if len(hits) else float("nan")


def extend_along_sacrum(
    plane,
    spacing_mm,
    column: Column,
    max_mm: float = 110.0,
    *,
    settings: SegmentSettings = DEFAULTS,
) -> Column:
    """Continue the column below the end of the thecal sac along the posterior wall of the
    sacrum (its marrow edge), so that the sacral segments below S1 are part of the column: the
    sac ends near S2, and without them the S1-S2 remnant would be the lowest "disc" in view.

    The wall is followed where it is found within 4 mm of its predicted place; across remnant
    discs (no marrow) the track coasts straight on; it bends by at most 2 degrees per mm."""
    _, level_rows, tolerance = marrow_rows(column, settings=settings)
    offsets = np.arange(-10.0, 30.0, 0.5)
    points, normals = column.points_mm, column.normals
    level = float(np.median(level_rows[:40]))
    walls = np.array([_marrow_edge_mm(sample(plane, spacing_mm, p + offsets[:, None] * n),
                                      offsets, level, tolerance)
                      for p, n in zip(points[:30], normals[:30])])  # fmt: skip
    if np.isfinite(walls).sum() < 10:
        return column
    wall = float(np.nanmedian(walls))  # depth of the sacral wall in front of the canal's curve
    track = [points[0]]
    tangent = points[0] - points[min(10, len(points) - 1)]
    tangent /= np.linalg.norm(tangent)
    missed, last_found = 0.0, 0
    max_turn = np.radians(2.0)
    for step in range(1, int(max_mm)):
        normal = np.array([-tangent[1], tangent[0]])  # anterior; the tangent runs caudally
        guess = track[-1] + tangent
        if not inside_mm(plane.shape, spacing_mm, guess[None], margin_px=2)[0]:
            break
        profile = sample(plane, spacing_mm, guess + offsets[:, None] * normal)
        edge = _marrow_edge_mm(profile, offsets, level, tolerance)
        if np.isfinite(edge) and abs(edge - wall) < 4.0:
            turn = np.clip(np.arctan2(0.3 * (edge - wall), 1.0), -max_turn, max_turn)
            tangent = np.cos(turn) * tangent + np.sin(turn) * normal
            missed, last_found = 0.0, step
        else:
            missed += 1.0
            if missed > 8.0:
                break
        track.append(guess)
    track = np.array(track[1 : last_found + 1])
    if len(track) < 10:
        return column
    points, normals = resample_curve(np.vstack([track[::-1], column.points_mm]))
    return _sample_column(plane, spacing_mm, points, normals, settings=settings)


def straighten(
    plane: np.ndarray, spacing_mm, canal: Canal, *, settings: SegmentSettings = DEFAULTS
) -> Column:
    """The column along the canal (the component of the plane overlapping ``canal``, the
    canal found across the slices) and on down the sacrum."""
    points, normals = canal_front_curve(plane, spacing_mm, canal)
    column = _sample_column(plane, spacing_mm, points, normals, settings=settings)
    return extend_along_sacrum(plane, spacing_mm, column, settings=settings)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    labels, n = ndimage.label(mask)
    return [(s.start, s.stop) for (s,) in ndimage.find_objects(labels)]


def marrow_rows(
    column: Column, *, settings: SegmentSettings = DEFAULTS
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per row: the share of the body band that looks like marrow, the local marrow level, and
    the tolerance used. The level is a running median along the column (bodies are the majority
    of any 60 mm stretch), so a residual bias field does not matter.

    The tolerance is the widest of ``tolerance_spreads`` (times the residual's robust spread, at
    least 12 % of the level) under which no run of marrow a body's height above the lowest
    such run (the sacrum) is taller than one body (``max_body_mm``); the widest of all where none
    is. On a T2 image without fat suppression, marrow texture widens the spread until discs as
    dark as the tissue around them look like marrow and the bodies run together."""
    band = column.image[:, (column.depth_mm >= 4) & (column.depth_mm <= 24)]
    row_level = np.nanmedian(band, axis=1)
    level = ndimage.median_filter(np.nan_to_num(row_level, nan=np.nanmedian(row_level)), 61)
    residual = band - level[:, None]
    finite = residual[np.isfinite(residual)]
    spread = float(1.4826 * np.median(np.abs(finite - np.median(finite))))
    widest = None
    for spreads in settings.tolerance_spreads:
        tolerance = max(spreads * spread, 0.12 * float(np.median(level)))
        likeness = ndimage.uniform_filter1d(np.nanmean(np.abs(residual) < tolerance, axis=1), 3)
        widest = widest or (likeness, level, tolerance)
        bodies = [r for r in _runs(likeness >= 0.5) if r[1] - r[0] >= settings.min_body_mm]
        if all(stop - start <= settings.max_body_mm for start, stop in bodies[1:] or bodies):
            return likeness, level, tolerance
    return widest


def body_runs(column: Column, *, settings: SegmentSettings = DEFAULTS) -> list[tuple[int, int]]:
    """Row ranges of the vertebral bodies along the column, caudal to cranial; a body cut by
    the end of the column is kept (shorter), so the disc next to it counts."""
    likeness = column.likeness
    n_rows = len(likeness)
    runs = [
        r
        for r in _runs(likeness >= 0.5)
        if (r[1] - r[0]) >= settings.min_body_mm or (r[0] == 0 or r[1] == n_rows)
    ]
    if len(runs) < 2:
        raise ValueError("fewer than two vertebral bodies found along the canal")
    return runs


def split_merged_bodies(
    column: Column, runs: list[tuple[int, int]], first: int, *, settings: SegmentSettings = DEFAULTS
):
    """Body runs from index ``first`` up, with any run too tall for one vertebra (over
    ``merged_body_ratio`` times the shortest whole body above ``first``: lumbar bodies differ by far
    less) split at the disc inside it, and its parts again until none is too tall.

    A disc whose signal matches the marrow (a degenerated disc on a fat-suppressed image) leaves
    only its two dark cortical endplates in the marrow likeness, too thin to fall below half: the
    bodies on either side then read as one. The disc is the rows between the two dips of the
    likeness nearest the run's middle that lie ``thin_gap_mm`` to ``max_disc_mm`` apart, or at the
    deepest dip.
    Where such a disc is darker in part, it ends a run with a gap thinner than any disc
    (``thin_gap_mm``) and the body below or above holds the rest of it: the two runs are joined
    and split again at the disc's endplates (``_joined_across_thin_gaps``). Two runs as thin a
    gap apart that together are no taller than one body are one body first."""
    likeness = column.likeness
    above = _joined_across_thin_gaps(
        runs[first:], settings.max_body_mm, whole_pairs=False, settings=settings
    )
    whole = [b - a for a, b in above if a > 0 and b < len(likeness)]
    if not whole:
        return runs
    typical = float(min(whole))
    out = list(runs[:first])
    pending = _joined_across_thin_gaps(above, 2 * typical + settings.min_disc_mm, settings=settings)
    while pending:
        start, stop = pending.pop(0)
        if (
            stop - start > settings.merged_body_ratio * typical
            and stop - start >= 2 * settings.min_body_mm
        ):
            gap = _disc_inside(likeness, start, stop, settings=settings)
            if gap is not None:
                pending[:0] = [(start, gap[0]), (gap[1], stop)]
                continue
        out.append((start, stop))
    return out


def _joined_across_thin_gaps(
    runs: list[tuple[int, int]],
    tall_mm: float,
    whole_pairs=True,
    *,
    settings: SegmentSettings = DEFAULTS,
):
    """The runs, each two a gap thinner than ``thin_gap_mm`` apart joined into one where the pair
    is taller than ``tall_mm`` (``whole_pairs``: a disc hides in them, to be split again) or
    at most that tall (not ``whole_pairs``: one body with a dark line across it, the
    basivertebral vein or a cleft)."""
    joined = list(runs[:1])
    for start, stop in runs[1:]:
        below = joined[-1]
        tall = stop - below[0] > tall_mm
        if start - below[1] < settings.thin_gap_mm and tall == whole_pairs:
            joined[-1] = (below[0], stop)
        else:
            joined.append((start, stop))
    return joined


def _disc_inside(
    likeness: np.ndarray, start: int, stop: int, *, settings: SegmentSettings = DEFAULTS
) -> tuple[int, int] | None:
    """Rows of the disc hidden in a merged run (``split_merged_bodies``), None without a dip:
    between two dips of the likeness, around a thin gap where the run has one."""
    margin = int(settings.min_body_mm * 0.75)
    inner = np.arange(start + margin, stop - margin)
    values = likeness[inner]
    lowest = (values <= np.roll(values, 1)) & (values <= np.roll(values, -1)) & (values < 0.9)
    minima = inner[lowest][(inner[lowest] > inner[0]) & (inner[lowest] < inner[-1])]
    if not len(minima):
        return None
    middle = (start + stop) / 2
    # the likeness is smoothed over 3 rows: a thin disc's two dips lie closer than its height
    pairs = [
        (a, b)
        for a in minima
        for b in minima
        if settings.thin_gap_mm <= b - a <= settings.max_disc_mm
    ]
    # a run joined across a thin gap (``_joined_across_thin_gaps``) has its disc there
    thin_gaps = inner[values < 0.5]
    around_gap = [(a, b) for a, b in pairs if np.any((thin_gaps >= a) & (thin_gaps <= b))]
    pairs = around_gap or pairs
    if pairs:
        # the disc is the stretch least like marrow (not a body's vein next to it); among
        # stretches alike, the one nearest the middle
        unlike = {ab: float(np.mean(likeness[ab[0] : ab[1] + 1])) for ab in pairs}
        alike = [ab for ab in pairs if unlike[ab] <= min(unlike.values()) + 0.1]
        a, b = min(alike, key=lambda ab: abs((ab[0] + ab[1]) / 2 - middle))
        return int(a), int(b) + 1
    deepest = int(minima[np.argmin(likeness[minima])])
    return deepest, deepest + 1


@dataclass(frozen=True)
class Labelling:
    """Which label each body run and each gap above it gets (0: none)."""

    body_values: list[int]
    gap_values: list[int]  # gap k lies between body k and body k + 1


def provisional_labelling(n_bodies: int) -> Labelling:
    return Labelling(
        list(range(1, n_bodies + 1)), [PROVISIONAL_GAP + k for k in range(n_bodies - 1)]
    )


def anatomical_labelling(n_bodies: int, anchor: int) -> tuple[Labelling, list[str]]:
    """Names from the sacrum: body ``anchor`` is S1 (gap ``anchor`` is L5-S1); the sacrum
    below it and bodies above T10 stay unlabelled (where the column turns down the curved
    sacrum its rows cross the fused segments obliquely; S1's caudal end is found by the
    measurement itself, ``endplate.locate_far_endplate``)."""
    names = ["" for _ in range(n_bodies)]
    for k in range(anchor, n_bodies):
        if k - anchor < len(NAMES_CAUDAL_TO_CRANIAL):
            names[k] = NAMES_CAUDAL_TO_CRANIAL[k - anchor]
    body_values = [VERTEBRA_LABELS[n] if n else 0 for n in names]
    gap_values = [
        disc_label(upper) if upper and lower else 0 for lower, upper in zip(names[:-1], names[1:])
    ]
    found = [n for n in names if n]
    discs = [f"{u}-{lo}" for lo, u in zip(names[:-1], names[1:]) if u and lo]
    return Labelling(body_values, gap_values), found + discs


def body_extent_mm(
    column: Column, rows: tuple[int, int], *, settings: SegmentSettings = DEFAULTS
) -> tuple[float, float]:
    """Posterior and anterior depth of the body: the run around its core (``body_core_mm``) where
    its depth profile (the median over its rows) stays at the core's level. The rows' own
    level, not the column's tolerance for telling bodies from discs: on a T2 image without fat
    suppression the tissue in front of the spine lies within that tolerance of marrow.
    Where the profile left that level gradually (a receive field falling off towards the
    front), the front is followed on to the step (``_front_past_drift``)."""
    depth = column.depth_mm
    profile = np.nanmedian(column.image[rows[0] : rows[1]], axis=0)
    core = (
        (depth >= settings.body_core_mm[0])
        & (depth <= settings.body_core_mm[1])
        & np.isfinite(profile)
    )
    if core.sum() < 4:
        return 2.0, 35.0
    level = np.median(profile[core])
    spread = 1.4826 * np.median(np.abs(profile[core] - level))
    looks = np.abs(profile - level) < _body_tolerance(level, spread, settings=settings)
    middle = np.mean(settings.body_core_mm)
    around = [r for r in _runs(looks) if depth[r[0]] <= middle <= depth[r[1] - 1]]
    if not around or (around[0][1] - around[0][0]) * settings.step_mm < 5.0:  # at least 5 mm deep
        return 2.0, 35.0
    start, stop = around[0]
    return depth[start], depth[
        _front_past_drift(profile, depth, stop - 1, spread, settings=settings)
    ]


def _body_tolerance(level: float, spread: float, *, settings: SegmentSettings = DEFAULTS) -> float:
    return max(settings.body_edge_share * abs(level), 4.0 * spread)


def _front_past_drift(
    profile: np.ndarray,
    depth: np.ndarray,
    last: int,
    spread: float,
    *,
    settings: SegmentSettings = DEFAULTS,
) -> int:
    """The body's front from ``last`` (its last sample at the core's level) outwards: on while
    each sample stays within ``body_edge_share`` (or 4 spreads) of the ``drift_reference_mm`` before
    it. A cortex or ligament is a step and stops it at once; a drift is followed to the step.
    ``last`` itself where that moves the front by less than ``min_drift_mm``, or where no step comes
    before ``body_max_depth_mm`` (tissue as bright as the marrow in front of it: the drift then
    cannot be told from the body's surroundings)."""
    reference = int(round(settings.drift_reference_mm / settings.step_mm))
    front = last
    while front + 1 < len(profile) and depth[front + 1] <= settings.body_max_depth_mm:
        level = np.median(profile[max(front - reference + 1, 0) : front + 1])
        if not abs(profile[front + 1] - level) < _body_tolerance(level, spread, settings=settings):
            return front if depth[front] - depth[last] >= settings.min_drift_mm else last
        front += 1
    return last


def column_labels(
    column: Column,
    runs: list[tuple[int, int]],
    labelling: Labelling,
    *,
    settings: SegmentSettings = DEFAULTS,
) -> np.ndarray:
    """Label image of the straightened column: bodies and the gaps between them, each between
    its AP limits (a gap from the posterior wall to the mean front of its two bodies)."""
    labels = np.zeros(column.image.shape, np.int16)
    extents = [body_extent_mm(column, rows, settings=settings) for rows in runs]
    for rows, extent, value in zip(runs, extents, labelling.body_values):
        band = (column.depth_mm >= extent[0]) & (column.depth_mm <= extent[1])
        labels[rows[0] : rows[1], band] = value
    for k, value in enumerate(labelling.gap_values):
        if not value:
            continue
        post = min(extents[k][0], extents[k + 1][0])
        front = (extents[k][1] + extents[k + 1][1]) / 2
        band = (column.depth_mm >= post) & (column.depth_mm <= front)
        labels[runs[k][1] : runs[k + 1][0], band] = value
    return labels


def plane_labels(
    plane_shape,
    spacing_mm,
    column: Column,
    labels: np.ndarray,
    *,
    settings: SegmentSettings = DEFAULTS,
) -> np.ndarray:
    """Map the straightened labels back onto the 2D image by nearest curve point."""
    yy, zz = np.meshgrid(
        np.arange(plane_shape[0]) * spacing_mm[0],
        np.arange(plane_shape[1]) * spacing_mm[1],
        indexing="ij",
    )
    pixels = np.column_stack([yy.ravel(), zz.ravel()])
    _, nearest = cKDTree(column.points_mm).query(pixels)
    depth = np.einsum("ij,ij->i", pixels - column.points_mm[nearest], column.normals[nearest])
    depth_index = np.rint(depth / settings.step_mm).astype(int)
    valid = (depth_index >= 0) & (depth_index < labels.shape[1])
    out = np.zeros(len(pixels), np.int16)
    out[valid] = labels[nearest[valid], depth_index[valid]]
    # the curve's end rows extend sideways forever; keep only pixels that project inside it
    along = np.einsum(
        "ij,ij->i",
        pixels - column.points_mm[nearest],
        np.column_stack([-column.normals[nearest][:, 1], column.normals[nearest][:, 0]]),
    )
    out[np.abs(along) > 1.0] = 0
    return out.reshape(plane_shape)


def extrude(labels2d: np.ndarray, midline: np.ndarray, shape, half_width_slices: int = 1):
    """3D labels: the mid-sagittal labels in the slices around the midline of each row z."""
    seg = np.zeros(shape, np.int16)
    centre = np.rint(midline).astype(int)
    for offset in range(-half_width_slices, half_width_slices + 1):
        x = centre + offset
        z = np.flatnonzero((x >= 0) & (x < shape[0]))
        seg[x[z], :, z] = labels2d[:, z].T
    return seg


def find_anchor(
    volume: Volume, midline, column: Column, runs, *, settings: SegmentSettings = DEFAULTS
) -> tuple[int | None, dict]:
    """Index of the gap that is L5-S1 (None where it cannot be told), and what was measured.

    Gaps from the bottom of the column are measured like discs (perpendicular to their own
    endplates, so an oblique sacral remnant is not taken for thick); those thinner than
    ``min_disc_mm`` are fused sacral remnants, those taller than ``max_disc_mm`` no single disc.
    L5-S1 is the lowest gap of a disc's height with a whole body below it (S1), unless the image
    itself cuts that body; where the column's own end cuts it short of a body, which vertebra it is
    cannot be told (``_cut_body_problem``). A gap whose endplates are not seen (a dim sacrum, a
    remnant without marrow around it) is no L5-S1 to anchor on; one cut by the image counts by its
    length along the column.

    A second cue checks the first: the lumbosacral junction is the spine's sharpest bend. A
    well-formed S1-S2 disc (a young adult's, or a lumbarised S1) has a disc's height, but the sacrum
    below L5-S1 hardly bends; a degenerated L5-S1 may be thinner than ``min_disc_mm``, but still
    bends most (``_bend_problem``). None where the cues disagree or cannot be read, and where no gap
    qualifies."""
    plane, labelling = _provisional_plane(volume, midline, column, runs, settings=settings)
    checked = min(settings.sacral_gaps_checked + 2, len(runs) - 1)
    gaps = [_located_gap(plane, labelling, k) for k in range(checked)]
    heights = [float(g.height_mm) for g in gaps]
    for k, gap in enumerate(gaps):
        if gap.status == "not_in_fov":  # cut by the image: its length in the column
            heights[k] = float(runs[k + 1][0] - runs[k][1])
    tilts = [_tilt_deg(g) for g in gaps]
    facts = {
        "SacralGapHeightsMillimetres": [round(h, 2) for h in heights],
        "GapTiltsDegrees": [round(t, 1) if np.isfinite(t) else None for t in tilts],
    }
    for k in range(min(settings.sacral_gaps_checked, checked)):
        cut_by_image = plane.touches_border(labelling.body_values[k])
        below_whole = (
            runs[k][1] - runs[k][0] >= settings.min_body_mm or runs[k][0] == 0 or cut_by_image
        )
        if settings.min_disc_mm <= heights[k] <= settings.max_disc_mm and below_whole:
            cut_problem = (
                ""
                if cut_by_image
                else _cut_body_problem(runs, k, len(column.points_mm), settings=settings)
            )
            single_body_below = runs[k][1] - runs[k][0] <= settings.max_body_mm
            problem = cut_problem or _bend_problem(tilts, k, single_body_below, settings=settings)
            if problem:
                heights_mm = facts["SacralGapHeightsMillimetres"]
                facts["AnchorProblem"] = f"{problem} (heights {heights_mm} mm, caudal to cranial)"
                return None, facts
            return k, facts
    facts["AnchorProblem"] = (
        "no gap of a disc's height with a whole body below it among the lowest "
        f"{settings.sacral_gaps_checked} (heights {facts['SacralGapHeightsMillimetres']} mm)"
    )
    return None, facts


def _provisional_plane(
    volume: Volume, midline, column: Column, runs, *, settings: SegmentSettings = DEFAULTS
) -> tuple[Plane, Labelling]:
    """The plane with the runs and the gaps between them under provisional labels."""
    labelling = provisional_labelling(len(runs))
    labels = column_labels(column, runs, labelling, settings=settings)
    labels2d = plane_labels(volume.data.shape[1:], volume.plane_spacing_mm, column, labels,
                            settings=settings)  # fmt: skip
    return Plane(volume, extrude(labels2d, midline, volume.data.shape), midline), labelling


def _located_gap(plane: Plane, labelling: Labelling, k: int):
    """Gap k (above body run k) located like a disc (``discs.locate_gap``)."""
    return locate_gap(plane, labelling.gap_values[k], labelling.body_values[k + 1])


def _cut_body_problem(
    runs: list[tuple[int, int]], k: int, n_rows: int, *, settings: SegmentSettings = DEFAULTS
) -> str:
    """Why body run k, below a gap of a disc's height, cannot be taken for S1, empty if it can:
    the column's caudal end cuts it (it starts at row 0; rows are 1 mm) shorter than
    ``cut_body_share`` of the typical whole body above (the median of the next three that the
    column's cranial end does not cut; ``min_body_mm`` without one). The column then ended inside
    a vertebra that may be a lumbar one (where it lost the canal above the sacrum), and the
    gap above it may be any disc."""
    start, stop = runs[k]
    if start > 0:
        return ""
    above = [b - a for a, b in runs[k + 1 : k + 4] if b < n_rows]
    shortest_mm = (
        settings.cut_body_share * float(np.median(above)) if above else settings.min_body_mm
    )
    if stop - start >= shortest_mm:
        return ""
    return (f"the column ends {stop - start} mm into the body below the lowest gap of a disc's "
            f"height, short of a whole body ({shortest_mm:.0f} mm): whether it is S1 cannot "
            "be told")  # fmt: skip


def _bend_problem(
    tilts: list[float],
    k: int,
    single_body_below: bool = True,
    *,
    settings: SegmentSettings = DEFAULTS,
) -> str:
    """Why the bend at gap k (its tilt against the gap above's) does not confirm it as L5-S1,
    empty if it does: a neighbouring gap bends ``bend_disagreement_deg`` more (the sharper bend
    is the lumbosacral junction: the chosen gap is then a well-formed S1-S2 disc with L5-S1
    above it, or L4-L5 above a degenerated L5-S1 too thin for a disc), or the bend at it or
    above it cannot be read. A gap below that was not located is no L5-S1 (no endplates
    seen) and checks nothing; nor does one below a run taller than one vertebra
    (``single_body_below`` False: no L5 alone fills it, so the gap below it lies in the
    sacrum, whose curve bends its remnants however sharply). Where the gap two above is not
    located, the bend over the two gaps above can still confirm: lordosis bends every lumbar
    level the same way, so it is at least the bend at the one above."""

    def bend(j, over=1):
        return tilts[j] - tilts[j + over] if 0 <= j and j + over < len(tilts) else None

    own = bend(k)
    if own is None or not np.isfinite(own):
        return "the bend at the lowest gap of a disc's height cannot be read"
    for j, where in ((k + 1, "above"), (k - 1, "below")):
        other = bend(j)
        if other is None or (where == "below" and not (np.isfinite(other) and single_body_below)):
            continue
        if not np.isfinite(other):
            over_two = bend(j, over=2) if where == "above" else None
            if over_two is not None and over_two < own + settings.bend_disagreement_deg:
                continue
            return f"the bend at the gap {where} the lowest gap of a disc's height cannot be read"
        if other >= own + settings.bend_disagreement_deg:
            return (f"the sacrum's cues disagree: the lowest gap of a disc's height bends by "
                    f"{own:.0f} degrees, the gap {where} it by {other:.0f}")  # fmt: skip
    return ""


def _tilt_deg(gap) -> float:
    """The forward tilt of a located gap's mid-plane (its cranial axis against the image's
    superior axis, positive anterior), NaN where it was not located."""
    if gap.status != "ok" or gap.frame is None:
        return float("nan")
    return float(np.degrees(np.arctan2(gap.frame.up[0], gap.frame.up[1])))


def _anchor_with_bodies_split(
    volume: Volume, midline, column: Column, *, settings: SegmentSettings = DEFAULTS
):
    """L5-S1 (``find_anchor``) among the column's body runs (``body_runs``), and the runs above
    it split where merged (``split_merged_bodies``). A disc hidden in a run merged above the
    chosen gap may be L5-S1 itself (the chosen gap then an S1-S2 remnant a thick slice makes
    look like a disc): with the runs split, the anchor is sought again and must be the same
    gap."""
    runs = body_runs(column, settings=settings)
    anchor, facts = find_anchor(volume, midline, column, runs, settings=settings)
    if anchor is None:
        raise ValueError(f"levels not labelled: {facts['AnchorProblem']}")
    anchor, runs, facts = _disc_hidden_below(
        volume, midline, column, runs, anchor, facts, settings=settings
    )
    split = split_merged_bodies(column, runs, anchor + 1, settings=settings)
    if split == runs:
        return anchor, runs, facts
    again, facts = find_anchor(volume, midline, column, split, settings=settings)
    if again is None:
        raise ValueError(
            f"levels not labelled, once merged bodies are split: {facts['AnchorProblem']}"
        )
    if split[again][1] != runs[anchor][1]:
        raise ValueError(
            "levels not labelled: L5-S1 moves to another gap once the bodies merged "
            f"above it are split (heights {facts['SacralGapHeightsMillimetres']} mm)"
        )
    return again, split, facts


def _continued(points_mm: np.ndarray, normals: np.ndarray, caudal_mm: float, cranial_mm: float):
    """A curve (1 mm apart, caudal to cranial) and its normals continued straight on beyond
    both ends, along its direction over the last 10 mm there."""

    def straight_on(end: int, inner: int, length_mm: float) -> np.ndarray:
        direction = points_mm[end] - points_mm[inner]
        steps = np.arange(1.0, length_mm + 1.0)[:, None]
        return points_mm[end] + steps * direction / np.linalg.norm(direction)

    last = len(points_mm) - 1
    below = straight_on(0, min(10, last), caudal_mm)[::-1]
    above = straight_on(last, max(last - 10, 0), cranial_mm)
    points = np.vstack([below, points_mm, above])
    normals = np.vstack([np.repeat(normals[:1], len(below), axis=0), normals,
                         np.repeat(normals[-1:], len(above), axis=0)])  # fmt: skip
    return points, normals


def learned_pieces(points_mm: np.ndarray, normals: np.ndarray, probabilities: np.ndarray,
                   spacing_mm, *, settings: SegmentSettings = DEFAULTS):  # fmt: skip
    """The bones of the learned segmentation (``learned.plane_probabilities``) in front of the
    curve ``points_mm`` (1 mm apart, caudal to cranial, ``normals`` pointing anterior): a
    piece map of the plane (0 none) and, caudal to cranial along the curve, the pieces'
    numbers and whether each is sacrum. Each connected piece of body or sacrum is placed by
    the curve's row its pixels project to (median); behind the curve (the posterior
    elements) or beyond its ends it is left out. The sacrum is its largest piece with every
    bone below it (the lower sacral segments and the coccyx, which may be taken for bodies)
    and every piece of sacrum above it."""
    classes = probabilities.argmax(axis=0)
    tree = cKDTree(points_mm)
    pieces = np.zeros(classes.shape, np.int32)
    found = []  # (median row, number, is sacrum, size)
    for name in ("body", "sacrum"):
        parts, n = ndimage.label(classes == learned.CLASSES.index(name))
        for index in range(1, n + 1):
            where = np.argwhere(parts == index)
            pixels_mm = where * np.asarray(spacing_mm)
            _, nearest = tree.query(pixels_mm)
            depth = np.einsum("ij,ij->i", pixels_mm - points_mm[nearest], normals[nearest])
            ends = (nearest == 0) | (nearest == len(points_mm) - 1)
            inside = (depth > 0) & (depth < settings.column_depth_mm) & ~ends
            if inside.sum() * np.prod(spacing_mm) < settings.learned_min_part_mm2:
                continue
            number = len(found) + 1
            pieces[tuple(where[inside].T)] = number
            row = float(np.median(nearest[inside]))
            found.append((row, number, name == "sacrum", int(inside.sum())))
    found.sort()
    sacral = [f for f in found if f[2]]
    if not sacral:
        return pieces, [f[1] for f in found], [False] * len(found)
    largest = max(sacral, key=lambda f: f[3])
    top = max(k for k, f in enumerate(found) if f[2] and f[0] >= largest[0])
    for _, number, _, _ in found[: top + 1]:
        pieces[pieces == number] = largest[1]
    order = [largest[1]] + [f[1] for f in found[top + 1 :]]
    return pieces, order, [True] + [False] * (len(order) - 1)


def _learned_plane_labels(classes, pieces, order, labelling: Labelling, spacing_mm):
    """Label image of the plane: piece order[k] as body k, and each disc piece that touches two
    consecutive bodies, grown by 2 mm up to them (the network's 2 mm pixels leave a rim between
    its disc and its bodies), as the gap between them."""
    labels = np.zeros(pieces.shape, np.int16)
    rank = {number: k for k, number in enumerate(order)}
    for number, k in rank.items():
        labels[pieces == number] = labelling.body_values[k]
    discs, n = ndimage.label(classes == learned.CLASSES.index("disc"))
    reach = np.maximum(np.rint(2.0 / np.asarray(spacing_mm)).astype(int), 1)
    structure = np.ones(2 * reach + 1, bool)
    for index in range(1, n + 1):
        disc = ndimage.binary_dilation(discs == index, structure)
        ranks = sorted(rank[t] for t in np.unique(pieces[disc]) if t in rank)
        if len(ranks) == 2 and ranks[1] == ranks[0] + 1 and labelling.gap_values[ranks[0]]:
            labels[disc & (labels == 0)] = labelling.gap_values[ranks[0]]
    return labels


def _disc_shape(mask: np.ndarray, spacing_mm) -> tuple[float, float]:
    """Mean height (area over AP length, mm) and forward tilt (degrees, as ``_tilt_deg``) of a
    disc's mask in the plane, from its principal axes; NaN without one."""
    points = np.argwhere(mask) * np.asarray(spacing_mm)
    if len(points) < 10:
        return float("nan"), float("nan")
    centred = points - points.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    ap, up = axes[0], axes[1] * np.sign(axes[1][1] or 1.0)
    length = np.ptp(centred @ ap) + float(np.mean(spacing_mm))
    height = len(points) * float(np.prod(spacing_mm)) / length
    return float(height), float(np.degrees(np.arctan2(up[0], up[1])))


def _learned_bodies(
    volume: Volume,
    plane: np.ndarray,
    probabilities: np.ndarray,
    *,
    settings: SegmentSettings = DEFAULTS,
):
    """Labels from the learned segmentation, where the marrow does not give the bodies (a
    contrast whose marrow the column's likeness does not tell from discs, bodies merged across
    thin dark discs) and to check the marrow's count (``cross_check``): its own pieces
    (``learned_pieces``) in front of its own thecal sac (the column along the sac's front wall,
    as the canal's), named up from its sacrum. The sacrum's cues must agree: the disc above it
    (its mask's shape, ``_disc_shape``) must have a disc's height, and the spine must bend most
    there (``_bend_problem``); otherwise no level is labelled, and the error says why.
    ``probabilities``: the network's on the plane (``learned.plane_probabilities``)."""
    spacing = volume.plane_spacing_mm
    classes = probabilities.argmax(axis=0)
    sacs, n = ndimage.label(classes == learned.CLASSES.index("csf"))
    if not n:
        raise ValueError("no thecal sac")
    sac = sacs == 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(sacs), sacs, range(1, n + 1))))
    curve = _continued(
        *front_curve(sac, spacing), settings.sacral_extension_mm, settings.cranial_extension_mm
    )
    pieces, order, sacral = learned_pieces(*curve, probabilities, spacing, settings=settings)

    if not sacral or not sacral[0] or len(order) < 3:
        bones = f"{len(order)} bones in front of the canal"
        raise ValueError(f"no sacrum with two bodies above it ({bones})")
    provisional = provisional_labelling(len(order))
    labels2d = _learned_plane_labels(classes, pieces, order, provisional, spacing)
    shapes = [_disc_shape(labels2d == value, spacing) for value in provisional.gap_values[:3]]
    heights = [round(h, 2) for h, _ in shapes]
    tilts = [t for _, t in shapes]
    facts = {
        "SacralGapHeightsMillimetres": heights,
        "GapTiltsDegrees": [round(t, 1) if np.isfinite(t) else None for t in tilts],
    }
    if not settings.min_disc_mm <= heights[0] <= settings.max_disc_mm:
        raise ValueError(f"the disc above its sacrum has no disc's height (heights {heights} mm, "
                         "caudal to cranial)")  # fmt: skip
    problem = _bend_problem(tilts, 0, settings=settings)
    if problem:
        raise ValueError(f"{problem} (heights {heights} mm, caudal to cranial)")
    labelling, names = anatomical_labelling(len(order), 0)
    labels2d = _learned_plane_labels(classes, pieces, order, labelling, spacing)
    return labels2d, names, facts


def _centroid_mm(labels2d: np.ndarray, value: int, spacing_mm) -> np.ndarray | None:
    where = np.argwhere(labels2d == value)
    return where.mean(axis=0) * np.asarray(spacing_mm) if len(where) else None


def cross_check(volume: Volume, midline, plane: np.ndarray, labels2d: np.ndarray,
                probabilities: np.ndarray, *,
                settings: SegmentSettings = DEFAULTS) -> str:  # fmt: skip
    """The marrow's count (``labels2d``, on the plane at ``midline``) checked against the
    learned segmentation's (``_learned_bodies`` from the network's ``probabilities``), an
    independent cue (``compare_counts``). Returns "agrees", or why the check could not be made
    (the marrow's labels then stand on its own cues); raises ValueError where the two counts
    disagree."""
    try:
        learned_labels, _, _ = _learned_bodies(volume, plane, probabilities, settings=settings)
    except ValueError as problem:
        return f"not made: {problem}"
    return compare_counts(volume, midline, labels2d, learned_labels, settings=settings)


# the network's sacrum in front of the canal below S1's cranial endplate: a fifth of a body's
# mid-sagittal area (about 25 x 30 mm); a sacrum cut a few millimetres below S1's top still
# gives some 300 mm2 on a real 1.5 T exam, specks at a lumbar body's edge under 50
MIN_SACRUM_MM2 = 150.0


def sacrum_seen(column: Column, top: int, probabilities, spacing_mm) -> str:
    """The sacrum below S1's cranial endplate (row ``top`` of the column) as the network sees
    it (``probabilities``): its sacrum must cover MIN_SACRUM_MM2 in front of the canal there,
    else ValueError (the body taken for S1 may be a lumbar one at the field of view's caudal
    edge: L5 ending at the edge and S1 running on into the sacrum look alike along the column,
    and the marrow joins runs across dark discs). Returns the area found, for the sidecar."""
    depth = column.depth_mm[None, :, None] * column.normals[:top, None, :]
    grid = (column.points_mm[:top, None, :] + depth).reshape(-1, 2)
    sacrum = probabilities.argmax(axis=0) == learned.CLASSES.index("sacrum")
    cell_mm2 = 1.0 * (column.depth_mm[1] - column.depth_mm[0])  # rows 1 mm apart
    area_mm2 = float(np.sum(sample(sacrum.astype(float), spacing_mm, grid) >= 0.5)) * cell_mm2
    if area_mm2 < MIN_SACRUM_MM2:
        raise ValueError(
            "levels not labelled: the sacrum is not seen: below the cranial endplate of the "
            f"body taken for S1 the learned segmentation finds {area_mm2:.0f} mm2 of sacrum "
            "(the lowest body in view may be a lumbar one)"
        )
    return f"{area_mm2:.0f} mm2 of sacrum below S1's cranial endplate"


def compare_counts(
    volume: Volume, midline, marrow_labels, learned_labels, *, settings: SegmentSettings = DEFAULTS
) -> str:
    """Where the network names its own L5-S1, that disc must lie within half a level (half the
    distance from the marrow's L5-S1 to its L4-L5) of the marrow's L5-S1, or no level is
    labelled (ValueError: the count would be one cue's guess). A network's L5-S1 elsewhere that
    the image, measured like any gap (``discs.locate_gap``), does not show as a disc (a fused
    sacral junction, which the network's mask can make look like one) checks nothing."""
    spacing = volume.plane_spacing_mm
    learned_l5s1 = _centroid_mm(learned_labels, disc_label("L5"), spacing)
    l5s1, l4l5 = (_centroid_mm(marrow_labels, disc_label(upper), spacing) for upper in ("L5", "L4"))
    if learned_l5s1 is None or l5s1 is None or l4l5 is None:
        return "not made: L5-S1 or L4-L5 not labelled by one of the two"
    level_mm = float(np.linalg.norm(l4l5 - l5s1))
    off_mm = float(np.linalg.norm(learned_l5s1 - l5s1))
    if off_mm < level_mm / 2:
        return "agrees"
    plane = Plane(volume, extrude(learned_labels, midline, volume.data.shape), midline)
    height_mm = float(locate_gap(plane, disc_label("L5"), VERTEBRA_LABELS["L5"]).height_mm)
    if not settings.min_disc_mm <= height_mm <= settings.max_disc_mm:
        return (
            f"not made: the network's L5-S1, {off_mm:.0f} mm from the marrow's, is no disc in "
            f"the image (its gap {height_mm:.1f} mm high)"
        )
    raise ValueError(
        "levels not labelled: the marrow's count and the learned segmentation's disagree "
        f"(the network's L5-S1 lies {off_mm:.0f} mm from the marrow's, "
        f"{off_mm / level_mm:.1f} levels, and the image shows a disc of {height_mm:.1f} mm there)"
    )


def _disc_hidden_below(
    volume: Volume,
    midline,
    column: Column,
    runs,
    anchor: int,
    facts: dict,
    *,
    settings: SegmentSettings = DEFAULTS,
):
    """The anchor, runs and facts, checked for a disc hidden in the run below the chosen gap
    (``_disc_inside``): a degenerated L5-S1 as bright as the marrow, but for its thin endplates,
    leaves S1 and L5 one run, and L4-L5 above them is then the lowest gap found. Split there and
    measured like the others, a hidden gap of a disc's height is the lowest one: the anchor is
    sought again on the split runs and must land on it, or no level is labelled. A hidden gap
    thinner than a disc (a sacral remnant, the basivertebral vein) or not located changes
    nothing."""
    start, stop = runs[anchor]
    tall = stop - start >= 2 * settings.min_body_mm
    hidden = _disc_inside(column.likeness, start, stop, settings=settings) if tall else None
    if hidden is None:
        return anchor, runs, facts
    split = [*runs[:anchor], (start, hidden[0]), (hidden[1], stop), *runs[anchor + 1 :]]
    # the hidden gap alone first: the whole search again only where it has a disc's height
    plane, labelling = _provisional_plane(volume, midline, column, split, settings=settings)
    height_mm = float(_located_gap(plane, labelling, anchor).height_mm)
    if not settings.min_disc_mm <= height_mm <= settings.max_disc_mm:
        return anchor, runs, facts
    again, split_facts = find_anchor(volume, midline, column, split, settings=settings)
    if again != anchor:
        problem = split_facts.get("AnchorProblem", "the chosen gap is another")
        raise ValueError(f"levels not labelled: a gap of a disc's height ({height_mm:.2f} mm) "
                         f"hides in the body below the lowest one found: {problem}")  # fmt: skip
    return again, split, split_facts


def _midsagittal(
    volume: Volume, canal, *, settings: SegmentSettings = DEFAULTS
) -> tuple[np.ndarray, float, str]:
    """The mid-sagittal surface, its scatter and what gave it: the canal's centre row by row,
    or, where that scatters beyond ``max_midline_scatter_mm`` (fat as bright as the CSF beside the
    canal), the spine's left-right symmetry (``symmetric_midline``) where that holds."""
    midline, scatter_mm = midline_and_scatter(volume, canal)
    if scatter_mm <= settings.max_midline_scatter_mm:
        return midline, scatter_mm, "canal"
    canal_problem = (
        f"the mid-sagittal plane cannot be told: the canal's centre scatters by {scatter_mm:.1f} "
        f"mm across the slices from row to row (at most {settings.max_midline_scatter_mm} mm; "
        f"tissue as bright as the canal beside it?)"
    )
    try:
        symmetric, symmetric_scatter_mm = symmetric_midline(volume, canal)
    except ValueError as problem:
        raise ValueError(f"{canal_problem}, and {problem}") from problem
    if symmetric_scatter_mm <= settings.max_midline_scatter_mm:
        return symmetric, symmetric_scatter_mm, "symmetry"
    raise ValueError(f"{canal_problem}, and the spine's symmetry by {symmetric_scatter_mm:.1f} mm")


def _marrow_labels(
    volume: Volume,
    midline,
    plane: np.ndarray,
    column: Column,
    probabilities,
    *,
    settings: SegmentSettings = DEFAULTS,
):
    """The plane's labels from the marrow's body runs along the column, named up from L5-S1
    (``_anchor_with_bodies_split``) once the network sees the sacrum below S1's cranial
    endplate (``sacrum_seen``), the names found and what was measured."""
    anchor, runs, facts = _anchor_with_bodies_split(volume, midline, column, settings=settings)
    spacing = volume.plane_spacing_mm
    facts["LearnedSacrum"] = sacrum_seen(column, runs[anchor][1], probabilities, spacing)
    labelling, names = anatomical_labelling(len(runs), anchor)
    # S1's label: its cranial part only, the rest of the run may be further sacrum
    runs[anchor] = (max(runs[anchor][0], runs[anchor][1] - settings.s1_label_mm), runs[anchor][1])
    straight = column_labels(column, runs, labelling, settings=settings)
    return plane_labels(plane.shape, spacing, column, straight, settings=settings), names, facts


# the thecal sac's median signal over the vertebral bodies', as the network (trained on every
# contrast) finds them on the plane: 1.6-3.1 on real T2 exams, 4.3-4.9 on fat-suppressed PD
# phantoms, 0.6 on a real T1 whose header called it a T2; each over at least this area
POLARITY_MIN_AREA_MM2 = 500.0
BRIGHTNESS = {1: "bright", -1: "dark"}


def canal_polarity_seen(plane: np.ndarray, spacing_mm, probabilities) -> int | None:
    """The canal's brightness on the image (+1 brighter than the bodies, -1 darker), from the
    network's classes; None where it finds too little of either."""
    classes = probabilities.argmax(axis=0)
    cell_mm2 = float(np.prod(spacing_mm))
    sac, bodies = (plane[classes == learned.CLASSES.index(name)] for name in ("csf", "body"))
    if min(sac.size, bodies.size) * cell_mm2 < POLARITY_MIN_AREA_MM2:
        return None
    return 1 if np.median(sac) > np.median(bodies) else -1


class MidsagittalPlane(NamedTuple):
    """The canal (``canal_projection``), the mid-sagittal surface through it and how it was
    found, the plane along it and the network's class probabilities there."""

    canal: Canal
    midline: np.ndarray
    scatter_mm: float
    midline_from: str
    plane: np.ndarray
    probabilities: np.ndarray


def _midsagittal_plane(
    volume: Volume, canal_polarity: int, *, settings: SegmentSettings = DEFAULTS
) -> MidsagittalPlane:
    canal = canal_projection(volume, canal_polarity)
    midline, scatter_mm, midline_from = _midsagittal(volume, canal, settings=settings)
    plane = plane_at(volume, midline)
    probabilities = learned.plane_probabilities(plane, volume.plane_spacing_mm)
    return MidsagittalPlane(canal, midline, scatter_mm, midline_from, plane, probabilities)


def segment_volume(volume: Volume, half_width_slices: int = 1, canal_polarity: int = 1, *,
                   settings: SegmentSettings = DEFAULTS) -> tuple[np.ndarray, dict]:  # fmt: skip
    """3D label map (labels in the slices around the mid-sagittal surface) and facts about it,
    the mid-sagittal surface among them (``MIDSAGITTAL_SURFACE``: the measurement uses the
    same). ``canal_polarity``: +1 a bright canal (fluid-sensitive), -1 a dark one (T1), as the
    series' timing says. A header can be wrong: where the levels cannot be labelled so, they
    are sought with the canal the other way if the image shows it so on the plane that gives
    (``canal_polarity_seen``)."""
    try:
        found = _midsagittal_plane(volume, canal_polarity, settings=settings)
        seg, facts = _labelled_volume(volume, found, half_width_slices, settings=settings)
        return seg, {**facts, "CanalBrightnessFrom": "the series' timing"}
    except ValueError as timing_problem:
        other = -canal_polarity
        try:
            found = _midsagittal_plane(volume, other, settings=settings)
        except ValueError:
            raise timing_problem from None
        if canal_polarity_seen(found.plane, volume.plane_spacing_mm, found.probabilities) != other:
            raise
        try:
            seg, facts = _labelled_volume(volume, found, half_width_slices, settings=settings)
        except ValueError as image_problem:
            raise ValueError(
                f"{timing_problem}; with the canal {BRIGHTNESS[other]}, as the image shows it: "
                f"{image_problem}"
            ) from image_problem
    timing = BRIGHTNESS[canal_polarity]
    return seg, {**facts, "CanalBrightnessFrom": f"the image (the series' timing: {timing})"}


def _labelled_volume(
    volume: Volume,
    found: MidsagittalPlane,
    half_width_slices: int,
    *,
    settings: SegmentSettings = DEFAULTS,
):
    """``segment_volume`` along one mid-sagittal plane (``_midsagittal_plane``)."""
    canal, midline, scatter_mm, midline_from, plane, probabilities = found
    spacing = volume.plane_spacing_mm
    column = straighten(plane, spacing, canal, settings=settings)
    try:
        labels2d, names, anchor_facts = _marrow_labels(
            volume, midline, plane, column, probabilities, settings=settings
        )
    except ValueError as marrow_problem:
        try:
            labels2d, names, anchor_facts = _learned_bodies(
                volume, plane, probabilities, settings=settings
            )
        except ValueError as learned_problem:
            raise ValueError(
                f"{marrow_problem}; with the learned segmentation: {learned_problem}"
            ) from learned_problem
        bodies_from = "learned segmentation"
    else:
        bodies_from = "marrow"
        check = cross_check(volume, midline, plane, labels2d, probabilities, settings=settings)
        anchor_facts["LearnedCrossCheck"] = check
    seg = extrude(labels2d, midline, volume.data.shape, half_width_slices)
    facts = {
        "MidsagittalSliceIndex": float(np.mean(midline)),
        MIDSAGITTAL_SURFACE: np.round(midline, 3).tolist(),
        "CanalBrightness": BRIGHTNESS[canal.polarity],
        "MidsagittalScatterMillimetres": round(scatter_mm, 2),
        "MidsagittalFrom": midline_from,
        "LevelsFound": names,
        "BodiesFrom": bodies_from,
        **anchor_facts,
    }
    return seg, facts


def write_dseg(seg: np.ndarray, volume: Volume, reference_path, out_path) -> None:
    """Write labels on the reference image's grid (undo the canonical reorientation)."""
    reference = nib.load(str(reference_path))
    canonical = nib.Nifti1Image(seg, volume.affine)
    ornt = nib.orientations.io_orientation(reference.affine)
    canonical_ornt = nib.orientations.io_orientation(volume.affine)
    transform = nib.orientations.ornt_transform(canonical_ornt, ornt)
    data = nib.orientations.apply_orientation(np.asarray(canonical.dataobj), transform)
    image = nib.Nifti1Image(data.astype(np.int16), reference.affine, reference.header)
    image.set_data_dtype(np.int16)
    image.header["descrip"] = b"spineflow dseg"
    nib.save(image, str(out_path))


def from_external(
    volume: Volume, path, scheme_spec, *, settings: SegmentSettings = DEFAULTS
) -> tuple[np.ndarray, dict]:
    """Another tool's label map of this session in spineflow's values, on the image's grid.

    The map is read in its own orientation and resolution and sampled at the image's voxel
    centres (nearest neighbour, in scanner coordinates); its values are translated with a
    label scheme (``anatomy.scheme``: "spineps", "totalspineseg", "spineflow" or a mapping)."""
    mapping = scheme(scheme_spec)
    image = nib.load(str(path))
    source = np.asarray(image.dataobj)
    if source.ndim != 3:
        raise ValueError(f"{path}: expected a 3D label map, got shape {source.shape}")
    target = np.indices(volume.data.shape).reshape(3, -1).T
    world = nib.affines.apply_affine(volume.affine, target)
    index = np.rint(nib.affines.apply_affine(np.linalg.inv(image.affine), world)).astype(int)
    inside = np.all((index >= 0) & (index < np.array(source.shape)), axis=1)
    sampled = np.zeros(len(index), source.dtype)
    sampled[inside] = source[tuple(index[inside].T)]
    labels, whole_sacrum = to_spineflow(sampled.reshape(volume.data.shape), mapping)
    if not labels.any():
        raise ValueError(
            f"{path}: no vertebra or disc of the label scheme on the image "
            f"(values found: {sorted(np.unique(source).tolist())[:20]})"
        )
    names = {value: name for value, name in lookup_table()}
    found = [names[v] for v in sorted(np.unique(labels)) if v in names]
    labels, filled = structures.complete(labels, volume.spacing_mm, settings=settings)
    return labels, {
        "LabelScheme": scheme_spec if isinstance(scheme_spec, str) else "custom",
        "WholeSacrumLabel": whole_sacrum,
        "LevelsFound": found,
        "StructuresFilledIn": filled,
    }
