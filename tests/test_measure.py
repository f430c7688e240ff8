"""Geometry on analytic label maps whose answer is known exactly.

A straight stack of rectangular vertebral bodies (flat endplates) separated by discs of known
heights, with a bright canal behind them, rendered with partial volume (16 x 16 in-plane
supersampling of the analytic shapes) on a 3.3 x 1.09375 x 1.09375 mm grid, canonical RAS
[x, y, z]. Labels come from the same analytic shapes. Truth: disc height = gap between the
bodies, disc width = body depth + 2 bulges, intervertebral distance = body height.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from spineflow.core.anatomy import LEVELS, VERTEBRA_LABELS, disc_label
from spineflow.core.midsagittal import Volume
from spineflow.core.plane import CENTRAL_SHARE, Band, Plane
from spineflow.measure import qc
from spineflow.measure.distance import intervertebral_distance
from spineflow.measure.endplate import UNFITTED, pooled_band, refine_disc
from spineflow.measure.session import (
    LATERAL_DIFFERENCE,
    _height_placed,
    _located_discs,
    cortex_fit,
    measure_session,
)
from spineflow.measure.settings import DEFAULTS

GRID_MM = DEFAULTS.cortex_grid_mm
SPACING = (3.3, 1.09375, 1.09375)
SHAPE = (7, 160, 200)
SUPERSAMPLE = 16
HEIGHT_TOLERANCE_MM = 0.1  # issue 3: |bias| <= 0.1 mm, SD <= 0.15 mm per disc
DISTANCE_TOLERANCE_MM = 0.1
WIDTH_TOLERANCE_MM = 0.25

MARROW, DISC, CANAL, CORTEX = 0.36, 0.17, 1.0, 0.0
LIGAMENT, ANTERIOR, POSTERIOR = 0.05, 0.45, 0.3
DEPTH_MM = 34.0  # AP extent of every body; posterior walls at a = 0
BULGE_MM = 1.0
CANAL_AP_MM = 15.0
CANAL_LR_MM = 20.0
CANAL_CENTRE_X_MM = 3.3 * SPACING[0]  # the midline is not the middle slice

# (name, height) from the bottom of the stack up; discs between them: (upper, height)
BODIES = [("S2", 36.0), ("S1", 25.0), ("L5", 24.5), ("L4", 23.5), ("L3", 24.0), ("L2", 24.0)]
DISC_HEIGHTS = {"S1-S2": 5.0, "L5-S1": 11.0, "L4-L5": 9.5, "L3-L4": 8.5, "L2-L3": 8.0}
STACK_BOTTOM_S = -20.0
PIVOT_AS = np.array([17.0, 100.0])  # the stack point placed at PIVOT_YZ in the image
PIVOT_YZ = np.array([87.0, 108.0])


def _layout():
    """Stack-frame intervals (s_low, s_high) of bodies and discs, bottom to top."""
    bodies, discs = {}, {}
    s = STACK_BOTTOM_S
    for k, (name, height) in enumerate(BODIES):
        bodies[name] = (s, s + height)
        s += height
        if k + 1 < len(BODIES):
            level = f"{BODIES[k + 1][0]}-{name}"
            discs[level] = (s, s + DISC_HEIGHTS[level])
            s += DISC_HEIGHTS[level]
    discs["L1-L2"] = (s, s + 9.0)  # unlabelled disc and L1 above the labelled stack
    bodies["L1"] = (s + 9.0, 1e3)
    return bodies, discs


BODY_S, DISC_S = _layout()


def _to_stack(y, z, angle_deg):
    """Image (y, z) mm -> stack (a, s) mm; the stack's cranial axis is tilted anteriorly."""
    th = np.radians(angle_deg)
    dy, dz = y - PIVOT_YZ[0], z - PIVOT_YZ[1]
    a = dy * np.cos(th) - dz * np.sin(th)
    s = dy * np.sin(th) + dz * np.cos(th)
    return a + PIVOT_AS[0], s + PIVOT_AS[1]


