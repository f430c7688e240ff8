"""The scale benchmark's cohort and its count of cluster jobs; a real dry run of a small
cohort with the Slurm profile shows the grouping: one cluster job per participant."""

from __future__ import annotations

from pathlib import Path

import pytest

from spineflow.convert.dicom_index import select_series
from spineflow.workflow.plan import Paths, session_plan
from spineflow_dev import scale

REPO = Path(__file__).resolve().parent.parent


def test_synthetic_index_has_the_sessions_a_scanner_writes(tmp_path):
    series, files, *_ = scale.synthetic_index(25)
    assert series["participant_id"].nunique() == 25
    sessions = series[["participant_id", "study_key"]].drop_duplicates()
    assert len(sessions) == 25 * 2 - 25 // scale.WITHOUT_SES2_EVERY
    assert len(files) == series["n_files"].sum()
    config = {**scale.write_cohort(tmp_path, 25), "series": _default_series()}
    plan = session_plan(config, Paths(config["output_dir"]))  # the cached index is taken
    assert len(plan) == len(sessions) and (plan["status"] == "ok").all()
    chosen = select_series(series, config["series"])
    assert set(chosen["series_key"]) == set(plan["series_key"])
    described = series.set_index("series_key")["series_description"]
    assert (described[plan["series_key"]] == "pd_tse_fs_sag").all()


def _default_series():
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())["series"]


def test_cluster_jobs_counts_groups_and_ungrouped_rules():
    log = "\n".join(
        [
            "[Sun Nov 22 23:28:33 2026] Group job participant (jobs in lexicogr. order):",
            "    rule convert:",
            "    rule n4:",
            "[Sun Nov 22 23:28:33 2026] Group job participant (jobs in lexicogr. order):",
            "rule group_tables:",
            "rule statistics:",
            "rule all:",
            "localrule other:",
        ]
    )
    assert scale.cluster_jobs(log) == 4


@pytest.mark.e2e
def test_dry_run_gives_one_cluster_job_per_participant(tmp_path):
    config = scale.write_cohort(tmp_path, 30)
    result = scale.dry_run(tmp_path, config, REPO, "slurm")
    # + BIDS metadata, the participants' outputs, group tables, statistics, report
    assert result["cluster_jobs"] == 30 + 5
    assert result["jobs"] > 30 * 8  # the rules themselves are all there


@pytest.mark.e2e
def test_a_batch_plans_its_share_of_the_participants_and_no_cohort_step(tmp_path):
    """``--batch participant_outputs=1/3``: every per-participant job reaches the cohort steps
    through that rule, so a batch plans a third of the participants and stops before it."""
    config = scale.write_cohort(tmp_path, 30)
    whole = scale.dry_run(tmp_path, config, REPO, "slurm")
    batch = scale.dry_run(tmp_path, config, REPO, "slurm", ("--batch", "participant_outputs=1/3"))
    log = Path(batch["log"]).read_text()
    assert batch["cluster_jobs"] in (10, 11)  # a third of 30, and the BIDS metadata
    assert batch["jobs"] < 0.4 * whole["jobs"]
    for step in ("participant_outputs", "group_tables", "statistics", "cohort_report"):
        assert f"rule {step}:" not in log
