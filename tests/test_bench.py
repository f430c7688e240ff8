"""The speed benchmark's measurements: a process's own CPU told from its children's, and the
per-session and per-participant figures from the jobs' benchmark files."""

import sys

import pandas as pd
import pytest

from spineflow_dev.bench import run_measured, summarise

# burns about `s` CPU seconds in the process that runs it
SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_run_measured_tells_the_main_process_cpu_from_its_childrens(tmp_path):
    child = SPIN.format(s=1.0)
    parent = SPIN.format(s=0.5) + (
        f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}])\n"
    )
    run = run_measured([sys.executable, "-c", parent], tmp_path / "log")
    assert run["exit_code"] == 0
    # the parent's own half second (and its start-up), never the child's second
    assert 0.45 <= run["snakemake_cpu_s"] < 1.0
    assert run["total_cpu_s"] >= run["snakemake_cpu_s"] + 0.95
    assert run["wall_s"] >= 1.4


def test_run_measured_reports_the_exit_code_and_keeps_the_output(tmp_path):
    log = tmp_path / "log"
    run = run_measured([sys.executable, "-c", "print('said'); raise SystemExit(3)"], log)
    assert run["exit_code"] == 3
    assert log.read_text().strip() == "said"


def _job(step, participant, session, cpu_s):
    return {"step": step, "participant": participant, "session": session, "wall_s": cpu_s,
            "cpu_s": cpu_s, "max_rss_mb": 100.0}  # fmt: skip


def test_summarise_counts_per_session_and_participant_and_snakemakes_share():
    jobs = pd.DataFrame(
        [_job("n4", "01", "1", 8.0), _job("n4", "01", "2", 6.0), _job("n4", "02", "1", 10.0),
         _job("register", "01", None, 40.0), _job("grouptables", None, None, 2.0)]
    )  # fmt: skip
    run = {"exit_code": 0, "wall_s": 50.0, "snakemake_cpu_s": 6.6, "total_cpu_s": 72.6}
    figures = summarise(run, jobs)
    assert (figures["participants"], figures["sessions"], figures["jobs"]) == (2, 3, 5)
    assert figures["jobs_per_participant"] == 2.5
    assert figures["cpu_per_session_s"] == pytest.approx(24.2)  # all-in, Snakemake's too
    assert figures["rules_cpu_s"] == 66.0
    assert figures["snakemake_share"] == pytest.approx(6.6 / 72.6)
    assert figures["outside_jobs_cpu_s"] == pytest.approx(6.6)
    per_rule = {row["step"]: row for row in figures["per_rule"]}
    assert per_rule["n4"]["cpu_mean_s"] == 8.0 and per_rule["n4"]["cpu_max_s"] == 10.0
    assert [row["step"] for row in figures["per_rule"]][0] == "register"  # largest first
