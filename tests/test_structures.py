"""Label maps completed with what lies between their structures (``structures.complete``)."""

import numpy as np
import pytest

from spineflow.core.anatomy import VERTEBRA_LABELS, disc_label
from spineflow.segment.settings import DEFAULTS
from spineflow.segment.structures import complete

SHAPE = (9, 80, 160)  # [x, y, z] canonical, 1 mm voxels
SPACING = (1.0, 1.0, 1.0)
# a straight column: (name, first row z, last row z) of bodies and the discs between them
COLUMN = [("L3", 121, 146), ("L3-L4", 111, 120), ("L4", 84, 110), ("L4-L5", 74, 83),
          ("L5", 47, 73), ("L5-S1", 37, 46), ("S1", 5, 36)]  # fmt: skip


def _value(name):
    return disc_label(name.split("-")[0]) if "-" in name else VERTEBRA_LABELS[name]


def _column(keep):
    truth = np.zeros(SHAPE, np.int16)
    for name, z0, z1 in COLUMN:
        truth[2:7, 20:56, z0 : z1 + 1] = _value(name)
    given = truth.copy()
    given[(given >= 100) if keep == "bodies" else (given < 100)] = 0
    return truth, given


def test_discs_are_filled_between_bodies_exactly():
    truth, given = _column("bodies")
    filled, names = complete(given, SPACING)
    assert sorted(names) == sorted(
        f"{n} between its vertebrae" for n in ("L3-L4", "L4-L5", "L5-S1")
    )
    assert np.array_equal(filled, truth)


def test_bodies_are_filled_between_discs_and_next_to_the_outermost():
    truth, given = _column("discs")
    filled, names = complete(given, SPACING)
    for name in ("L4", "L5"):  # between two discs: exactly
        assert np.array_equal(filled == _value(name), truth == _value(name)), name
    for name, disc in (("L3", "L3-L4"), ("S1", "L5-S1")):  # beyond the outermost: a slab
        rows = np.flatnonzero((filled == _value(name)).any(axis=(0, 1)))
        disc_rows = np.flatnonzero((truth == _value(disc)).any(axis=(0, 1)))
        assert len(rows) == pytest.approx(DEFAULTS.end_body_mm, abs=1)
        assert rows.min() == disc_rows.max() + 1 or rows.max() == disc_rows.min() - 1
    assert "L3 next to its disc" in names and "S1 next to its disc" in names


def test_labelled_voxels_are_never_changed_and_nothing_is_invented():
    truth, _ = _column("both")
    filled, names = complete(truth, SPACING)
    assert np.array_equal(filled, truth) and names == []
