"""BIDS ids with or without their prefix."""

import pytest

from spineflow.core.ids import bare, prefixed


@pytest.mark.parametrize("value", ["sub-01", "01", " sub-01 ", " 01"])
def test_a_participant_id_either_way(value):
    assert (bare(value, "sub"), prefixed(value, "sub")) == ("01", "sub-01")


def test_a_session_number_and_a_label_that_only_looks_prefixed():
    assert (bare(2, "ses"), prefixed(2, "ses")) == ("2", "ses-2")
    assert prefixed("subject1", "sub") == "sub-subject1"  # 'sub' without its '-' is the label's
