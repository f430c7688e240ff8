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
    a, b, c = (float(v) for v in values[best - 1 : best + 2])
    curvature = a - 2 * b + c
    vertex = 0.5 * (a - c) / curvature if curvature > 0 else 0.0
    return float(grid[best] + vertex * (grid[1] - grid[0]))