def _tissue(a, s, cortex_mm=0.0, anterior=ANTERIOR):
    """Signal (canal at full LR coverage) and label at stack points; an optional dark cortical
    shell of cortex_mm lines each body (inside its outer surface, which stays the truth);
    ``anterior``: the signal of the tissue in front of the column."""
    value = np.where(a >= 0, anterior, POSTERIOR).astype(float)
    label = np.zeros(a.shape, np.int16)
    value = np.where((a >= -BULGE_MM) & (a < 0), LIGAMENT, value)
    value = np.where((a >= -BULGE_MM - CANAL_AP_MM) & (a < -BULGE_MM), CANAL, value)
    for name, (lo, hi) in BODY_S.items():
        inside = (a >= 0) & (a <= DEPTH_MM) & (s >= lo) & (s < hi)
        marrow = (a >= cortex_mm) & (a <= DEPTH_MM - cortex_mm)
        marrow &= (s >= lo + cortex_mm) & (s < hi - cortex_mm)
        value = np.where(inside, np.where(marrow, MARROW, CORTEX), value)
        if name in VERTEBRA_LABELS and name != "L1":
            label = np.where(inside, VERTEBRA_LABELS[name], label)
    for level, (lo, hi) in DISC_S.items():
        inside = (a >= -BULGE_MM) & (a <= DEPTH_MM + BULGE_MM) & (s >= lo) & (s < hi)
        value = np.where(inside, DISC, value)
        if level != "L1-L2":
            label = np.where(inside, disc_label(level.split("-")[0]), label)
    return value, label


def _canal_lr_share() -> np.ndarray:
    """Share of each 3.3 mm slice's thickness inside the canal's LR extent."""
    x = np.arange(SHAPE[0]) * SPACING[0]
    lo = np.maximum(x - SPACING[0] / 2, CANAL_CENTRE_X_MM - CANAL_LR_MM / 2)
    hi = np.minimum(x + SPACING[0] / 2, CANAL_CENTRE_X_MM + CANAL_LR_MM / 2)
    return np.clip(hi - lo, 0, None) / SPACING[0]


def phantom(
    angle_deg: float = 0.0, n_z: int = SHAPE[2], cortex_mm: float = 0.0, anterior=ANTERIOR
) -> tuple[Volume, np.ndarray]:
    _, ny, nz = SHAPE
    dy, dz = SPACING[1:]
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    yy = (np.arange(ny)[:, None] + sub[None, :]).ravel() * dy
    zz = (np.arange(nz)[:, None] + sub[None, :]).ravel() * dz
    a, s = _to_stack(*np.meshgrid(yy, zz, indexing="ij"), angle_deg)
    value, _ = _tissue(a, s, cortex_mm, anterior)
    midline = value.reshape(ny, SUPERSAMPLE, nz, SUPERSAMPLE).mean(axis=(1, 3))
    lateral = np.where(value == CANAL, POSTERIOR, value)
    lateral = lateral.reshape(ny, SUPERSAMPLE, nz, SUPERSAMPLE).mean(axis=(1, 3))
    share = _canal_lr_share()[:, None, None]
    data = (share * midline + (1 - share) * lateral).astype(np.float32)
    a_c, s_c = _to_stack(
        *np.meshgrid(np.arange(ny) * dy, np.arange(nz) * dz, indexing="ij"), angle_deg
    )
    _, labels2d = _tissue(a_c, s_c)
    labels = np.broadcast_to(labels2d, SHAPE).copy()
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-10.0, -80.0, -60.0)
    volume = Volume(data[:, :, :n_z].copy(), affine, SPACING)
    return volume, labels[:, :, :n_z].copy()


def _z_of(s: float) -> float:
    """Image z (mm) of stack height s on the untilted phantom."""
    return s - PIVOT_AS[1] + PIVOT_YZ[1]


def _measure(angle_deg=0.0, n_z=SHAPE[2], cortex_mm=0.0):
    # the pipeline estimates the cortical thickness itself (config endplate_cortex_mm: auto)
    discs, vertebrae, _ = measure_session(*phantom(angle_deg, n_z, cortex_mm), cortex_mm="auto")
    return discs.set_index("level"), vertebrae.set_index("vertebra")


