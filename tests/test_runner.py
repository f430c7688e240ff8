"""A step's failure on its data: recorded with the error, placeholders for its outputs so that
the run goes on, the later steps of the same data skipped, the placeholders removed at the end;
a retry that succeeds clears the record (else the next run would leave the session out)."""

import json
import os
import time
from types import SimpleNamespace

import pytest

from spineflow.core.runner import (
    PLACEHOLDER,
    is_placeholder,
    job_cpu_s,
    read_failures,
    remove_placeholders,
    run,
)


class _Wildcards(dict):
    __getattr__ = dict.__getitem__


def _smk(tmp_path, inputs=(), outputs=(), rule="segment"):
    wildcards = _Wildcards(subject="01", session="1")
    return SimpleNamespace(log=[str(tmp_path / f"{rule}.log")], threads=1, rule=rule,
                           wildcards=wildcards, input=list(inputs),
                           output=list(outputs))  # fmt: skip


def _fails():
    raise ValueError("no sacrum in view\nmore detail")


def test_a_failure_is_recorded_leaves_placeholders_and_clears_on_retry(tmp_path):
    record = tmp_path / "failures" / "sub-01_ses-1_failure.json"
    outputs = [tmp_path / "sub-01" / "dseg.nii.gz", tmp_path / "sub-01" / "dseg.json"]
    assert run(_smk(tmp_path, outputs=outputs), _fails, failure_record=str(record)) is None
    written = json.loads(record.read_text())
    assert written["participant_id"] == "sub-01" and written["session_id"] == "ses-1"
    assert written["message"] == "ValueError: no sacrum in view (details in segment.log)"
    assert all(is_placeholder(path) for path in outputs)
    assert "more detail" in (tmp_path / "segment.log").read_text()  # the whole traceback

    later = tmp_path / "sub-01" / "discs.tsv"
    called = []
    smk = _smk(tmp_path, inputs=[outputs[0]], outputs=[later], rule="measure")
    assert run(smk, lambda: called.append(1), failure_record=str(record)) is None
    assert called == [] and is_placeholder(later)  # skipped: an earlier step failed

    assert sorted(remove_placeholders([tmp_path / "sub-01"])) == sorted([*outputs, later])
    assert run(_smk(tmp_path), lambda: 42, failure_record=str(record)) == 42
    assert not record.exists()


def test_a_pooled_input_that_failed_does_not_skip_the_step(tmp_path):
    fits = [tmp_path / "ses-1_cortex.json", tmp_path / "ses-2_cortex.json"]
    fits[0].write_text("{}")
    fits[1].write_bytes(PLACEHOLDER)
    smk = _smk(tmp_path, inputs=[tmp_path / "image.nii.gz", fits], rule="measure")
    (tmp_path / "image.nii.gz").write_bytes(b"image")
    assert run(smk, lambda: "measured", pooled_inputs=fits) == "measured"
    assert run(smk, lambda: "measured") is None  # not pooled: the step waits for the retry


def test_a_failure_without_a_record_is_raised(tmp_path):
    """A cohort step (no data of its own) stops: its failure is no session's."""
    smk = SimpleNamespace(log=[], threads=1, rule="statistics", wildcards=_Wildcards(),
                          input=[], output=[])  # fmt: skip
    with pytest.raises(ValueError, match="no sacrum"):
        run(smk, _fails)


def test_only_placeholders_are_removed(tmp_path):
    kept = tmp_path / "sub-01" / "anat" / "empty.log"
    kept.parent.mkdir(parents=True)
    kept.write_text("")
    (tmp_path / "sub-01" / "anat" / "short.txt").write_bytes(PLACEHOLDER[:-1])
    (tmp_path / "sub-01" / "anat" / "x.tsv").write_bytes(PLACEHOLDER)
    assert remove_placeholders([tmp_path / "sub-01", tmp_path / "missing"]) == [
        tmp_path / "sub-01" / "anat" / "x.tsv"
    ]
    assert kept.exists() and (tmp_path / "sub-01" / "anat" / "short.txt").exists()


def test_failures_read_in_name_order_and_since_a_time(tmp_path):
    for name, written in (("sub-02_ses-1_failure.json", 1000.0), ("sub-01_failure.json", 2000.0)):
        path = tmp_path / name
        path.write_text(json.dumps({"participant_id": name.split("_")[0]}))
        os.utime(path, (written, written))
    assert [r["participant_id"] for r in read_failures(tmp_path)] == ["sub-01", "sub-02"]
    assert [r["participant_id"] for r in read_failures(tmp_path, since=1500.0)] == ["sub-01"]
    assert read_failures(tmp_path / "none") == []


def _spin(seconds: float) -> None:
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass


def test_the_log_states_the_jobs_whole_cpu_whether_it_succeeds_or_fails(tmp_path):
    before = time.process_time()
    run(_smk(tmp_path, rule="register"), _spin, seconds=0.3)
    stated = job_cpu_s(tmp_path / "register.log")
    # the whole process's CPU so far (this test session's too), the step's 0.3 s included
    assert stated >= before + 0.3
    record = tmp_path / "failure.json"
    run(_smk(tmp_path, rule="segment"), _fails, failure_record=str(record))
    assert job_cpu_s(tmp_path / "segment.log") >= stated
    assert job_cpu_s(tmp_path / "none.log") is None
