"""``spineflow-dev reregister``: a finished run's pairs registered again by this checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from spineflow_dev.bench import default_geometry_rule
from spineflow_dev.reregister import format_result, registered_pairs, reregister

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_the_same_code_registers_a_runs_pair_again_to_the_same_error(tiny_run, tmp_path):
    """On one thread a registration reproduces itself: the tool, reading the run's images and
    labels, must land on the run's own transforms and so on its error at the true discs."""
    cohort, output, *_ = tiny_run
    pairs = registered_pairs(output)
    assert pairs and all((output / "derivatives" / "spineflow" / p).is_dir() for p in pairs)
    result = reregister(output, cohort / "truth", tmp_path, default_geometry_rule(REPO), 1,
                        pairs[:1])  # fmt: skip
    assert result["pairs"] == 1 and result["cpu_per_pair_s"]["mean"] > 0
    new, run = result["tre_mm"]["new"], result["tre_mm"]["run"]
    assert new["n"] == run["n"] > 0
    assert new["mean"] == run["mean"] and new["max"] == run["max"]
    assert "1 pairs" in format_result(result)
