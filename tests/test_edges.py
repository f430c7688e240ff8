"""Sub-voxel endplate location on 1D profiles whose edge is known exactly.

Each profile is what the pipeline sees: an ideal piecewise-constant signal (marrow, optionally a
thin dark cortex, disc) averaged over 1.09375 mm pixels at a random phase, linearly interpolated
at 0.25 mm, plus a little noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from spineflow.core.edges import fit_edge, fit_rim, marrow_boundary

PIXEL_MM = 1.09375
STEP_MM = 0.25
MARROW = 0.36
NOISE = 0.002
N_TRIALS = 150


def profile(
    rng: np.random.Generator,
    surface: float,
    disc: float,
    *,
    marrow: float = MARROW,
    cortex_mm: float = 0.0,
    cortex_level: float = 0.04,
    side: int = +1,
    noise: float = NOISE,
    span=(-7.0, 9.0),
) -> tuple[np.ndarray, np.ndarray]:
    """(t, values): the disc up to ``surface``, cortex to surface + cortex_mm, then marrow, all
    along s = side * t (marrow at larger t for side +1, at smaller t for side -1)."""
    breaks = np.array([-1e3, surface, surface + cortex_mm, 1e3])
    levels = np.array([disc, cortex_level, marrow])
    integral = np.concatenate([[0.0], np.cumsum(np.diff(breaks) * levels)])  # exact, piecewise lin.
    starts = rng.uniform(0, PIXEL_MM) + np.arange(-40, 41) * PIXEL_MM
    pixels = np.interp(starts + PIXEL_MM, breaks, integral) - np.interp(starts, breaks, integral)
    pixels /= PIXEL_MM
    s = np.arange(surface + span[0], surface + span[1], STEP_MM) + rng.uniform(-0.125, 0.125)
    values = np.interp(s, starts + PIXEL_MM / 2, pixels) + rng.normal(0, noise, s.size)
    return side * s, values


def test_profile_helper_is_a_partial_volume_step():
    rng = np.random.default_rng(0)
    t, v = profile(rng, 1.0, 0.17, noise=0.0)
    assert np.allclose(v[t < 1.0 - PIXEL_MM * 1.5], 0.17)
    assert np.allclose(v[t > 1.0 + PIXEL_MM * 1.5], MARROW)
    assert np.all(np.diff(v) >= -1e-12)  # monotonic ramp, no overshoot
    # the signal integrates to the ideal step: the ramp's area sits around the edge
    ramp = (t > -3) & (t < 5)
    area = np.sum(v[ramp] - 0.17) * STEP_MM
    assert area == pytest.approx((MARROW - 0.17) * (t[ramp].max() - 1.0 + STEP_MM / 2), abs=0.03)


def _errors(seed: int, disc: float, side: int, **kwargs) -> np.ndarray:
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(N_TRIALS):
        surface = rng.uniform(-3.0, 3.0)
        t, values = profile(rng, surface, disc, side=side, **kwargs)
        guess = surface + rng.uniform(-1.5, 1.5)  # along s
        found = fit_edge(t, values, side * guess, side, cortex_mm=0.0)
        errors.append(found - side * surface)
    return np.array(errors)


@pytest.mark.parametrize("side", [+1, -1])
@pytest.mark.parametrize("disc", [0.17, 0.9], ids=["disc_darker", "disc_brighter"])
def test_plain_step_is_located_to_a_tenth_of_a_millimetre(disc, side):
    """The pixel phase alone moves a half-maximum crossing on interpolated pixels by up to about
    0.1 mm; noise adds a little. No single profile may be off by more than 0.15 mm."""
    errors = _errors(seed=11 if disc < MARROW else 12, disc=disc, side=side)
    assert np.all(np.isfinite(errors))
    worst = np.abs(errors).max()
    assert worst < 0.15, (
        f"worst error {worst:.3f} mm; {np.mean(np.abs(errors) > 0.1):.0%} of fits > 0.1 mm"
    )
    assert np.mean(np.abs(errors) > 0.1) < 0.2


@pytest.mark.parametrize("disc", [0.17, 0.9])
def test_plain_step_is_unbiased_on_average(disc):
    """Looser than the per-profile bound: the mean over phases must sit on the edge."""
    errors = _errors(seed=21, disc=disc, side=+1)
    assert abs(np.nanmean(errors)) < 0.03


@pytest.mark.parametrize("guess_offset", [-1.5, 0.0, 1.5])
@pytest.mark.parametrize("noise", [0.0, 0.005])
def test_flat_profile_has_no_edge(guess_offset, noise):
    rng = np.random.default_rng(3)
    t = np.arange(-7.0, 9.0, STEP_MM)
    values = MARROW + rng.normal(0, noise, t.size)
    assert np.isnan(fit_edge(t, values, guess_offset, +1, cortex_mm=0.0))
    assert np.isnan(fit_edge(t, values, guess_offset, -1, cortex_mm=0.0))
    assert np.isnan(fit_edge(t, values, guess_offset, +1))  # default cortex as well


def test_profile_entirely_outside_the_image_has_no_edge():
    t = np.arange(-7.0, 9.0, STEP_MM)
    assert np.isnan(fit_edge(t, np.full(t.size, np.nan), 0.0, +1))


@pytest.mark.parametrize("side", [+1, -1])
@pytest.mark.parametrize("disc", [0.17, 0.9])
def test_marrow_cut_by_the_field_of_view_still_gives_the_edge(disc, side):
    """NaNs beyond 4.5 mm into the vertebra (outside the image): same edge as the whole profile."""
    rng = np.random.default_rng(4)
    for _ in range(60):
        surface = rng.uniform(-3.0, 3.0)
        t, values = profile(rng, surface, disc, side=side)
        guess = side * (surface + rng.uniform(-1.5, 1.5))
        whole = fit_edge(t, values, guess, side, cortex_mm=0.0)
        cut = values.copy()
        cut[side * t > surface + 4.5] = np.nan
        assert np.isnan(cut).sum() > 10
        found = fit_edge(t, cut, guess, side, cortex_mm=0.0)
        assert np.isfinite(found)
        assert found == pytest.approx(whole, abs=0.05)
        assert abs(found - side * surface) < 0.6  # near the true edge (accuracy: tests above)


def test_edge_with_a_visible_dark_cortex_in_front_of_a_bright_disc_is_found():
    """Marrow 0.36 -> 0.5 mm cortex (0.04) -> disc 0.9: an obvious edge must never be NaN."""
    rng = np.random.default_rng(5)
    missing = 0
    for _ in range(N_TRIALS):
        surface = rng.uniform(-3.0, 3.0)
        t, values = profile(rng, surface, 0.9, cortex_mm=0.5)
        missing += np.isnan(fit_edge(t, values, surface + rng.uniform(-1.5, 1.5), +1))
    assert missing == 0, f"{missing} of {N_TRIALS} profiles gave no edge"


def _rim_pixels(rng, rim, annulus, band_mm, beyond, extra_blur_mm, rows=4):
    """Pixels across a disc's rim (centres outwards, widths along that axis, values): annulus |
    a ligament with no signal | what lies beyond, blurred further by a slab's partial volume,
    averaged over 1.09375 mm pixels at a random phase; ``rows`` rows of independent noise."""
    fine = np.arange(-12.0, 12.0, 0.01)
    ideal = np.where(fine < rim, annulus, np.where(fine < rim + band_mm, 0.0, beyond))
    if extra_blur_mm > 0:
        ideal = ndimage.gaussian_filter1d(ideal, extra_blur_mm / 0.01, mode="nearest")
    centres = rng.uniform(0, PIXEL_MM) + np.arange(-5, 6) * PIXEL_MM
    inside = np.abs(fine[None, :] - centres[:, None]) <= PIXEL_MM / 2
    pixels = (inside * ideal).sum(axis=1) / inside.sum(axis=1)
    x = np.tile(centres, rows)
    values = np.tile(pixels, rows) + rng.normal(0, 0.01, x.size)
    widths = np.tile([PIXEL_MM, 0.0], (x.size, 1))
    return x, widths, values


@pytest.mark.parametrize(
    "beyond, p90_mm",
    [(0.05, 0.25), (0.3, 0.25), (1.0, 0.5)],
    ids=["dark", "grey", "bright_fluid"],
)
def test_disc_rim_is_found_behind_any_ligament_and_beyond_any_tissue(beyond, p90_mm):
    """Annulus 0.12-0.4, ligament 0-2 mm thick, extra blur up to 0.6 mm: the rim within 0.1 mm
    in half the pixel sets, 0.25 mm in nine of ten. Before bright fluid the tail is longer: a
    ligament of a pixel or less, blurred, behind a dim annulus, takes so little signal that it
    fits as well as no ligament, and the thinnest is kept (``fit_rim``)."""
    rng = np.random.default_rng(31)
    errors = []
    for _ in range(60):
        rim, band = rng.uniform(-1.0, 1.0), rng.uniform(0.0, 2.0)
        x, widths, values = _rim_pixels(rng, rim, rng.uniform(0.12, 0.4), band, beyond,
                                        rng.uniform(0.0, 0.6))  # fmt: skip
        errors.append(fit_rim(x, widths, values, np.ones(x.size), (-1.5, 3.0), 0.01) - rim)
    errors = np.array(errors)
    assert np.all(np.isfinite(errors))
    assert np.median(np.abs(errors)) < 0.1
    assert np.percentile(np.abs(errors), 90) < p90_mm
    assert abs(errors.mean()) < 0.15


def test_too_few_pixels_give_no_rim():
    x = np.arange(5.0)
    widths = np.tile([PIXEL_MM, 0.0], (x.size, 1))
    assert np.isnan(fit_rim(x, widths, np.ones(x.size), np.ones(x.size), (-1.5, 3.0), 0.01))


def test_a_vessel_against_the_disc_in_one_slice_does_not_carry_the_rim_out():
    """Two slices, the disc's rim at the same place in both: in the one nearer the mid-sagittal
    plane a vessel as bright as the disc lies against it past a ligament of no thickness (its
    rim seen 2-3 mm out), in the other fat beyond a ligament. The rim is the disc's own."""
    rng = np.random.default_rng(5)
    for _ in range(10):
        rim, annulus = rng.uniform(-1.0, 0.5), rng.uniform(0.2, 0.4)
        vessel_ends = rim + rng.uniform(2.0, 3.0)  # beyond the vessel's edge: fat
        # disc and vessel one bright run: its only step is the vessel's far edge
        x, widths, near_values = _rim_pixels(rng, vessel_ends, annulus, 0.0, 0.02, 0.0)
        fx, fwidths, fvalues = _rim_pixels(rng, rim, annulus, rng.uniform(0.5, 2.0), 0.1, 0.0)
        found = fit_rim(
            np.concatenate([x, fx]), np.concatenate([widths, fwidths]),
            np.concatenate([near_values, fvalues]),
            np.concatenate([np.full(x.size, 0.8), np.full(fx.size, 0.2)]),
            (-1.5, 3.5), 0.01, np.repeat([6, 7], [x.size, fx.size]),
        )  # fmt: skip
        assert abs(found - rim) < 0.3


