"""The 2D partial-volume endplate model on pixel images whose truth is known exactly.

Each image is made here, independently of the model: a curved endplate (bone above, a dark
cortex of known thickness, disc below) in a frame turned against the pixel grid, every pixel
the mean of 16 x 16 point samples of the ideal scene, plus noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from spineflow.core.edges import EdgePixels, aperture_cdf, fit_endplate, rician_mean
from spineflow.core.gridsearch import refined_minimum

PIXEL_MM = 1.09375
MARROW, DISC, CORTEX_SIGNAL = 0.36, 0.17, 0.0
NOISE_SD = 0.005  # the images' Gaussian noise (far below every level: no Rician lift)
GRID_MM = np.round(np.arange(0.0, 1.31, 0.1), 2)
CURVE = np.array([0.002, 0.0, 0.0])  # t(u) of the bony surface: a concave endplate, mm


def test_aperture_cdf_is_the_share_of_a_turned_square_below_a_line():
    rng = np.random.default_rng(0)
    for angle in (0.0, 0.3, np.pi / 4, 1.2):
        normal = np.array([np.sin(angle), np.cos(angle)])
        sides = np.array([[1.0, 0.0], [0.0, 1.0]]) * PIXEL_MM
        widths = np.abs(sides @ normal)[None, :].repeat(7, axis=0)
        x = np.linspace(-0.9, 0.9, 7)
        points = (rng.uniform(-0.5, 0.5, (200_000, 2))) * PIXEL_MM
        along = points @ normal
        expected = [(along < xi).mean() for xi in x]
        assert aperture_cdf(x, widths) == pytest.approx(expected, abs=0.005)


def _scene(u, t, cortex_mm, band_signal=CORTEX_SIGNAL):
    """Ideal signal at frame points: bone above the surface (cortex first), disc below."""
    surface = np.polyval(CURVE, u)
    return np.where(t < surface, DISC, np.where(t < surface + cortex_mm, band_signal, MARROW))


def _pixels(angle_rad, cortex_mm, noise, rng, offset=(0.3, 0.1),
            band_signal=CORTEX_SIGNAL) -> EdgePixels:  # fmt: skip
    """Pixels of a grid turned by angle_rad against the frame, around the endplate."""
    ap = np.array([np.cos(angle_rad), np.sin(angle_rad)])  # frame axes in image (y, z)
    up = np.array([-np.sin(angle_rad), np.cos(angle_rad)])
    j, k = np.meshgrid(np.arange(-20, 21), np.arange(-6, 7), indexing="ij")
    centres = (np.stack([j, k], -1).reshape(-1, 2) + np.array(offset)) * PIXEL_MM
    sub = (np.arange(16) + 0.5) / 16 - 0.5
    sub = np.stack(np.meshgrid(sub, sub, indexing="ij"), -1).reshape(-1, 2) * PIXEL_MM
    samples = centres[:, None, :] + sub[None]
    u, t = samples @ ap, samples @ up
    values = _scene(u, t, cortex_mm, band_signal).mean(axis=1)
    values += rng.normal(0, noise, len(centres))
    u_c, t_c = centres @ ap, centres @ up
    keep = (np.abs(u_c) < 14) & (t_c - np.polyval(CURVE, u_c) > -1.2)
    keep &= t_c - np.polyval(CURVE, u_c) < 3.5
    aperture = np.array([[ap[0], up[0]], [ap[1], up[1]]]) * PIXEL_MM
    n = int(keep.sum())
    return EdgePixels(u_c[keep], t_c[keep], values[keep], np.ones(n), aperture)


@pytest.mark.parametrize("angle_deg", [0.0, 17.0, 35.0])
@pytest.mark.parametrize("cortex_mm", [0.0, 0.4, 0.8])
def test_surface_is_found_for_the_true_cortex(angle_deg, cortex_mm):
    rng = np.random.default_rng(1)
    pixels = _pixels(np.radians(angle_deg), cortex_mm, 0.005, rng)
    start = CURVE + np.array([0.0, 0.0, 0.6])  # a first guess 0.6 mm off
    fit = fit_endplate(pixels, start, +1, cortex_mm, NOISE_SD)
    u = np.linspace(-12, 12, 25)
    error = np.polyval(fit.coef, u) - np.polyval(CURVE, u)
    assert np.abs(error).max() < 0.05


@pytest.mark.parametrize("cortex_mm", [0.0, 0.3, 0.6, 0.9])
def test_cortex_thickness_is_where_the_residuals_are_least(cortex_mm):
    """The thin dark cortex cannot be seen as a band at 1.1 mm pixels, but the model's fit
    says how thick it is: the least squared residual lies at the true thickness."""
    rng = np.random.default_rng(2)
    total = np.zeros(len(GRID_MM))
    for angle in (0.0, 12.0, 28.0):
        pixels = _pixels(np.radians(angle), cortex_mm, 0.005, rng, offset=rng.uniform(0, 1, 2))
        start = CURVE + np.array([0.0, 0.0, -0.3])
        total += [fit_endplate(pixels, start, +1, c, NOISE_SD).sse for c in GRID_MM]
    assert GRID_MM[np.argmin(total)] == pytest.approx(cortex_mm, abs=0.1)


def test_a_grey_band_is_fitted_where_it_is_and_bone_alone_misplaces_it():
    """A real T2's endplate: a 1.2 mm band at half the marrow's signal (cortex and cartilage).
    The band's own model finds the surface (its thickness weakly: a band a little thicker
    or thinner fits almost as well) and fits best; bone alone, at its best thickness, fits
    worse and puts the surface beyond the band."""
    rng = np.random.default_rng(5)
    u = np.linspace(-12, 12, 25)
    errors, sse = {}, {}
    for share in (0.0, 0.5):
        total, worst = np.zeros(len(GRID_MM)), np.zeros(len(GRID_MM))
        for angle in (0.0, 12.0, 28.0):
            pixels = _pixels(np.radians(angle), 1.2, 0.005, np.random.default_rng(int(angle)),
                             offset=rng.uniform(0, 1, 2), band_signal=0.5 * MARROW)  # fmt: skip
            fits = [fit_endplate(pixels, CURVE, +1, c, NOISE_SD, band_share=share)
                    for c in GRID_MM]  # fmt: skip
            total += [f.sse for f in fits]
            errors_here = [np.abs(np.polyval(f.coef, u) - np.polyval(CURVE, u)).max() for f in fits]
            worst = np.maximum(worst, errors_here)
        best = int(np.argmin(total))
        errors[share], sse[share] = worst[best], total[best]
    # bone alone lays its surface on the band's marrow side, as on the real exams
    assert errors[0.5] < 0.15 and errors[0.0] > 1.0
    assert sse[0.5] < 0.9 * sse[0.0]


def test_no_edge_gives_no_fit_at_its_start():
    rng = np.random.default_rng(3)
    pixels = _pixels(0.2, 0.5, 0.005, rng)
    flat = EdgePixels(pixels.u, pixels.t, MARROW + rng.normal(0, 0.01, len(pixels.u)),
                      pixels.weight, pixels.aperture)  # fmt: skip
    fit = fit_endplate(flat, CURVE, +1, 0.5, NOISE_SD)
    u = np.linspace(-12, 12, 25)
    assert fit is None or np.abs(np.polyval(fit.coef, u) - np.polyval(CURVE, u)).max() > 0.3


def test_rician_mean_is_the_noise_floor_without_signal_and_the_signal_far_above_it():
    rng = np.random.default_rng(4)
    for signal in (0.0, 0.02, 0.05, 0.3):
        magnitude = np.hypot(signal + rng.normal(0, 0.03, 400_000), rng.normal(0, 0.03, 400_000))
        assert rician_mean(np.array([signal]), 0.03)[0] == pytest.approx(magnitude.mean(), rel=0.01)


@pytest.mark.parametrize("cortex_mm", [0.6, 0.9])
def test_cortex_thickness_holds_in_a_magnitude_image_at_snr_10(cortex_mm):
    """Magnitude images (Rician noise, the marrow's SNR 10): a pixel mostly of cortex shows the
    noise floor, one mostly of marrow or disc its own signal. A model that lifts every pixel's
    cortex share to the floor makes the cortex ~15 % thick; one without the floor, thin."""
    noise_sd = MARROW / 10
    rng = np.random.default_rng(0)
    total = np.zeros(len(GRID_MM))
    for angle in (5.0, 12.0, 19.0, 26.0, 33.0, 40.0):
        clean = _pixels(np.radians(angle), cortex_mm, 0.0, rng, offset=rng.uniform(0, 1, 2))
        noise = rng.normal(0, noise_sd, (2, len(clean.value)))
        magnitude = np.hypot(clean.value + noise[0], noise[1])
        pixels = EdgePixels(clean.u, clean.t, magnitude, clean.weight, clean.aperture)
        start = CURVE + np.array([0.0, 0.0, -0.3])
        sse = np.array([fit_endplate(pixels, start, +1, c, noise_sd).sse for c in GRID_MM])
        total += sse / sse.min()
    assert refined_minimum(GRID_MM, total) == pytest.approx(cortex_mm, abs=0.05)