def test_phantom_is_what_the_tests_assume():
    volume, labels = phantom()
    assert volume.data.shape == SHAPE == labels.shape
    mid = volume.data[3]
    j_body = int((PIVOT_YZ[0] + 17.0 - PIVOT_AS[0]) / SPACING[1])  # a = 17 mm
    k_l4 = int(_z_of(sum(BODY_S["L4"]) / 2) / SPACING[2])
    assert mid[j_body, k_l4] == pytest.approx(MARROW)
    assert labels[3, j_body, k_l4] == VERTEBRA_LABELS["L4"]
    k_disc = int(_z_of(sum(DISC_S["L4-L5"]) / 2) / SPACING[2])
    assert mid[j_body, k_disc] == pytest.approx(DISC)
    assert labels[3, j_body, k_disc] == disc_label("L4")
    # the canal is bright only in the central slices (it is 20 mm wide)
    j_canal = int((PIVOT_YZ[0] - PIVOT_AS[0] - 8.0) / SPACING[1])
    assert volume.data[3, j_canal, k_l4] > 0.9 > 0.6 > volume.data[0, j_canal, k_l4]


_RESULTS: dict = {}


def _cached(angle_deg: float, cortex_mm: float):
    key = (angle_deg, cortex_mm)
    if key not in _RESULTS:
        _RESULTS[key] = _measure(angle_deg, cortex_mm=cortex_mm)
    return _RESULTS[key]


def _check_all(discs, vertebrae):
    for level in ("L3-L4", "L4-L5", "L5-S1"):
        row = discs.loc[level]
        assert row["status"] == "ok", (level, row["note"])
        assert row["width_mm"] == pytest.approx(DEPTH_MM + 2 * BULGE_MM, abs=WIDTH_TOLERANCE_MM), (
            level
        )
    for name in ("L3", "L4", "L5", "S1"):
        assert vertebrae.loc[name, "status"] == "ok", (name, vertebrae.loc[name, "note"])
    heights = discs.loc[["L3-L4", "L4-L5", "L5-S1"], "height_mm"]
    height_errors = heights - heights.index.map(DISC_HEIGHTS)
    distances = vertebrae.loc[["L3", "L4", "L5", "S1"], "intervertebral_distance_mm"]
    distance_errors = distances - [BODY_S[n][1] - BODY_S[n][0] for n in distances.index]
    assert np.all(np.abs(height_errors) < HEIGHT_TOLERANCE_MM), (
        f"disc height errors (mm):\n{height_errors}"
    )
    assert np.all(np.abs(distance_errors) < DISTANCE_TOLERANCE_MM), (
        f"distance errors:\n{distance_errors}"
    )


# cortex 0: no cortical shell; 0.5 mm: a signal-free cortical shell whose thickness the
# pipeline estimates from the endplates themselves
CORTICES = pytest.mark.parametrize("cortex_mm", [0.0, 0.5], ids=["no_cortex", "cortex_0.5"])
# "Straight" is 2 degrees off the pixel grid: on a noise-free edge lying exactly along the grid
# every pixel row has the same sub-pixel phase and a thin cortex cannot be told from a shifted
# edge; any real endplate (curved, tilted, noisy) samples many phases.
STRAIGHT_DEG, TILTED_DEG = 2.0, 20.0


def test_grid_aligned_stack_without_cortex_matches_the_truth():
    _check_all(*_cached(0.0, 0.0))


@CORTICES
def test_straight_stack_measures_match_the_truth(cortex_mm):
    _check_all(*_cached(STRAIGHT_DEG, cortex_mm))


@CORTICES
def test_tilted_stack_measures_match_the_truth(cortex_mm):
    _check_all(*_cached(TILTED_DEG, cortex_mm))


@CORTICES
def test_tilt_does_not_change_the_answers(cortex_mm):
    straight, tilted = _cached(STRAIGHT_DEG, cortex_mm), _cached(TILTED_DEG, cortex_mm)
    for table, column, tolerance in (
        (0, "height_mm", HEIGHT_TOLERANCE_MM),
        (1, "intervertebral_distance_mm", DISTANCE_TOLERANCE_MM),
    ):
        a, b = straight[table][column], tilted[table][column]
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
        assert np.all(np.abs(a - b) < tolerance), f"straight - tilted:\n{a - b}"
    widths = straight[0]["width_mm"] - tilted[0]["width_mm"]
    assert np.all(np.abs(widths) < WIDTH_TOLERANCE_MM)


