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

- ``nucleus_csf_ratio``: nucleus signal over CSF signal (the canal beside the disc);
- ``nucleus_contrast``: where the nucleus lies between the annulus (0) and CSF (1), i.e.
  (nucleus - annulus) / (CSF - annulus): the signal scale the grades' words describe, from
  "isointense to CSF" down to "black" with no distinction from the annulus;
- ``nucleus_cv``: coefficient of variation inside the nucleus (homogeneity);
- ``cleft_dip``: how much darker the nucleus is in a thin band at mid-height than above and
  below it (the horizontal intranuclear cleft of grade II and worse);
- ``height_ratio``: disc height over the mean height of its measured neighbours.

The grade follows the words of the definitions on the ``nucleus_contrast`` scale, cut half-way
between the categories' typical places (isointense ~0.85, intermediate ~0.4, intermediate to
hypointense ~0.15, black ~0): I/II above 0.62, III above 0.27, IV above 0.07, else V; I and II
are told apart by homogeneity (no horizontal band); a collapsed disc (height under 60 % of its
neighbours') with a dark nucleus is V.
"""

from __future__ import annotations

import numpy as np

CONTRAST_CUTS = (0.62, 0.27, 0.07)  # II|III, III|IV, IV|V on the nucleus_contrast scale
CLEFT_DIP_II = 0.1  # a horizontal band this much darker than the nucleus around it: grade II
NUCLEUS_CV_II = 0.2
COLLAPSED_HEIGHT_RATIO = 0.6


def _weighted(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    if weights.sum() <= 0:
        return float("nan"), float("nan")
    mean = float(np.average(values, weights=weights))
    sd = float(np.sqrt(np.average((values - mean) ** 2, weights=weights)))
    return mean, sd


def disc_features(pixels, disc, csf_level: float) -> dict:
    """Features of one disc from its pixels (``EdgePixels`` in the disc's frame) between the
    fitted endplates; ``csf_level`` is the CSF signal beside it."""
    u, t, value, weight = pixels.u, pixels.t, pixels.value, pixels.weight
    top, bottom = np.polyval(disc.upper_coef, u), np.polyval(disc.lower_coef, u)
    mid, height = (top + bottom) / 2, np.maximum(top - bottom, 1e-6)
    centre_u, width = (disc.u_ant + disc.u_post) / 2, disc.u_ant - disc.u_post
    across = np.abs(t - mid) / height  # 0 at mid-height, 0.5 at an endplate
    along = (u - centre_u) / width  # -0.5 posterior end, +0.5 anterior end
    nucleus = (np.abs(along) < 0.2) & (across < 0.3)
    annulus = (np.abs(along) > 0.36) & (np.abs(along) < 0.46) & (across < 0.25)
    band = (np.abs(along) < 0.2) & (across < 0.08)
    flanks = (np.abs(along) < 0.2) & (across > 0.12) & (across < 0.3)
    n_mean, n_sd = _weighted(value[nucleus], weight[nucleus])
    a_mean, _ = _weighted(value[annulus], weight[annulus])
    b_mean, _ = _weighted(value[band], weight[band])
    f_mean, _ = _weighted(value[flanks], weight[flanks])
    return {
        "nucleus_csf_ratio": n_mean / csf_level if csf_level > 0 else float("nan"),
        "nucleus_contrast": (n_mean - a_mean) / (csf_level - a_mean)
        if csf_level > a_mean
        else float("nan"),
        "nucleus_cv": n_sd / n_mean if n_mean > 0 else float("nan"),
        "cleft_dip": 1 - b_mean / f_mean if f_mean > 0 else float("nan"),
    }


def grade(features: dict) -> float:
    """Pfirrmann grade 1-5 from the features (NaN when the nucleus could not be measured)."""
    contrast = features.get("nucleus_contrast", float("nan"))
    if not np.isfinite(contrast):
        return float("nan")
    collapsed = features.get("height_ratio", 1.0) < COLLAPSED_HEIGHT_RATIO
    if contrast < CONTRAST_CUTS[2] or (collapsed and contrast < CONTRAST_CUTS[1]):
        return 5
    if contrast < CONTRAST_CUTS[1]:
        return 4
    if contrast < CONTRAST_CUTS[0]:
        return 3
    banded = features.get("cleft_dip", 0.0) >= CLEFT_DIP_II
    inhomogeneous = features.get("nucleus_cv", 0.0) >= NUCLEUS_CV_II
    return 2 if banded or inhomogeneous else 1
