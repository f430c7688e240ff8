"""Automatic Pfirrmann grade on discs drawn here, unlike the cohort generator's: a flat-topped
nucleus (super-ellipse) of chosen size and signal, optionally cut by a horizontal band,
averaged over 1.09 mm pixels (8 x 8 supersampling), in two slices with their own noise.
The signals are placed at each grade's typical place on the (nucleus - annulus) /
(CSF - annulus) scale of the definitions' words."""

from __future__ import annotations

import numpy as np
import pytest

from spineflow.core.edges import EdgePixels
from spineflow.core.plane import DiscResult
from spineflow.measure import pfirrmann
from spineflow.measure.settings import DEFAULTS

PIXEL_MM, SUPERSAMPLE = 1.09375, 8
ANNULUS, CSF = 0.2, 1.0
MARROW = 0.36  # SNR is the marrow's, as in a lumbar protocol's quality check
WIDTH_MM = 40.0


def _disc_pixels(contrast, height_mm=10.0, nucleus_share=0.5, band_depth=0.0, snr=40.0, seed=0,
                 row_offset_mm=0.3):  # fmt: skip
    """Pixels of a disc (frame u along AP, t cranial, mid-height at t = 0) and its geometry."""
    nucleus = ANNULUS + contrast * (CSF - ANNULUS)
    centres_u = np.arange(-WIDTH_MM / 2, WIDTH_MM / 2, PIXEL_MM) + PIXEL_MM / 2
    centres_t = np.arange(-height_mm / 2, height_mm / 2, PIXEL_MM) + row_offset_mm
    centres_t = centres_t[np.abs(centres_t) < height_mm / 2]
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    u = centres_u[:, None, None, None] + PIXEL_MM * sub[None, None, :, None]
    t = centres_t[None, :, None, None] + PIXEL_MM * sub[None, None, None, :]
    radius_u, radius_t = nucleus_share * WIDTH_MM / 2, nucleus_share * height_mm / 2
    inside = (np.abs(u / radius_u) ** 4 + np.abs(t / radius_t) ** 4) < 1
    band = 1 - band_depth * (np.abs(t) < 0.6)
    fine = ANNULUS + (nucleus - ANNULUS) * inside * band
    image = fine.mean(axis=(2, 3))
    rng = np.random.default_rng(seed)
    slices = [image + rng.normal(0, MARROW / snr, image.shape) for _ in range(2)]
    uu, tt = np.meshgrid(centres_u, centres_t, indexing="ij")
    pixels = EdgePixels(
        np.tile(uu.ravel(), 2),
        np.tile(tt.ravel(), 2),
        np.concatenate([s.ravel() for s in slices]),
        np.full(2 * uu.size, 0.5),
        np.eye(2) * PIXEL_MM,
    )
    disc = DiscResult(
        "L4-L5",
        height_mm=height_mm,
        upper_coef=np.array([height_mm / 2]),
        lower_coef=np.array([-height_mm / 2]),
        u_post=-WIDTH_MM / 2,
        u_ant=WIDTH_MM / 2,
    )
    return pixels, disc


def _grade(contrast, height_ratio=1.0, **disc):
    pixels, geometry = _disc_pixels(contrast, **disc)
    features = pfirrmann.disc_features(pixels, geometry, CSF)
    return pfirrmann.grade({**features, "height_ratio": height_ratio}), features


@pytest.mark.parametrize("contrast,band,expected", [(0.9, 0.0, 1), (0.85, 0.35, 2),
                                                    (0.4, 0.35, 3), (0.15, 0.0, 4),
                                                    (0.0, 0.0, 5)])  # fmt: skip
@pytest.mark.parametrize("nucleus_share", [0.45, 0.65])
@pytest.mark.parametrize("snr", [10.0, 40.0])
def test_grade_follows_the_nucleus_signal_whatever_the_nucleus_size(
    contrast, band, expected, nucleus_share, snr
):
    grade, features = _grade(contrast, band_depth=band, nucleus_share=nucleus_share, snr=snr)
    assert grade == expected, features


def test_the_nucleus_signal_is_its_bright_part_not_its_mean_with_the_rim():
    """A small nucleus (under half the disc) has as bright a core as a large one: its signal
    must not sink towards the annulus because less of the nucleus region is nucleus."""
    _, small = _grade(0.85, nucleus_share=0.45)
    _, large = _grade(0.85, nucleus_share=0.6)
    assert small["nucleus_contrast"] == pytest.approx(large["nucleus_contrast"], abs=0.12)
    assert small["nucleus_contrast"] > DEFAULTS.contrast_cuts[0]


@pytest.mark.parametrize("row_offset_mm", [0.0, 0.3, 0.55])  # a row at mid-height, or none
def test_a_horizontal_band_makes_a_bright_nucleus_grade_two(row_offset_mm):
    _, plain = _grade(0.9, row_offset_mm=row_offset_mm)
    _, banded = _grade(0.9, band_depth=0.3, row_offset_mm=row_offset_mm)
    assert plain["cleft_dip"] < DEFAULTS.cleft_dip_ii <= banded["cleft_dip"]


@pytest.mark.parametrize("height_ratio,expected", [(0.4, 5), (0.7, 4)])
def test_a_collapsed_grey_disc_is_grade_five_a_moderately_lower_one_four(height_ratio, expected):
    assert _grade(0.15, height_ratio=height_ratio)[0] == expected
