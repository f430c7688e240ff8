"""Sub-voxel endplate location from an intensity profile.

Across an endplate the signal goes from marrow through a thin dark cortex (0.3-0.8 mm, below
the 1.1 mm pixel) into the disc. The marrow boundary is found where the signal crosses half-way
between the marrow plateau and the most different signal in front of it (the half-maximum
criterion, unbiased for a blurred step). When the disc side is darker than marrow that crossing
marks the marrow/cortex boundary and the bony surface lies one cortex thickness further out;
when the disc is brighter the unresolved cortex already pulls the crossing to about the surface.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import curve_fit
from scipy.special import ndtr

def marrow_boundary(t_mm: np.ndarray, values: np.ndarray, guess_mm: float, vertebra_side: int):
    """(crossing position, disc darker than marrow?) at the first step out of the marrow.

    Walks from inside the vertebra (guess + 6 mm) towards the disc until the signal leaves the
    marrow plateau, follows it to its first extreme (a dark cortex and annulus, or a bright disc
    that hides a thin cortex) and returns where it crossed half-way between plateau and extreme.
    Robust to a guess a millimetre or two off; NaN without a clear step.
    """
    s = np.asarray(t_mm, dtype=float) * vertebra_side
    y = np.asarray(values, dtype=float)
    g = guess_mm * vertebra_side
    # the plateau may be short where the vertebra itself is cut by the field of view
    plateau = (s >= g + 1.5) & (s <= g + 8.0) & np.isfinite(y)
    if plateau.sum() < 4:
        return float("nan"), False
    marrow = np.median(y[plateau])
    noise = 1.4826 * np.median(np.abs(y[plateau] - marrow))
    threshold = max(0.2 * abs(marrow), 4 * noise)
    order = np.argsort(-s)  # from the vertebra towards the disc
    s_sorted, y_sorted = s[order], y[order]
    k = int(np.searchsorted(-s_sorted, -(g + 6.0)))
    while k < len(y_sorted) and not np.isfinite(y_sorted[k]):  # outside the image: skip
        k += 1
    while k < len(y_sorted) and not abs(y_sorted[k] - marrow) > threshold:
        if s_sorted[k] < g - 4.0 or not np.isfinite(y_sorted[k]):
            return float("nan"), False
        k += 1
    if k >= len(y_sorted):
        return float("nan"), False
    sign = np.sign(marrow - y_sorted[k])  # +1: the disc side is darker
    extreme_k = k
    while extreme_k + 1 < len(y_sorted) and sign * (y_sorted[extreme_k] - y_sorted[extreme_k + 1]) >= 0:
        extreme_k += 1
    half = (marrow + y_sorted[extreme_k]) / 2
    for j in range(max(k - 1, 0), extreme_k + 1):
        if sign * (y_sorted[j] - half) >= 0 > sign * (y_sorted[j + 1] - half):
            frac = (y_sorted[j] - half) / (y_sorted[j] - y_sorted[j + 1])
            crossing = s_sorted[j] + frac * (s_sorted[j + 1] - s_sorted[j])
            window = (s_sorted <= g + 8.0) & (s_sorted >= s_sorted[extreme_k])
            refined = _step_fit(s_sorted[window], y_sorted[window] * sign + half, crossing)
            return float(refined * vertebra_side), bool(sign > 0)
    return float("nan"), False


def _step_fit(s: np.ndarray, y: np.ndarray, start: float) -> float:
    """Centre of a blurred step (erf) fitted to the marrow side of the profile; its blur width
    is free, so the centre does not depend on the scanner's point-spread function."""

    def step(x, centre, width, low, high):
        return low + (high - low) * ndtr((x - centre) / width)

    finite = np.isfinite(y)
    try:
        params, _ = curve_fit(
            step, s[finite], y[finite], p0=(start, 0.6, y[finite].min(), y[finite].max()),
            bounds=([start - 1.5, 0.05, -np.inf, -np.inf], [start + 1.5, 3.0, np.inf, np.inf]),
        )  # fmt: skip
    except (RuntimeError, ValueError):
        return start
    return float(params[0])


def fit_edge(
    t_mm: np.ndarray,
    values: np.ndarray,
    guess_mm: float,
    vertebra_side: int,
    cortex_mm: float = 0.5,
) -> float:
    """Position (on t) of the endplate surface; vertebra_side +1 if marrow lies at larger t.

    NaN when the profile shows no step out of the marrow near the guess.
    """
    crossing, disc_is_darker = marrow_boundary(t_mm, values, guess_mm, vertebra_side)
    if not np.isfinite(crossing):
        return float("nan")
    return crossing - vertebra_side * (cortex_mm if disc_is_darker else 0.0)