def _misfit_record(best_mm: float, curvature: float, endplates: int = 6,
                   band_gain: float = 0.0, runaway: tuple = ()) -> dict:  # fmt: skip
    """A session's cortex fit whose endplates together have their least misfit at ``best_mm``
    with bone alone; each band with signal fits each endplate ``band_gain`` better; the
    endplates in ``runaway`` ran away with any band with signal."""
    per_endplate = (curvature * (np.asarray(GRID_MM) - best_mm) ** 2 + 10.0) / max(endplates, 1)
    curves = []
    for k in range(endplates):
        rows = [per_endplate] + [per_endplate - band_gain] * (len(DEFAULTS.band_share_grid) - 1)
        rows = [rows[0]] + [[None] * len(GRID_MM)] * (len(rows) - 1) if k in runaway else rows
        curves.append(np.array(rows, dtype=object).tolist())
    return {"GridMillimetres": list(GRID_MM), "BandShares": list(DEFAULTS.band_share_grid),
            "EndplateMisfits": curves, "Endplates": endplates}  # fmt: skip


def test_pooled_cortex_is_the_minimum_of_the_sessions_summed_misfits():
    """The sharper a session's misfit curve (more or cleaner endplates), the more it counts."""
    equal = pooled_band([_misfit_record(0.4, 100.0), _misfit_record(0.6, 100.0)])
    assert equal == (Band(pytest.approx(0.5, abs=1e-6), 0.0), 12, 2)
    weighted, *_ = pooled_band([_misfit_record(0.4, 300.0), _misfit_record(0.6, 100.0)])
    assert weighted.thickness_mm == pytest.approx(0.45, abs=1e-6)
    no_endplates = _misfit_record(1.0, 0.0, endplates=0)
    assert pooled_band([_misfit_record(0.3, 50.0), no_endplates])[0].thickness_mm == (
        pytest.approx(0.3)
    )
    assert np.isnan(pooled_band([no_endplates])[0].thickness_mm)
    other_grid = {**_misfit_record(0.3, 50.0), "GridMillimetres": [0.0, 0.5, 1.0]}
    with pytest.raises(ValueError, match="another candidate grid"):
        pooled_band([other_grid])


def test_a_band_with_signal_needs_each_endplate_to_reject_bone_alone():
    """A band with signal is taken where it beats bone alone by the evidence per endplate,
    judged on the endplates fitted with it; a band that ran away on one endplate does not
    count that endplate."""
    strong = DEFAULTS.band_evidence_per_endplate + 3.0
    band, n_endplates, _ = pooled_band([_misfit_record(0.4, 100.0, band_gain=strong)])
    assert (
        band.share == DEFAULTS.band_share_grid[1] and n_endplates == 6
    )  # the first of equal gains
    weak = DEFAULTS.band_evidence_per_endplate - 3.0
    assert pooled_band([_misfit_record(0.4, 100.0, band_gain=weak)])[0] == Band(
        pytest.approx(0.4, abs=1e-6), 0.0
    )
    band, n_endplates, _ = pooled_band(
        [_misfit_record(0.4, 100.0, band_gain=strong, runaway=(0, 1))]
    )
    assert band.share > 0 and n_endplates == 4


def test_both_sessions_of_a_participant_are_measured_with_their_pooled_cortex():
    """Two poses of one spine (2 and 20 degrees): each session is measured with the cortex
    their endplates explain best together, and its heights stay true."""
    sessions = [phantom(angle, SHAPE[2], 0.5) for angle in (STRAIGHT_DEG, TILTED_DEG)]
    fits = [cortex_fit(volume, labels) for volume, labels in sessions]
    pooled = pooled_band(fits)[0].thickness_mm
    own = [pooled_band([fit])[0].thickness_mm for fit in fits]
    assert min(own) <= pooled <= max(own)
    for volume, labels in sessions:
        discs, vertebrae, facts = measure_session(volume, labels, "auto", cortex_fits=fits)
        assert facts["CortexMillimetres"] == pytest.approx(pooled)
        assert facts["SessionsForCortex"] == 2
        _check_all(discs.set_index("level"), vertebrae.set_index("vertebra"))


