"""spineflow.workflow.plan.run_plan: what a run makes, given the visits and the last failures."""

import pandas as pd

from spineflow.workflow.plan import run_plan

PLAN = pd.DataFrame(
    [("sub-01", "ses-1", "ok", "k1", ""), ("sub-01", "ses-2", "ok", "k2", ""),
     ("sub-02", "ses-1", "ok", "k3", ""), ("sub-02", "ses-2", "ok", "k4", ""),
     ("sub-03", "ses-1", "ok", "k5", ""), ("sub-03", "ses-2", "failed", "", "no geometry"),
     ("sub-04", "ses-1", "ok", "k6", ""), ("sub-04", "ses-2", "ok", "k7", "")],
    columns=["participant_id", "session_id", "status", "series_key", "note"],
)  # fmt: skip
FAILURES = [
    {"participant_id": "sub-02", "session_id": "ses-2", "stage": "segment", "message": "x"},
    {"participant_id": "sub-04", "session_id": None, "stage": "register", "message": "y"},
]


def test_failed_sessions_leave_the_run_and_failed_pairs_the_longitudinal_step():
    run = run_plan(PLAN, FAILURES, retry_failed=False)
    assert run.sessions == [("01", "1"), ("01", "2"), ("02", "1"), ("03", "1"), ("04", "1"),
                            ("04", "2")]  # fmt: skip
    assert run.subjects_with_pair == ["01"]  # 02 lost ses-2, 03 has none, 04's pair failed
    assert run.index_failures == [{"participant_id": "sub-03", "session_id": "ses-2",
                                   "stage": "dicom_index", "message": "no geometry"}]  # fmt: skip
    assert run.series_key[("02", "2")] == "k4"  # a failed session's series is still known
    assert ("03", "2") not in run.series_key and len(run.visits) == len(PLAN)


def test_retry_failed_runs_everything_the_index_allows():
    run = run_plan(PLAN, FAILURES, retry_failed=True)
    assert len(run.sessions) == 7 and run.subjects_with_pair == ["01", "02", "04"]
