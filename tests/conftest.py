import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spineflow.cli import snakemake_command

REPO = Path(__file__).resolve().parent.parent


def run_snakemake(config: dict, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    """The real workflow, as a user runs it (a fresh Snakemake process)."""
    command = snakemake_command(config, workdir, 2, *extra)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """4 participants: one without timepoint 2, one scan with L3-L4 out of view."""
    from spineflow.synth.cohort import CohortOptions, generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, CohortOptions(participants=4, seed=7, workers=2))
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_cohort, tmp_path_factory):
    """The whole workflow on the tiny cohort; returns (cohort dir, output dir, process)."""
    work = tmp_path_factory.mktemp("run")
    output = work / "output"
    config = {
        "dicom_dir": str(tiny_cohort / "dicom"),
        "participants_tsv": str(tiny_cohort / "participants.tsv"),
        "id_map": str(tiny_cohort / "id_map.tsv"),
        "output_dir": str(output),
    }
    process = run_snakemake(config, work)
    yield tiny_cohort, output, process, work
    shutil.rmtree(work / ".snakemake", ignore_errors=True)
