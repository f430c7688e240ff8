"""The refined minimum of a grid search, on functions whose minimum is known."""

import numpy as np

from spineflow.core.gridsearch import refined_minimum, walked_minimum_value


def test_a_parabolas_minimum_is_found_between_the_grid_points():
    grid = np.arange(-3.0, 3.01, 0.5)
    assert abs(refined_minimum(grid, 2.0 * (grid - 0.37) ** 2 + 1.0) - 0.37) < 1e-12


def test_a_parabolas_least_value_is_found_between_the_grid_points():
    grid = np.arange(-3.0, 3.01, 0.5)
    values = 2.0 * (grid - 0.37) ** 2 + 1.0
    assert abs(walked_minimum_value(lambda k: values[k], len(grid), 0)[0] - 1.0) < 1e-12
    assert values.min() > 1.03  # the grid alone misses it


def test_a_minimum_on_the_edge_of_the_grid_is_none():
    grid = np.arange(0.0, 1.31, 0.1)
    assert refined_minimum(grid, grid) is None
    assert refined_minimum(grid, -grid) is None


def test_a_walk_finds_the_grids_refined_least_value_reading_only_its_way_there():
    grid = np.arange(-6.0, 6.01, 1.0)
    read = []

    def parabola(k):
        read.append(k)
        return 2.0 * (grid[k] - 2.3) ** 2 + 1.0

    value, best = walked_minimum_value(parabola, len(grid), len(grid) // 2)
    assert abs(value - 1.0) < 1e-12 and grid[best] == 2.0
    assert sorted(set(read)) == [5, 6, 7, 8, 9] and len(read) == len(set(read))


def test_a_walk_stops_at_the_first_minimum_downhill_and_on_the_grids_edge():
    grid = np.arange(0.0, 10.0)
    two_valleys = (grid - 2.0) ** 2 * (grid - 8.0) ** 2 - grid  # the deeper one at 8
    value, best = walked_minimum_value(lambda k: two_valleys[k], len(grid), 3)
    assert best == 2 and value <= two_valleys[2]
    value, best = walked_minimum_value(lambda k: -grid[k], len(grid), 4)
    assert best == len(grid) - 1 and value == -grid[-1]
