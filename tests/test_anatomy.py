"""Ground-truth geometry of the phantom: truth measures of hand-made spines are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from spineflow_dev.synth import anatomy, render
from spineflow_dev.synth.anatomy import (
    LUMBAR_NAMES,
    SACRAL_NAMES,
    build_spine,
    true_disc_height_mm,
    true_disc_width_mm,
    true_intervertebral_distance_mm,
)
from spineflow_dev.synth.sampling import sample_participant, sample_scene, timepoint2_params

ALL_LEVELS = [f"{a}-{b}" for a, b in zip(LUMBAR_NAMES[:-1], LUMBAR_NAMES[1:], strict=True)] + [
    "L5-S1"
]
DEPTH_MM = 36.0
BULGE_MM = 1.0


def make_params(
    *,
    slope_deg: float = 0.0,
    wedge_deg: dict | None = None,
    concavity: tuple[float, float] = (0.0, 0.0),
    heights: dict | None = None,
    bulge_mm: float = BULGE_MM,
) -> dict:
    """A hand-made participant: straight spine, flat endplates, known sizes."""
    body = {}
    for k, name in enumerate(LUMBAR_NAMES + SACRAL_NAMES):
        body[name] = {
            "height_mm": 24.0 + 0.5 * k,
            "depth_mm": DEPTH_MM,
            "width_mm": 40.0 + k,
            "concavity_cranial_mm": concavity[0],
            "concavity_caudal_mm": concavity[1],
        }
    disc_heights = {level: 8.0 + 0.3 * k for k, level in enumerate(ALL_LEVELS)}
    disc_heights.update(heights or {})
    wedges = dict.fromkeys(ALL_LEVELS, 0.0)
    wedges.update(wedge_deg or {})
    return {
        "sacral_slope_deg": slope_deg,
        "lordosis_deg": 0.0,
        "disc_height_mm": disc_heights,
        "disc_wedge_deg": wedges,
        "body": body,
        "pfirrmann": {},
        "bulge_mm": bulge_mm,
        "cortex_mm": 0.5,
        "sacral_curve_deg": 0.0,
        "sacral_remnant_mm": 1.5,
        "canal_ap_mm": 15.0,
        "canal_lr_mm": 20.0,
        "ligament_gap_mm": 1.5,
        "cord_radius_mm": 4.5,
    }


def test_flat_straight_spine_disc_heights_equal_the_set_values():
    params = make_params(heights={"L4-L5": 9.37})
    spine = build_spine(params)
    assert true_disc_height_mm(spine.disc("L4-L5")) == pytest.approx(9.37, abs=1e-6)
    for level in ALL_LEVELS:
        expected = params["disc_height_mm"][level]
        assert true_disc_height_mm(spine.disc(level)) == pytest.approx(expected, abs=1e-6), level


def test_flat_straight_spine_is_a_vertical_stack():
    spine = build_spine(make_params())
    l4, l5 = spine.vertebra("L4"), spine.vertebra("L5")
    # centres on the s axis; L4's centre is half L4 + disc + half L5 above L5's centre
    assert l4.centre_as[0] == pytest.approx(0.0, abs=1e-9)
    gap = l4.centre_as[1] - l5.centre_as[1]
    expected = l4.height_mm / 2 + 8.0 + 0.3 * ALL_LEVELS.index("L4-L5") + l5.height_mm / 2
    assert gap == pytest.approx(expected, abs=1e-9)
    # the anchor: S1's cranial endplate centre sits at the origin
    assert np.allclose(spine.vertebra("S1").cranial_endplate_centre_as(), 0.0, atol=1e-9)


def test_intervertebral_distance_equals_body_height_without_concavity():
    spine = build_spine(make_params())
    for name in ("L3", "L4", "L5", "S1"):
        vertebra = spine.vertebra(name)
        assert true_intervertebral_distance_mm(vertebra) == pytest.approx(
            vertebra.height_mm, abs=1e-9
        )


def test_disc_width_is_depth_plus_two_bulges():
    params = make_params(bulge_mm=1.3)
    params["body"]["L5"]["depth_mm"] = 38.0  # the disc's depth is the mean of its two bodies
    spine = build_spine(params)
    assert true_disc_width_mm(spine.disc("L4-L5")) == pytest.approx((36 + 38) / 2 + 2.6)
    assert true_disc_width_mm(spine.disc("L3-L4")) == pytest.approx(36 + 2.6)


@pytest.mark.parametrize("k_cranial, k_caudal", [(1.2, 0.0), (0.0, 0.7), (1.5, 0.9)])
def test_concave_endplates_shorten_the_intervertebral_distance(k_cranial, k_caudal):
    spine = build_spine(make_params(concavity=(k_cranial, k_caudal)))
    for name in ("L3", "L4", "L5", "S1"):
        vertebra = spine.vertebra(name)
        expected = vertebra.height_mm - k_cranial - k_caudal
        assert true_intervertebral_distance_mm(vertebra) == pytest.approx(expected, abs=1e-9)


def test_concave_endplates_shape_the_disc_like_the_dome():
    """The set disc height is the distance between the endplates' centres (their deepest
    points); towards the rim each concave endplate rises by k (2u/depth)^2, so the mean over
    the central 80 % is h - (k_caudal + k_cranial) x mean((2u/depth)^2) on a straight stack."""
    k_cranial, k_caudal = 1.1, 0.6
    params = make_params(concavity=(k_cranial, k_caudal))
    spine = build_spine(params)
    half = 0.8 * (DEPTH_MM / 2 + BULGE_MM)
    assert half < DEPTH_MM / 2 - anatomy.CORNER_RADIUS_MM  # the rim rounding stays outside
    u = np.linspace(-half, half, 161)
    rise = np.mean((2 * u / DEPTH_MM) ** 2)
    for level in ("L3-L4", "L4-L5", "L5-S1"):
        disc = spine.disc(level)
        expected = params["disc_height_mm"][level] - (k_cranial + k_caudal) * rise
        assert true_disc_height_mm(disc) == pytest.approx(expected, abs=1e-6)
        # at the centre itself it is the set height
        assert true_disc_height_mm(disc, central_share=1e-9, n_samples=3) == pytest.approx(
            params["disc_height_mm"][level], abs=1e-6
        )


def test_rim_rounding_enters_the_height_when_the_bulge_is_large():
    """With a large bulge the central 80 % reaches the rounded rim (2 mm corner radius)."""
    bulge = 3.0
    params = make_params(bulge_mm=bulge)
    spine = build_spine(params)
    half = 0.8 * (DEPTH_MM / 2 + bulge)
    u = np.linspace(-half, half, 161)
    radius = anatomy.CORNER_RADIUS_MM
    gap = np.clip(radius - (DEPTH_MM / 2 - np.abs(u)), 0.0, radius)
    drop = radius - np.sqrt(radius**2 - gap**2)
    assert drop.max() > 0.1
    expected = params["disc_height_mm"]["L4-L5"] + 2 * np.mean(drop)
    assert true_disc_height_mm(spine.disc("L4-L5")) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("wedge", [4.0, 9.0, -5.0])
def test_wedged_disc_mean_height_equals_the_centre_value(wedge):
    params = make_params(wedge_deg={"L4-L5": wedge}, heights={"L4-L5": 10.0})
    spine = build_spine(params)
    disc = spine.disc("L4-L5")
    assert true_disc_height_mm(disc) == pytest.approx(10.0, abs=1e-6)
    # the bodies' tilts differ by the wedge
    assert disc.lower.tilt_rad - disc.upper.tilt_rad == pytest.approx(np.radians(wedge))


@pytest.mark.parametrize("wedge", [4.0, 9.0])
def test_wedged_disc_is_taller_anteriorly_by_the_wedge_geometry(wedge):
    spine = build_spine(make_params(wedge_deg={"L4-L5": wedge}, heights={"L4-L5": 10.0}))
    disc = spine.disc("L4-L5")
    c, n = np.cos(disc.mid_tilt_rad), np.sin(disc.mid_tilt_rad)
    ap, up = np.array([c, -n]), np.array([n, c])
    u = np.array([-12.0, 12.0])  # posterior, anterior
    origins = disc.mid_origin_as + np.outer(u, ap)
    top = anatomy._surface_crossing(disc.upper, "caudal", origins, up)
    bottom = anatomy._surface_crossing(disc.lower, "cranial", origins, up)
    posterior, anterior = top - bottom
    assert anterior > posterior + 1.0
    # two planes each tilted by wedge/2 from the mid-plane: height = h + 2 u tan(wedge/2)
    expected = 10.0 + 2 * u * np.tan(np.radians(wedge) / 2)
    assert np.allclose([posterior, anterior], expected, atol=1e-6)


def _truth(spine) -> dict:
    values = {}
    for disc in spine.discs:
        values[f"h {disc.level}"] = true_disc_height_mm(disc)
        values[f"w {disc.level}"] = true_disc_width_mm(disc)
    for vertebra in spine.vertebrae:
        values[f"ivd {vertebra.name}"] = true_intervertebral_distance_mm(vertebra)
    return values


@pytest.mark.parametrize("seed", [0, 1])
def test_tilting_the_whole_spine_changes_no_measure(seed):
    params = sample_participant(np.random.default_rng(seed))  # lordosis, wedges, concavities
    params["sacral_slope_deg"] = 0.0
    upright = build_spine(params)
    delta = 30.0
    tilted = build_spine({**params, "sacral_slope_deg": delta})
    a, b = _truth(upright), _truth(tilted)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    # ... and the tilted spine is the upright one rotated about the anchor (a rigid motion)
    d = np.radians(delta)
    rotation = np.array([[np.cos(d), np.sin(d)], [-np.sin(d), np.cos(d)]])
    for v0, v1 in zip(upright.vertebrae, tilted.vertebrae, strict=True):
        assert np.allclose(rotation @ np.asarray(v0.centre_as), v1.centre_as, atol=1e-9)
        assert v1.tilt_rad - v0.tilt_rad == pytest.approx(d)
    moved = np.linalg.norm(
        np.asarray(upright.vertebra("L1").centre_as) - tilted.vertebra("L1").centre_as
    )
    assert moved > 10.0  # the pose really changed


def test_a_participants_visits_share_the_body_around_the_spine():
    rng = np.random.default_rng(5)
    params = sample_participant(rng)
    later = timepoint2_params(rng, params, {"L4-L5": -0.3})  # the sacrum tilts by degrees
    spines = [build_spine(p) for p in (params, later)]
    first, second = (
        sample_scene(np.random.default_rng(visit), spine, 20.0, np.random.default_rng(9))
        for visit, spine in enumerate(spines)
    )
    for key in ("psoas_offset_mm", "trunk_semi_lr_mm", "subcutaneous_fat_mm", "marrow_texture"):
        assert second[key] == first[key], key
    assert [v["r_mm"] for v in second["vessels"]] == [v["r_mm"] for v in first["vessels"]]
    # the iliac bones keep their place against the sacrum as it sits at each visit
    s1 = [np.asarray(spine.vertebra("S1").centre_as) for spine in spines]
    for ilium1, ilium2 in zip(first["pelvis"][2:], second["pelvis"][2:], strict=True):
        assert ilium2["centre_ras"][0] == ilium1["centre_ras"][0]
        assert np.allclose(
            np.subtract(ilium2["centre_ras"][1:], s1[1]),
            np.subtract(ilium1["centre_ras"][1:], s1[0]),
        )
    assert not np.allclose(s1[0], s1[1])  # ... which did move
    assert second["bowel"] != first["bowel"]
    assert second["bias"] != first["bias"]


def test_each_point_is_painted_its_own_tissue_whatever_their_order():
    rng = np.random.default_rng(3)
    spine = build_spine(sample_participant(rng))
    scene = sample_scene(rng, spine, 20.0, np.random.default_rng(4))
    a_mm, s_mm = np.asarray(spine.vertebra("L4").centre_as)
    a, s = (
        g.ravel() for g in np.meshgrid(a_mm + np.arange(-60, 61.0), s_mm + np.arange(-120, 121))
    )
    points = (spine.midline_r(s), a, s)
    shuffle = rng.permutation(len(a))
    value = render.tissue_intensity(spine, scene, *points, render.PD_FS)
    shuffled = render.tissue_intensity(spine, scene, *(c[shuffle] for c in points), render.PD_FS)
    assert np.array_equal(shuffled, value[shuffle])
    labels = render.structure_labels(spine, *points)
    assert np.array_equal(
        render.structure_labels(spine, *(c[shuffle] for c in points)), labels[shuffle]
    )
    assert {render.TRUTH_LABELS["L4"], 100 + render.TRUTH_LABELS["L4"]} <= set(labels.tolist())
    # the outline, where the edges are looked for, is the signal without the marrow's texture
    _, outline = render._paint_tissues(spine, scene, *points, render.PD_FS)
    untextured = {**scene, "marrow_texture": 0.0}
    assert np.array_equal(
        outline, render.tissue_intensity(spine, untextured, *points, render.PD_FS)
    )
    assert not np.array_equal(outline, value)