def test_top_cutting_l3_body_marks_l3_not_in_fov():
    top_s = (BODY_S["L3"][0] + BODY_S["L3"][1]) / 2 + 3.0
    discs, vertebrae = _measure(0.0, n_z=int(_z_of(top_s) / SPACING[2]))
    assert vertebrae.loc["L3", "status"] == "not_in_fov"
    assert np.isnan(vertebrae.loc["L3", "intervertebral_distance_mm"])
    assert discs.loc["L3-L4", "status"] == "ok", discs.loc["L3-L4", "note"]
    whole = _cached(0.0, 0.0)
    # the disc below is measured as in the whole image (its profiles stay inside the image)
    assert discs.loc["L3-L4", "height_mm"] == pytest.approx(
        whole[0].loc["L3-L4", "height_mm"], abs=0.05
    )
    assert vertebrae.loc["L4", "status"] == "ok"


def test_top_cutting_l3_l4_disc_marks_it_not_in_fov():
    top_s = (DISC_S["L3-L4"][0] + DISC_S["L3-L4"][1]) / 2
    discs, vertebrae = _measure(0.0, n_z=int(_z_of(top_s) / SPACING[2]))
    assert discs.loc["L3-L4", "status"] == "not_in_fov"
    assert np.isnan(discs.loc["L3-L4", "height_mm"])
    assert vertebrae.loc["L3", "status"] == "not_in_fov"
    assert discs.loc["L4-L5", "status"] == "ok"
    assert vertebrae.loc["L5", "status"] == "ok"


@pytest.mark.parametrize("cut_disc, vertebra", [("L2-L3", "L3"), ("L3-L4", "L4")])
def test_a_field_of_view_ending_in_a_disc_still_measures_the_vertebra_below_it(cut_disc, vertebra):
    """The field of view ends inside a disc: the disc is not measurable, but the cranial
    endplate of the vertebra below it is in view, and so its intervertebral distance
    (``locate_far_endplate``)."""
    top_s = (DISC_S[cut_disc][0] + DISC_S[cut_disc][1]) / 2
    _, vertebrae = _measure(0.0, n_z=int(_z_of(top_s) / SPACING[2]))
    whole = _cached(0.0, 0.0)[1]
    assert vertebrae.loc[vertebra, "status"] == "ok", vertebrae.loc[vertebra, "note"]
    assert vertebrae.loc[vertebra, "intervertebral_distance_mm"] == pytest.approx(
        whole.loc[vertebra, "intervertebral_distance_mm"], abs=DISTANCE_TOLERANCE_MM
    )


@pytest.mark.parametrize("end", ["anterior", "posterior"])
def test_a_disc_label_short_of_the_walls_is_measured_between_the_bodies_walls(end):
    """Every disc's label stops 10 mm short of one end (as where a T2's dark outer annulus is
    left out): beyond the reach of a search from the disc's end, its vertebrae's walls there
    are sought from their own labels, and each disc is measured whole."""
    volume, labels = phantom()
    _, ny, nz = SHAPE
    a, _ = _to_stack(*np.meshgrid(np.arange(ny) * SPACING[1], np.arange(nz) * SPACING[2],
                                  indexing="ij"), 0.0)  # fmt: skip
    cut = a > DEPTH_MM - 10.0 if end == "anterior" else a < 10.0
    labels[:, (labels[3] > 100) & cut] = 0
    discs, _, _ = measure_session(volume, labels, cortex_mm=0.0)
    whole = measure_session(*phantom(), cortex_mm=0.0)[0].set_index("level")
    for row in discs.set_index("level").loc[list(LEVELS)].itertuples():
        assert row.status == "ok", row.note
        assert row.height_mm == pytest.approx(whole.loc[row.Index, "height_mm"], abs=0.05)
        assert row.width_mm == pytest.approx(whole.loc[row.Index, "width_mm"], abs=0.1)