def test_no_rim_within_the_search_gives_none():
    """Tissue as bright as the disc all the way past the search: no rim to report."""
    rng = np.random.default_rng(2)
    x, widths, values = _rim_pixels(rng, 8.0, 0.3, 0.0, 0.0, 0.0)
    assert np.isnan(fit_rim(x, widths, values, np.ones(x.size), (-1.5, 3.0), 0.01))


def test_a_long_body_in_noise_gives_its_far_endplate_given_the_image_noise():
    """S1 from its cranial endplate down to the S1-S2 remnant, 27 mm away, at a marrow SNR of
    12: the plateau 2-6 mm in holds only 8 samples, whose spread can be half the noise; a
    threshold on it alone took a noise dip for the endplate in a fifth of the profiles."""
    t_mm = -np.arange(2.0, 53.0, 0.5)
    clean = np.where(-t_mm < 27.0, 1.0, np.where(-t_mm < 29.0, 0.2, 0.8))
    noise_sd = 0.08
    rng = np.random.default_rng(12)

    def far_endplates(floor_sd):
        found = []
        for _ in range(200):  # noise correlated over a sample, as interpolated from pixels
            noise = ndimage.gaussian_filter1d(rng.normal(0, 1, len(t_mm)), 1.0) / 0.53
            values = clean + noise_sd * noise
            found.append(marrow_boundary(t_mm, values, -10.0, 1, (2.0, 6.0), 35.0, floor_sd))
        return np.array(found)

    with_noise, plateau_only = far_endplates(noise_sd), far_endplates(0.0)
    assert np.mean(with_noise > -26.0) <= 0.03
    assert np.abs(np.nanmedian(with_noise) + 26.8) < 0.3
    assert np.mean(plateau_only > -26.0) >= 0.1  # what the image's noise level prevents
