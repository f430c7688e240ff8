"""One participant with broken DICOM fails alone; the next run records it in the tables."""

import shutil

import pandas as pd
import pytest
from conftest import break_geometry_series, run_snakemake

pytestmark = pytest.mark.e2e


def test_broken_participant_fails_alone_and_is_reported(tiny_cohort, tmp_path):
    dicom = tmp_path / "dicom"
    shutil.copytree(tiny_cohort / "dicom", dicom)
    id_map = pd.read_csv(tiny_cohort / "id_map.tsv", sep="\t", dtype=str)
    victim = id_map.iloc[0]
    break_geometry_series(dicom, victim["dicom_patient_id"])
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
    assert records and all(victim["participant_id"] in r.name for r in records)

    second = run_snakemake(config, tmp_path / "work")
    assert second.returncode == 0, second.stderr[-3000:]
    discs = pd.read_csv(output / "derivatives" / "spineflow" / "group" / "discs.tsv", sep="\t")
    mine = discs[discs["participant_id"] == victim["participant_id"]]
    others = discs[discs["participant_id"] != victim["participant_id"]]
    assert (mine["status"] == "failed").any()
    notes = mine.loc[mine["status"] == "failed", "note"]
    assert notes.str.startswith("convert failed: ConversionError").all()
    assert notes.str.contains("details in sub-").all()  # the log to read, by its BIDS name
    assert others["participant_id"].nunique() == 3
    assert (others["status"] != "failed").all()
