"""One participant's second visit breaks in conversion and fails alone, and the same run
finishes the cohort: its first visit is measured (its cortex pooled without the failed one),
the group tables, the statistics and the report list the failure, the run exits non-zero, no
placeholder is left, and a second run changes no byte of the tables. The other participant's
rows are byte for byte those of the end-to-end run, made in another output folder. Other
people's DICOM in the export (other patients, other vendors, files that are not DICOM) is
listed with its reason and stops nothing.

The local executor's run holds the broken participant and one other, with one session:
enough to see the other finish (tests/test_slurm.py breaks both visits, on Slurm)."""

import pandas as pd
import pytest
from conftest import break_geometry_series, copy_participants, run_snakemake
from third_party import copy_into, nibabel_file, pydicom_file

from spineflow.core.runner import is_placeholder
from spineflow_dev.cli import cohort_config

pytestmark = pytest.mark.e2e
VICTIM, OTHER = "sub-02", "sub-01"
TABLES = ("discs.tsv", "vertebrae.tsv", "table2_prevalence.tsv", "stats.json")


def _rows_of(table, participant_id: str) -> list[str]:
    return [line for line in table.read_text().splitlines() if line.startswith(participant_id)]


def test_broken_participant_fails_alone_and_is_reported_in_one_run(tiny_run, tmp_path):
    tiny_cohort, tiny_output = tiny_run[0], tiny_run[1]
    dicom = tmp_path / "dicom"
    copy_participants(tiny_cohort, dicom, {VICTIM, OTHER})
    break_geometry_series(dicom, tiny_cohort, VICTIM, last_visit_only=True)
    foreign = dicom / "Other^Patient_19700101"
    copy_into([pydicom_file(n) for n in ("MR_small.dcm", "MR_truncated.dcm", "no_meta.dcm")],
              foreign)  # fmt: skip
    nibabel_file("philips_mprage.dcm.gz", foreign)
    (foreign / "DICOMDIR.txt").write_text("not DICOM")
    output = tmp_path / "output"
    config = {**cohort_config(tiny_cohort, output), "dicom_dir": str(dicom)}
    first = run_snakemake(config, tmp_path / "work")
    assert first.returncode != 0  # visibly
    assert "1 step(s) failed on their data in this run (sub-02 ses-2 convert)" in first.stderr
    group = output / "derivatives" / "spineflow" / "group"
    records = list((output / "derivatives" / "spineflow" / "logs" / "failures").glob("*.json"))
    assert [r.name for r in records] == [f"{VICTIM}_ses-2_failure.json"]
    assert not [p for p in output.rglob("*") if p.is_file() and is_placeholder(p)]

    discs = pd.read_csv(group / "discs.tsv", sep="\t")
    mine = discs[discs["participant_id"] == VICTIM]
    others = discs[discs["participant_id"] != VICTIM]
    assert (mine.loc[mine["session_id"] == "ses-1", "status"] != "failed").all()
    mine = mine[mine["session_id"] == "ses-2"]
    assert len(mine) == 3 and (mine["status"] == "failed").all()
    assert mine["note"].str.startswith("convert failed: ConversionError").all()
    assert (
        mine["note"]
        .str.contains("(none): Error: OpenJPEG failed to read the header file-", regex=False)
        .all()
    )
    assert mine["note"].str.contains("details in sub-").all()  # the log to read, by its BIDS name
    assert set(others["participant_id"]) == {OTHER}
    assert (others["status"] != "failed").all()
    assert f"{VICTIM} ses-2" in (group / "report.html").read_text()
    skipped = pd.read_csv(output / "sourcedata" / "dicom_index" / "skipped.tsv", sep="\t")
    reasons = dict(zip(skipped["relpath"].str.split("/").str[-1], skipped["reason"], strict=True))
    assert reasons["MR_small.dcm"] == reasons["philips_mprage.dcm"] == "PatientID not in the id_map"
    assert reasons["no_meta.dcm"].startswith("not readable DICOM")
    assert reasons["DICOMDIR.txt"].startswith("not readable DICOM")
    tiny_group = tiny_output / "derivatives" / "spineflow" / "group"
    for name in ("discs.tsv", "vertebrae.tsv"):
        rows = _rows_of(group / name, OTHER)
        assert len(rows) >= 3 and rows == _rows_of(tiny_group / name, OTHER), name
    written = {name: (group / name).read_bytes() for name in TABLES}

    second = run_snakemake(config, tmp_path / "work")
    assert second.returncode == 0, second.stderr[-3000:]
    assert {name: (group / name).read_bytes() for name in written} == written
