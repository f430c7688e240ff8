"""The minimum of a function sampled on an evenly spaced grid, to a fraction of the step."""

from __future__ import annotations

import numpy as np


def refined_minimum(grid: np.ndarray, values) -> float | None:
    """Where the smallest of ``values`` (sampled at the evenly spaced ``grid``) lies, refined
    by the parabola through it and its two neighbours; None when it lies on the grid's edge
    (no neighbour on one side: the minimum may be beyond)."""
    best = int(np.argmin(values))
    if best in (0, len(values) - 1):
        return None
    return float(grid[best] + _vertex(values, best)[0] * (grid[1] - grid[0]))


def refined_minimum_value(values) -> float:
    """The smallest of ``values`` (sampled on an evenly spaced grid), refined by the parabola
    through it and its two neighbours (the sample itself on the grid's edge)."""
    best = int(np.argmin(values))
    if best in (0, len(values) - 1):
        return float(values[best])
    return _vertex(values, best)[1]


def _vertex(values, best: int) -> tuple[float, float]:
    """Offset (in grid steps) and value of the parabola's vertex through values[best] and its
    two neighbours (no offset where it does not curve upwards)."""
    a, b, c = (float(v) for v in values[best - 1 : best + 2])
    curvature = a - 2 * b + c
    if curvature <= 0:
        return 0.0, b
    offset = 0.5 * (a - c) / curvature
    return offset, b - 0.25 * (a - c) * offset
