"""The refined minimum of a grid search, on functions whose minimum is known."""

import numpy as np

from spineflow.core.gridsearch import refined_minimum, refined_minimum_value


def test_a_parabolas_minimum_is_found_between_the_grid_points():
    grid = np.arange(-3.0, 3.01, 0.5)
    assert abs(refined_minimum(grid, 2.0 * (grid - 0.37) ** 2 + 1.0) - 0.37) < 1e-12


def test_a_parabolas_least_value_is_found_between_the_grid_points():
    grid = np.arange(-3.0, 3.01, 0.5)
    values = 2.0 * (grid - 0.37) ** 2 + 1.0
    assert abs(refined_minimum_value(values) - 1.0) < 1e-12
    assert values.min() > 1.03  # the grid alone misses it


def test_a_minimum_on_the_edge_of_the_grid_is_none():
    grid = np.arange(0.0, 1.31, 0.1)
    assert refined_minimum(grid, grid) is None
    assert refined_minimum(grid, -grid) is None
    assert refined_minimum_value(-grid) == -grid[-1]
