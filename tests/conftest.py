import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from dicom_factory import corrupt_compressed

from spineflow_dev.cli import cohort_config, snakemake_command

REPO = Path(__file__).resolve().parent.parent


def run_snakemake(
    config: dict, workdir: Path, *extra: str, env: dict | None = None, timeout=None
) -> subprocess.CompletedProcess:
    """The real workflow, as a user runs it (a fresh Snakemake process); ``env``: variables
    to set besides the user's."""
    command = snakemake_command(config, workdir, 2, *extra, workflow=REPO)
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, **(env or {})}
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=workdir, timeout=timeout
    )


@pytest.hookimpl(wrapper=True)  # around xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's ``--dist loadgroup`` (``make test``), the tests on the tiny cohort
    run in one worker, first, so that the cohort is made and run once while the other worker
    takes the rest."""
    on_cohort = [item for item in items if "tiny_cohort" in getattr(item, "fixturenames", ())]
    for item in on_cohort:
        item.add_marker(pytest.mark.xdist_group("tiny_cohort"))
    chosen = set(on_cohort)
    items[:] = on_cohort + [item for item in items if item not in chosen]
    return (yield)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """4 participants: one without timepoint 2, one scan with L3-L4 out of view."""
    from spineflow_dev.synth.cohort import CohortOptions, generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, CohortOptions(participants=4, seed=7, workers=2))
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_cohort, tmp_path_factory):
    """The whole workflow on the tiny cohort; returns (cohort dir, output dir, process)."""
    work = tmp_path_factory.mktemp("run")
    output = work / "output"
    config = cohort_config(tiny_cohort, output)  # with the cohort's reads and visit weights
    process = run_snakemake(config, work)
    yield tiny_cohort, output, process, work
    shutil.rmtree(work / ".snakemake", ignore_errors=True)


def _patient_ids(cohort: Path, participant_ids: set[str]) -> set[str]:
    id_map = pd.read_csv(cohort / "id_map.tsv", sep="\t", dtype=str)
    return set(id_map.loc[id_map["participant_id"].isin(participant_ids), "dicom_patient_id"])


def copy_participants(cohort: Path, dicom_dir: Path, participant_ids: set[str]) -> None:
    """Copy the cohort's studies of these participants (and of no one else) to dicom_dir:
    a run that needs only some participants spends no time on the others."""
    patients = _patient_ids(cohort, participant_ids)
    for study in (cohort / "dicom").iterdir():
        first = next(path for path in study.rglob("IM*") if path.is_file())
        if pydicom.dcmread(first, stop_before_pixels=True).PatientID in patients:
            shutil.copytree(study, dicom_dir / study.name)


def break_geometry_series(dicom_dir: Path, cohort: Path, participant_id: str,
                          last_visit_only: bool = False) -> None:  # fmt: skip
    """Break the compressed pixel data of one participant's sagittal PD files (of its last
    visit only, or of all): the index finds nothing wrong (headers and sizes are fine),
    conversion fails."""
    patients = _patient_ids(cohort, {participant_id})
    by_date: dict[str, list[Path]] = {}
    for path in dicom_dir.rglob("IM*"):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if header.PatientID in patients and header.SeriesDescription == "pd_tse_fs_sag":
            by_date.setdefault(header.StudyDate, []).append(path)
    broken = by_date[max(by_date)] if last_visit_only else sum(by_date.values(), [])
    corrupt_compressed(broken)
    assert broken
