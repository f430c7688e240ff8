"""Sub-voxel endplate location from an intensity profile.

Across an endplate the signal goes from marrow through a thin cortex (bone: no signal; 0.4-0.6
mm, below the 1.1 mm pixel) into the disc. The first step out of the marrow is found at its
half-maximum crossing, then refined by fitting a blurred marrow | cortex | disc model whose
levels are free. The cortex thickness cannot be seen against a dark disc, so it is an input
(config ``measurement.endplate_cortex_mm``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

DISC_SIDE_MM = 1.75  # how much of the disc the edge model sees: past the blur, short of the nucleus


def marrow_boundary(
    t_mm: np.ndarray,
    values: np.ndarray,
    guess_mm: float,
    vertebra_side: int,
    plateau_mm: tuple[float, float] = (1.5, 8.0),
):
    """Position of the half-way crossing at the first step out of the marrow (NaN if none).

    Walks from inside the vertebra (mid-plateau) towards the disc until the signal leaves the
    marrow plateau, takes the most different signal within the next 2.5 mm (a dark cortex and
    annulus, or a bright disc that hides a thin cortex) and returns where the profile crossed
    half-way between plateau and that extreme. Robust to a guess a millimetre or two off; NaN
    without a clear step.
    """
    s = np.asarray(t_mm, dtype=float) * vertebra_side
    y = np.asarray(values, dtype=float)
    g = guess_mm * vertebra_side
    # the plateau may be short where the vertebra itself is cut by the field of view
    plateau = (s >= g + plateau_mm[0]) & (s <= g + plateau_mm[1]) & np.isfinite(y)
    if plateau.sum() < 4:
        return float("nan")
    marrow = np.median(y[plateau])
    noise = 1.4826 * np.median(np.abs(y[plateau] - marrow))
    threshold = max(0.2 * abs(marrow), 4 * noise)
    order = np.argsort(-s)  # from the vertebra towards the disc
    s_sorted, y_sorted = s[order], y[order]
    first = int(np.searchsorted(-s_sorted, -(g + sum(plateau_mm) / 2)))  # mid-plateau
    while first < len(y_sorted) and not np.isfinite(y_sorted[first]):  # outside the image
        first += 1
    k = first
    while k < len(y_sorted) and not abs(y_sorted[k] - marrow) > threshold:
        if s_sorted[k] < g - 4.0 or not np.isfinite(y_sorted[k]):
            return float("nan")
        k += 1
    if k >= len(y_sorted):
        return float("nan")
    sign = np.sign(marrow - y_sorted[k])  # +1: the disc side is darker
    ahead = np.flatnonzero((s_sorted <= s_sorted[k]) & (s_sorted >= s_sorted[k] - 2.5))
    extreme = np.nanmax(sign * (marrow - y_sorted[ahead]))
    half = marrow - sign * extreme / 2
    for j in range(first, min(ahead.max(), len(y_sorted) - 1)):
        if sign * (y_sorted[j] - half) >= 0 > sign * (y_sorted[j + 1] - half):
            frac = (y_sorted[j] - half) / (y_sorted[j] - y_sorted[j + 1])
            crossing = s_sorted[j] + frac * (s_sorted[j + 1] - s_sorted[j])
            return float(crossing * vertebra_side)
    return float("nan")


def _design(s: np.ndarray, marrow_edge: float, cortex_mm: float, blur_mm: float) -> np.ndarray:
    """Blurred model basis: marrow beyond the edge, no signal in the cortex (bone), then the
    disc's level."""
    surface = marrow_edge - cortex_mm
    return np.column_stack([ndtr((s - marrow_edge) / blur_mm), ndtr((surface - s) / blur_mm)])


def fit_edge(
    t_mm: np.ndarray,
    values: np.ndarray,
    guess_mm: float,
    vertebra_side: int,
    cortex_mm: float = 0.5,
    blur_mm: float = 0.5,
) -> float:
    """Position (on t) of the endplate surface; vertebra_side +1 if marrow lies at larger t.

    The half-maximum crossing finds the marrow edge; a partial-volume model then refines it:
    marrow | cortex of ``cortex_mm`` with no signal (bone) | disc, blurred by a Gaussian of
    ``blur_mm`` (pixel and interpolation), fitted to the marrow side and the first
    ``DISC_SIDE_MM`` of the disc. Marrow and disc levels are free, so bright and dark discs are
    handled alike. The surface is the cortex's disc side. NaN without a clear step.
    """
    crossing = marrow_boundary(t_mm, values, guess_mm, vertebra_side)
    if not np.isfinite(crossing):
        return float("nan")
    s = np.asarray(t_mm, dtype=float) * vertebra_side
    y = np.asarray(values, dtype=float)
    b0 = crossing * vertebra_side
    window = np.isfinite(y) & (s >= b0 - cortex_mm - DISC_SIDE_MM) & (s <= b0 + 4.0)
    if window.sum() < 10:
        return (b0 - cortex_mm) * vertebra_side
    s_in, y_in = s[window], y[window]
    best, best_sse = b0, np.inf
    for edge in np.arange(b0 - 1.0, b0 + 1.0 + 1e-9, 0.02):
        design = _design(s_in, edge, cortex_mm, blur_mm)
        coef, *_ = np.linalg.lstsq(design, y_in, rcond=None)
        sse = float(np.sum((design @ coef - y_in) ** 2))
        if sse < best_sse:
            best, best_sse = edge, sse
    return float((best - cortex_mm) * vertebra_side)
