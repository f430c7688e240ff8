"""`snakemake --profile profiles/slurm` against a real Slurm (tests/slurm_cluster.py): two of
the tiny cohort's participants, one of them with broken DICOM; every participant is one Slurm
job (read from sacct), the broken one fails alone and is recorded, the other's tables equal
the local run's."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import slurm_cluster
from conftest import REPO, break_geometry_series, copy_participants, run_snakemake

from spineflow_dev.cli import cohort_config

pytestmark = pytest.mark.e2e
MEASURES = ("height_mm", "width_mm", "intervertebral_distance_mm")
# the broken participant has one session; the other has two (registration runs on Slurm too)
VICTIM, OTHER = "sub-01", "sub-02"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    except slurm_cluster.SlurmUnavailable as reason:
        if os.geteuid() == 0:  # root can install and start it: failing to is a failure
            raise
        pytest.skip(f"no test Slurm on this machine: {reason}")
    yield cluster
    cluster.stop()


def _run_on_slurm(config: dict, work: Path) -> subprocess.CompletedProcess:
    """The cluster profile as a user runs it, the account from the environment (the
    configuration is where Slurm looks: /etc/slurm); the first status check after 5 s."""
    profile = str(REPO / "profiles" / "slurm")
    return run_snakemake(
        config,
        work,
        "--profile",
        profile,
        "--slurm-keep-successful-logs",
        "--slurm-init-seconds-before-status-checks",
        "5",
        "--latency-wait",
        "5",
        env={"SBATCH_ACCOUNT": "root"},
        timeout=1500,
    )


def _group_table(output: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(
        output / "derivatives" / "spineflow" / "group" / name,
        sep="\t",
        na_values="n/a",
        keep_default_na=False,
    )


@pytest.fixture(scope="module")
def slurm_run(slurm, tiny_cohort, tmp_path_factory):
    """Two evaluations: the first fails the broken participant and finishes the cohort, the
    second has nothing to change."""
    root = tmp_path_factory.mktemp("slurm_run")
    copy_participants(tiny_cohort, root / "dicom", {VICTIM, OTHER})
    break_geometry_series(root / "dicom", tiny_cohort, VICTIM)
    config = {**cohort_config(tiny_cohort, root / "output"), "dicom_dir": str(root / "dicom")}
    first = _run_on_slurm(config, root / "work")
    tables = root / "output" / "derivatives" / "spineflow" / "group"
    written = {name: (tables / name).read_bytes() for name in ("discs.tsv", "vertebrae.tsv")}
    second = _run_on_slurm(config, root / "work")
    rewritten = {name: (tables / name).read_bytes() for name in written}
    return root / "output", first, second, written == rewritten


def test_broken_participant_fails_alone_and_is_recorded(slurm_run):
    output, first, second, unchanged = slurm_run
    assert first.returncode != 0  # visibly, though the cohort finished in this run
    assert second.returncode == 0, second.stderr[-3000:]
    assert unchanged  # the second run changes no byte of the tables
    discs = _group_table(output, "discs.tsv")
    mine = discs[discs["participant_id"] == VICTIM]
    assert (mine["status"] == "failed").all()
    assert mine["note"].str.startswith("convert failed: ConversionError").all()
    others = discs[discs["participant_id"] != VICTIM]
    assert set(others["participant_id"]) == {OTHER} and (others["status"] != "failed").all()
    assert (output / "derivatives" / "spineflow" / "group" / "statistics.html").exists()


def test_tables_equal_the_local_run(slurm_run, tiny_run):
    output = slurm_run[0]
    _, local_output, local, _ = tiny_run
    assert local.returncode == 0, local.stderr[-2000:]
    for name, key in (("discs.tsv", "level"), ("vertebrae.tsv", "vertebra")):
        on_slurm, here = (_group_table(o, name) for o in (output, local_output))
        on_slurm = on_slurm[on_slurm["participant_id"] != VICTIM].reset_index(drop=True)
        here = here[here["participant_id"] == OTHER].reset_index(drop=True)
        assert len(on_slurm) == len(here) > 0
        columns = ["participant_id", "session_id", key, "status"]
        pd.testing.assert_frame_equal(on_slurm[columns], here[columns])
        for measure in set(MEASURES) & set(here.columns):
            # the same code on the same data; 0.001: one unit of the tables' last digit
            assert on_slurm[measure].to_numpy() == pytest.approx(
                here[measure].to_numpy(), abs=0.0011, nan_ok=True
            ), (name, measure)


def _participants_per_job(work: Path) -> dict[str, set[str]]:
    """Slurm job ID -> the participants whose rules ran in it, from the jobs' own logs (the
    executor names them <job id>.log under .snakemake/slurm_logs/)."""
    jobs = {}
    for log in (work / ".snakemake" / "slurm_logs").rglob("*.log"):
        jobs[log.stem] = set(re.findall(r"subject=(\w+)", log.read_text(errors="replace")))
    return jobs


def test_each_participant_ran_as_one_slurm_job(slurm, slurm_run):
    output = slurm_run[0]
    listed = slurm.run(
        "sacct",
        "-X",
        "-n",
        "-P",
        "--starttime",
        "now-1days",
        "--format=JobID,Comment,State,Account",
    ).stdout
    jobs = {row[0]: row[1:] for row in (line.split("|") for line in listed.splitlines() if line)}
    assert {account for *_, account in jobs.values()} == {"root"}  # SBATCH_ACCOUNT reached sbatch
    ran = _participants_per_job(output.parent / "work")
    for pid in (VICTIM, OTHER):
        # all its rules, both sessions, in one Slurm job, which completes: the victim's failure
        # is its data's, recorded, not the job's (no retry)
        mine = [job for job, subjects in ran.items() if pid.removeprefix("sub-") in subjects]
        states = [jobs[job][1] for job in mine]
        assert states == ["COMPLETED"], (pid, states)
        assert ran[mine[0]] == {pid.removeprefix("sub-")}  # and no one else's
    cohort_level = [job for job, subjects in ran.items() if not subjects]
    assert 1 <= len(cohort_level) <= 5 * 2  # bids metadata, group tables, statistics (x 2 runs)
