"""One participant with broken DICOM fails alone; the next run records it in the tables.

The local executor's run holds the broken participant (both sessions) and one other, with
one session: enough to see the other finish (tests/test_slurm.py does the same on Slurm)."""

import pandas as pd
import pytest
from conftest import break_geometry_series, copy_participants, run_snakemake

pytestmark = pytest.mark.e2e
VICTIM, OTHER = "sub-02", "sub-01"


def test_broken_participant_fails_alone_and_is_reported(tiny_cohort, tmp_path):
    dicom = tmp_path / "dicom"
    copy_participants(tiny_cohort, dicom, {VICTIM, OTHER})
    break_geometry_series(dicom, tiny_cohort, VICTIM)
    output = tmp_path / "output"
    config = {
        "dicom_dir": str(dicom),
        "participants_tsv": str(tiny_cohort / "participants.tsv"),
        "id_map": str(tiny_cohort / "id_map.tsv"),
        "output_dir": str(output),
    }
    first = run_snakemake(config, tmp_path / "work")
    assert first.returncode != 0  # the broken jobs fail, visibly
    records = list((output / "derivatives" / "spineflow" / "logs" / "failures").glob("*.json"))
    assert records and all(VICTIM in r.name for r in records)
    assert {r.name.split("_")[1] for r in records} == {"ses-1", "ses-2"}  # each session's own

    second = run_snakemake(config, tmp_path / "work")
    assert second.returncode == 0, second.stderr[-3000:]
    discs = pd.read_csv(output / "derivatives" / "spineflow" / "group" / "discs.tsv", sep="\t")
    mine = discs[discs["participant_id"] == VICTIM]
    others = discs[discs["participant_id"] != VICTIM]
    assert set(mine["session_id"]) == {"ses-1", "ses-2"}
    assert (mine["status"] == "failed").all()
    assert mine["note"].str.startswith("convert failed: ConversionError").all()
    assert mine["note"].str.contains("details in sub-").all()  # the log to read, by its BIDS name
    assert set(others["participant_id"]) == {OTHER}
    assert (others["status"] != "failed").all()