def test_a_disc_end_no_vertebral_wall_confirms_gives_no_width_and_no_height():
    """Tissue in front of the bodies as bright as their marrow: no anterior wall shows, the
    disc's front is only the label's, and so is the central 80 % height is averaged over."""
    volume, labels = phantom(anterior=MARROW)
    discs, _, facts = measure_session(volume, labels, cortex_mm=0.0)
    for row in discs.itertuples():
        assert row.status == "failed", row.note
        assert np.isnan(row.width_mm) and "anterior wall not found: no width" in row.note
        assert np.isnan(row.height_mm) and "the anterior end is not confirmed" in row.note
    assert all(record["status"] == "failed" for record in facts["Discs"])


def _refined_discs(plane: Plane, settings=DEFAULTS) -> dict:
    return {level: refine_disc(plane, disc, Band(0.0), settings=settings)
            if disc.status == "ok" else disc
            for level, disc in _located_discs(plane, settings=settings).items()}  # fmt: skip


def _guessed_into_the_disc(disc, mm: float):
    """The disc with its upper vertebra's marrow edge guessed ``mm`` into the disc."""
    return replace(disc, upper_coef=disc.upper_coef - np.eye(3)[-1] * mm)


def _bent_into_the_bone(disc, mm: float):
    """The disc with its upper vertebra's marrow edge guessed bent ``mm`` into the bone at the
    ends of its central 80 % (as a marrow edge's quadratic bends into a body's corners)."""
    coef = np.array(disc.upper_coef, float)
    coef[0] += mm / (CENTRAL_SHARE * max(-disc.u_post, disc.u_ant)) ** 2
    return replace(disc, upper_coef=coef)


@pytest.mark.parametrize("guessed", ["3 mm into the disc", "bent 2.5 mm into the bone"])
def test_an_endplate_guessed_off_its_surface_is_refitted_where_its_fit_went(guessed):
    """L4's caudal endplate first guessed 3 mm inside the disc, or bent 2.5 mm into the bone
    at its ends: the partial-volume fit runs to the true surface, past its 2 mm leash; fitted
    again in a window around it, it stays, and the height is the truth."""
    plane = Plane(*phantom(STRAIGHT_DEG))
    located = _located_discs(plane)["L4-L5"]
    start = (_guessed_into_the_disc(located, 3.0) if guessed.endswith("disc")
             else _bent_into_the_bone(located, 2.5))  # fmt: skip
    refined = _height_placed(refine_disc(plane, start, Band(0.0)))
    assert refined.unfitted == () and refined.status == "ok", refined.note
    assert refined.height_mm == pytest.approx(DISC_HEIGHTS["L4-L5"], abs=HEIGHT_TOLERANCE_MM)


def test_an_endplate_whose_fit_never_settles_gives_no_height_and_no_distance():
    """The same guess where no refit settles (each still moves, ``converged_mm`` 0): the surface
    would stay at the guess, so the disc has no height and L4 no distance."""
    never = replace(DEFAULTS, converged_mm=0.0)
    plane = Plane(*phantom(STRAIGHT_DEG))
    discs = _refined_discs(plane, never)
    assert discs["L4-L5"].unfitted == () and discs["L4-L5"].status == "ok"
    shifted = _guessed_into_the_disc(_located_discs(plane, settings=never)["L4-L5"], 3.0)
    discs["L4-L5"] = _height_placed(refine_disc(plane, shifted, Band(0.0), settings=never))
    assert discs["L4-L5"].unfitted == ("upper",)
    assert discs["L4-L5"].status == "failed" and np.isnan(discs["L4-L5"].height_mm)
    assert np.isnan(discs["L4-L5"].width_mm)  # a row that is not ok carries no number
    assert UNFITTED in discs["L4-L5"].note
    l4, l5 = (intervertebral_distance(plane, discs, name) for name in ("L4", "L5"))
    assert l4["status"] == "failed" and UNFITTED in l4["note"], l4
    assert l5["status"] == "ok", l5  # its endplates are L4-L5's lower and L5-S1's upper


