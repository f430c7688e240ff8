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

# the disc's level is read 1.25-1.75 mm in front of the cortex: past the blur of the edge,
# before the nucleus starts to brighten the disc's inside
DISC_SIDE_MM = 1.25
DISC_LEVEL_MM = 0.5

def marrow_boundary(
    t_mm: np.ndarray,
    values: np.ndarray,
    guess_mm: float,
    vertebra_side: int,
    plateau_mm: tuple[float, float] = (1.5, 8.0),
):
    """(crossing position, disc darker than marrow?) at the first step out of the marrow.

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
        return float("nan"), False
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
            return float("nan"), False
        k += 1
    if k >= len(y_sorted):
        return float("nan"), False
    sign = np.sign(marrow - y_sorted[k])  # +1: the disc side is darker
    ahead = np.flatnonzero((s_sorted <= s_sorted[k]) & (s_sorted >= s_sorted[k] - 2.5))
    extreme = np.nanmax(sign * (marrow - y_sorted[ahead]))
    half = marrow - sign * extreme / 2
    for j in range(first, min(ahead.max(), len(y_sorted) - 1)):
        if sign * (y_sorted[j] - half) >= 0 > sign * (y_sorted[j + 1] - half):
            frac = (y_sorted[j] - half) / (y_sorted[j] - y_sorted[j + 1])
            crossing = s_sorted[j] + frac * (s_sorted[j + 1] - s_sorted[j])
            return float(crossing * vertebra_side), bool(sign > 0)
    return float("nan"), False


def fit_edge(
    t_mm: np.ndarray,
    values: np.ndarray,
    guess_mm: float,
    vertebra_side: int,
    cortex_mm: float = 0.5,
) -> float:
    """Position (on t) of the endplate surface; vertebra_side +1 if marrow lies at larger t.

    The half-maximum crossing finds the marrow edge to about a pixel's tenth on a plain step,
    but a cortex thinner than the pixel shifts it. The area under the profile does not care how
    the scanner blurred it: between a point in the disc (level L) and one in the marrow (M),
    integral(y - L) = (M - L)(s1 - b) + (0 - L) * cortex, cortical bone giving no signal. That
    gives the marrow edge b; the surface is a cortex further out. NaN without a clear step.
    """
    crossing, _ = marrow_boundary(t_mm, values, guess_mm, vertebra_side)
    if not np.isfinite(crossing):
        return float("nan")
    s = np.asarray(t_mm, dtype=float) * vertebra_side
    y = np.asarray(values, dtype=float)
    b0 = crossing * vertebra_side
    s0, s1 = b0 - cortex_mm - DISC_SIDE_MM, b0 + 3.0
    marrow = np.nanmedian(y[(s >= b0 + 2.0) & (s <= b0 + 6.0)])
    disc_side = np.isfinite(y) & (s >= s0 - DISC_LEVEL_MM) & (s <= s0)
    window = np.isfinite(y) & (s >= s0) & (s <= s1)
    if disc_side.sum() < 2 or window.sum() < 8:  # a thin disc (fused remnant): crossing alone
        return (b0 - cortex_mm) * vertebra_side
    disc = np.median(y[disc_side])
    if abs(marrow - disc) < 0.1 * abs(marrow):
        return (b0 - cortex_mm) * vertebra_side  # no usable disc level: the crossing alone
    order = np.argsort(s[window])
    s_in, y_in = s[window][order], y[window][order]
    area = np.trapezoid(y_in - disc, s_in)  # from the first to the last sample in the window
    edge = s_in[-1] - (area + disc * cortex_mm) / (marrow - disc)
    if abs(edge - b0) > 1.5:  # the area saw something other than one step: keep the crossing
        edge = b0
    return float((edge - cortex_mm) * vertebra_side)
