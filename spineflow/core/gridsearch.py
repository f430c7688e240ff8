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


def _vertex(values, best: int) -> tuple[float, float]:
    """Offset (in grid steps) and value of the parabola's vertex through values[best] and its
    two neighbours (no offset where it does not curve upwards)."""
    a, b, c = (float(v) for v in values[best - 1 : best + 2])
    curvature = a - 2 * b + c
    if curvature <= 0:
        return 0.0, b
    offset = 0.5 * (a - c) / curvature
    return offset, b - 0.25 * (a - c) * offset


def walked_minimum_value(function, n_points: int, start: int) -> tuple[float, int]:
    """The least value of ``function`` (of a grid index, 0 to n_points - 1) at the local minimum
    reached by walking downhill from ``start``, refined by the parabola through it and its two
    neighbours (the sample itself on the grid's edge), and that minimum's index. The function
    is evaluated only along the walk and beside its end: the same as over the whole grid
    wherever the function has one minimum on it."""
    values: dict[int, float] = {}

    def at(index: int) -> float:
        if not 0 <= index < n_points:
            return np.inf
        if index not in values:
            values[index] = function(index)
        return values[index]

    best = min(max(start, 0), n_points - 1)
    while True:
        step = min((-1, 1), key=lambda s: at(best + s))
        if at(best + step) >= at(best):
            break
        best += step
    if best in (0, n_points - 1):
        return at(best), best
    return _vertex([at(best - 1), at(best), at(best + 1)], 1)[1], best