def test_s1_caudal_endplate_found_under_a_residual_bias_field():
    """A residual bias field makes the marrow drift over S1's height by more than the step
    that ends a body; the endplate below is still the step, not the drift."""
    volume, labels = phantom()
    z_mm = np.arange(SHAPE[2]) * SPACING[2]
    top, bottom = _z_of(BODY_S["S1"][1]), _z_of(BODY_S["S1"][0])
    # 40 % brighter from S1's cranial to its caudal end, flat above and below
    field = 1.0 + 0.4 * np.clip((top - z_mm) / (top - bottom), 0.0, 1.0)
    biased = Volume((volume.data * field[None, None, :]).astype(np.float32), volume.affine,
                    volume.spacing_mm)  # fmt: skip
    _, vertebrae, _ = measure_session(biased, labels, cortex_mm="auto")
    whole = _cached(0.0, 0.0)[1]
    distance = vertebrae.set_index("vertebra").loc["S1", "intervertebral_distance_mm"]
    # taken for the drift, the step is found ~12 mm short; the edge fit itself, whose marrow
    # level is flat within a bin, is off by ~0.15 mm under so steep a drift
    assert distance == pytest.approx(whole.loc["S1", "intervertebral_distance_mm"], abs=0.25)


@pytest.mark.parametrize("label_left_mm", [2.0, 3.0])
def test_disc_measured_where_the_body_below_holds_most_of_its_label(label_left_mm):
    """A label map whose S1 takes all but the top 2-3 mm of the 11 mm L5-S1 disc (a nucleus as
    bright as marrow, taken for bone): L5-S1's lower endplate is sought that far past the
    disc's label, and the height is the truth."""
    volume, labels = phantom(STRAIGHT_DEG)
    _, ny, nz = SHAPE
    _, s = _to_stack(*np.meshgrid(np.arange(ny) * SPACING[1], np.arange(nz) * SPACING[2],
                                  indexing="ij"), STRAIGHT_DEG)  # fmt: skip
    swallowed = (labels == disc_label("L5")) & (s < DISC_S["L5-S1"][1] - label_left_mm)[None]
    labels[swallowed] = VERTEBRA_LABELS["S1"]
    discs = measure_session(volume, labels, cortex_mm=0.0)[0].set_index("level")
    assert discs.loc["L5-S1", "status"] == "ok", discs.loc["L5-S1", "note"]
    assert discs.loc["L5-S1", "height_mm"] == pytest.approx(
        DISC_HEIGHTS["L5-S1"], abs=HEIGHT_TOLERANCE_MM
    )


def test_a_height_the_slices_either_side_contradict_is_told_by_its_lateral_difference(monkeypatch):
    """L4's body reaches 1.5 mm further into L4-L5 on the mid-sagittal slice alone (what a fit
    that took another edge there would see): the disc's height, located and fitted afresh on
    the slices either side, is 1.5 mm more than on it, and the QC gate fails it. Where every
    slice shows the same anatomy, the difference is nil."""
    volume, labels = phantom(STRAIGHT_DEG)
    (body_low, body_high), (disc_low, disc_high) = BODY_S["L4"], DISC_S["L4-L5"]
    monkeypatch.setitem(BODY_S, "L4", (body_low - 1.5, body_high))
    monkeypatch.setitem(DISC_S, "L4-L5", (disc_low, disc_high - 1.5))
    mid_slice = 3
    thinner = volume.data.copy()
    thinner[mid_slice] = phantom(STRAIGHT_DEG)[0].data[mid_slice]
    midline = np.full(SHAPE[2], float(mid_slice))
    for data, expected in ((volume.data, 0.0), (thinner, 1.5)):
        edited = Volume(data, volume.affine, volume.spacing_mm)
        discs, vertebrae, _ = measure_session(edited, labels, cortex_mm=0.0, midline=midline)
        differences = discs.set_index("level")[LATERAL_DIFFERENCE]
        assert differences["L4-L5"] == pytest.approx(expected, abs=2 * HEIGHT_TOLERANCE_MM)
        assert differences[["L3-L4", "L5-S1"]].abs().max() < HEIGHT_TOLERANCE_MM, differences
        gated, _ = qc.gate_session(discs, vertebrae, qc.QcLimits())
        assert (gated.set_index("level").at["L4-L5", "status"] == "ok") == (expected == 0.0)
