"""A step's failure record: written with the error when it fails, cleared when a retry of the
same step succeeds (else the next run would leave the session out as failed)."""

import json
from types import SimpleNamespace

import pytest

from spineflow.runner import run


class _Wildcards(dict):
    __getattr__ = dict.__getitem__


def _smk(tmp_path):
    wildcards = _Wildcards(subject="01", session="1")
    return SimpleNamespace(log=[str(tmp_path / "step.log")], threads=1, rule="segment",
                           wildcards=wildcards)  # fmt: skip


def _fails():
    raise ValueError("no sacrum in view\nmore detail")


def test_a_failure_is_recorded_and_cleared_when_the_retry_succeeds(tmp_path):
    record = tmp_path / "failures" / "sub-01_ses-1_failure.json"
    with pytest.raises(ValueError):
        run(_smk(tmp_path), _fails, failure_record=str(record))
    written = json.loads(record.read_text())
    assert written["participant_id"] == "sub-01" and written["session_id"] == "ses-1"
    assert written["message"] == "ValueError: no sacrum in view (details in step.log)"
    assert run(_smk(tmp_path), lambda: 42, failure_record=str(record)) == 42
    assert not record.exists()
