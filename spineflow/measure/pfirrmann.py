"""Automatic Pfirrmann grade from documented image features of the mid-sagittal disc.

Pfirrmann et al. (Spine 2001;26:1873) grade a lumbar disc on a T2-weighted (here fluid-
sensitive PD fat-suppressed) sagittal image by the nucleus's structure and signal, the
distinction of nucleus and annulus, and the disc's height:

    I    homogeneous, bright white; hyperintense, isointense to CSF; normal height
    II   inhomogeneous with or without horizontal bands; hyperintense, isointense to CSF;
         clear nucleus/annulus distinction; normal height
    III  inhomogeneous, grey; intermediate signal; unclear distinction; normal to slightly
         decreased height
    IV   inhomogeneous, grey to black; intermediate to hypointense; lost distinction; normal
         to moderately decreased height
    V    inhomogeneous, black; hypointense; lost distinction; collapsed disc

The features, all measured on the raw pixels of the two slices around the mid-sagittal surface
inside the disc's fitted endplates:

- ``nucleus_csf_ratio``: nucleus signal over CSF signal (the canal beside the disc). The
  nucleus signal is that of its brightest part: the weighted 95th percentile of the nucleus
  region's signal interpolated between the two slices, the part a reader compares with CSF.
  A nucleus's mean mixes in its fading rim and, with a cleft, its dark band, and so follows
  its shape more than its grade;
- ``nucleus_contrast``: where the nucleus lies between the annulus (0) and CSF (1), i.e.
  (nucleus - annulus) / (CSF - annulus): the signal scale the grades' words describe, from
  "isointense to CSF" down to "black" with no distinction from the annulus;
- ``nucleus_cv``: coefficient of variation inside the nucleus (homogeneity);
- ``cleft_dip``: how much darker a band at mid-height (1 mm high, at least a pixel) is, in
  the nucleus's central column, than the nucleus above and below it (the upper quartile of
  each side, the darker side counting): the horizontal intranuclear cleft of grade II and
  worse. A homogeneous nucleus peaks at mid-height (dip at or under 0); a band that could not
  be measured does not make a disc I;
- ``height_ratio``: disc height over the mean height of its measured neighbours.

The grade follows the words of the definitions on the ``nucleus_contrast`` scale, cut half-way
between the categories' typical places (isointense ~0.85, intermediate ~0.4, intermediate to
hypointense ~0.15, black ~0): I/II above 0.62, III above 0.27, IV above 0.07, else V; I and II
are told apart by the horizontal band (a band 5 % darker than the nucleus around it is II:
under the pixel's blur a band shows as a few per cent at least, a homogeneous nucleus not at
all); a collapsed disc (under half its neighbours' mean height: grade IV allows a "moderately
decreased" height, so half or more is not yet the "collapsed" space of V) with a dark nucleus
is V.
``nucleus_cv`` is written for the reader of the table but does not grade: the nucleus's own
fading rim makes it large in a healthy disc too.
"""

from __future__ import annotations

import numpy as np

from spineflow.measure.settings import DEFAULTS, MeasureSettings


def _weighted(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    if weights.sum() <= 0:
        return float("nan"), float("nan")
    mean = float(np.average(values, weights=weights))
    sd = float(np.sqrt(np.average((values - mean) ** 2, weights=weights)))
    return mean, sd


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    if weights.sum() <= 0:
        return float("nan")
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(np.interp(q * cumulative[-1], cumulative, values[order]))


def _mid_surface(
    pixels, keep: np.ndarray, *, settings: MeasureSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Kept pixels' values interpolated between the two slices at each in-plane position (the
    mid-sagittal surface's signal, with the noise of one slice shrunk), and their weights."""
    u, t, value, weight = (a[keep] for a in (pixels.u, pixels.t, pixels.value, pixels.weight))
    same = np.hypot(u[:, None] - u[None, :], t[:, None] - t[None, :]) < settings.same_pixel_mm
    return (same @ (weight * value)) / np.maximum(same @ weight, 1e-12), weight


def _cleft_dip(pixels, height, offset_mm, central, *, settings: MeasureSettings) -> float:
    """1 - (band at mid-height) / (upper quartile of the darker of the nucleus above and below)."""
    value, weight = pixels.value, pixels.weight
    half_band = max(settings.cleft_half_mm, 0.5 * float(np.abs(pixels.aperture[:, 1]).max()))
    band = central & (np.abs(offset_mm) < half_band)
    nucleus = np.abs(offset_mm) < settings.nucleus_half_height * height
    beside = central & (np.abs(offset_mm) >= half_band) & nucleus
    band_mean, _ = _weighted(value[band], weight[band])
    sides = [beside & (np.sign(offset_mm) == side) for side in (-1, 1)]
    side_level = np.min([_weighted_quantile(value[s], weight[s], 0.75) for s in sides])
    return 1 - band_mean / side_level if side_level > 0 else float("nan")


def disc_features(pixels, disc, csf_level: float, *, settings: MeasureSettings = DEFAULTS) -> dict:
    """Features of one disc from its pixels (``EdgePixels`` in the disc's frame) between the
    fitted endplates; ``csf_level`` is the CSF signal beside it."""
    u, t, value, weight = pixels.u, pixels.t, pixels.value, pixels.weight
    top, bottom = np.polyval(disc.upper_coef, u), np.polyval(disc.lower_coef, u)
    mid, height = (top + bottom) / 2, np.maximum(top - bottom, 1e-6)
    centre_u, width = (disc.u_ant + disc.u_post) / 2, disc.u_ant - disc.u_post
    across = np.abs(t - mid) / height  # 0 at mid-height, 0.5 at an endplate
    along = (u - centre_u) / width  # -0.5 posterior end, +0.5 anterior end
    nucleus = (np.abs(along) < settings.nucleus_half_width) & (
        across < settings.nucleus_half_height
    )
    annulus = (np.abs(along) > 0.36) & (np.abs(along) < 0.46) & (across < 0.25)
    n_mean, n_sd = _weighted(value[nucleus], weight[nucleus])
    n_bright = _weighted_quantile(
        *_mid_surface(pixels, nucleus, settings=settings), settings.nucleus_quantile
    )
    a_mean, _ = _weighted(value[annulus], weight[annulus])
    return {
        "nucleus_csf_ratio": n_bright / csf_level if csf_level > 0 else float("nan"),
        "nucleus_contrast": (n_bright - a_mean) / (csf_level - a_mean)
        if csf_level > a_mean
        else float("nan"),
        "nucleus_cv": n_sd / n_mean if n_mean > 0 else float("nan"),
        "cleft_dip": _cleft_dip(
            pixels, height, t - mid, np.abs(along) < settings.central_column, settings=settings
        ),
    }


def grade(features: dict, *, settings: MeasureSettings = DEFAULTS) -> float:
    """Pfirrmann grade 1-5 from the features (NaN when the nucleus could not be measured)."""
    contrast = features.get("nucleus_contrast", float("nan"))
    if not np.isfinite(contrast):
        return float("nan")
    collapsed = features.get("height_ratio", 1.0) < settings.collapsed_height_ratio
    if contrast < settings.contrast_cuts[2] or (collapsed and contrast < settings.contrast_cuts[1]):
        return 5
    if contrast < settings.contrast_cuts[1]:
        return 4
    if contrast < settings.contrast_cuts[0]:
        return 3
    # homogeneity must be seen: a band that could not be measured does not make a disc I
    return 1 if features.get("cleft_dip", np.nan) < settings.cleft_dip_ii else 2
