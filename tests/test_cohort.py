"""Unit tests of spineflow.cohort on small hand-made tables (no Snakemake, no images)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from spineflow.cohort import tables as cohort
from spineflow.core.anatomy import LEVELS
from spineflow.core.bids import bids, derivatives_root, group_dir
from spineflow.core.tables import DISC_COLUMNS, write_tsv
from spineflow.stats import models as statistics

DISC_HEADER = ["level", "height_mm", "width_mm", "pfirrmann_auto", "status", "note"]
VERT_HEADER = ["vertebra", "intervertebral_distance_mm", "status", "note"]


def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _disc_file(out: Path, sub: str, ses: str, rows=None, header=None) -> Path:
    rows = rows or [
        ["L3-L4", 9.1, 40.2, 2, "ok", "n/a"],
        ["L4-L5", 10.0, 42.0, 3, "ok", "n/a"],
        ["L5-S1", 11.5, 41.0, 4, "ok", "n/a"],
    ]
    path = bids(
        derivatives_root(out), datatype="anat", sub=sub, ses=ses, suffix="discs", extension=".tsv"
    )
    return _write(Path(path), header or DISC_HEADER, rows)


def _vert_file(out: Path, sub: str, ses: str, rows=None) -> Path:
    rows = rows or [[name, 25.0 + i, "ok", ""] for i, name in enumerate(("L3", "L4", "L5", "S1"))]
    path = bids(
        derivatives_root(out),
        datatype="anat",
        sub=sub,
        ses=ses,
        suffix="vertebrae",
        extension=".tsv",
    )
    return _write(Path(path), VERT_HEADER, rows)


# --- assemble --------------------------------------------------------------------------------


def test_assembled_disc_columns_order_and_extras(tmp_path):
    rows = [
        ["L5-S1", 11.5, 41.0, 4, "ok", "", 0.8],
        ["L3-L4", 9.1, 40.2, 2, "ok", "", 0.9],
        ["L4-L5", 10.0, 42.0, 3, "ok", "", 0.7],
    ]
    path = _disc_file(tmp_path, "01", "1", rows, DISC_HEADER + ["contrast_ratio"])
    table = cohort.assemble([("sub-01", "ses-1", path)], "discs", [])
    assert list(table.columns) == [
        "participant_id",
        "session_id",
        "level",
        "height_mm",
        "width_mm",
        "pfirrmann_auto",
        "status",
        "note",
        "contrast_ratio",
    ]
    assert list(table["level"]) == ["L3-L4", "L4-L5", "L5-S1"]  # anatomical, not file order
    assert list(table["pfirrmann_auto"]) == [2, 3, 4]
    assert list(table["contrast_ratio"]) == [0.9, 0.7, 0.8]
    assert set(table["participant_id"]) == {"sub-01"} and set(table["session_id"]) == {"ses-1"}


def test_assembled_vertebra_columns(tmp_path):
    path = _vert_file(tmp_path, "01", "1")
    table = cohort.assemble([("sub-01", "ses-1", path)], "vertebrae", [])
    assert list(table.columns) == [
        "participant_id",
        "session_id",
        "vertebra",
        "intervertebral_distance_mm",
        "status",
        "note",
    ]
    assert list(table["vertebra"]) == ["L3", "L4", "L5", "S1"]


def test_failed_sessions_get_one_row_per_level(tmp_path):
    path = _disc_file(tmp_path, "01", "1")
    failures = [
        {
            "participant_id": "sub-02",
            "session_id": "ses-1",
            "stage": "dicom_index",
            "message": "series 4 has 2 slice spacings",
        },
    ]
    table = cohort.assemble([("sub-01", "ses-1", path)], "discs", failures)
    failed = table[table["participant_id"] == "sub-02"]
    assert list(failed["level"]) == ["L3-L4", "L4-L5", "L5-S1"]
    assert set(failed["status"]) == {"failed"}
    assert set(failed["note"]) == {"dicom_index failed: series 4 has 2 slice spacings"}
    assert failed[["height_mm", "width_mm", "pfirrmann_auto"]].isna().all().all()

    vertebrae = cohort.assemble([], "vertebrae", failures)
    assert list(vertebrae["vertebra"]) == ["L3", "L4", "L5", "S1"]
    assert vertebrae["intervertebral_distance_mm"].isna().all()


def test_session_both_table_and_failure_is_an_error(tmp_path):
    path = _disc_file(tmp_path, "01", "1")
    failure = {"participant_id": "sub-01", "session_id": "ses-1", "stage": "x", "message": "y"}
    with pytest.raises(ValueError, match="both"):
        cohort.assemble([("sub-01", "ses-1", path)], "discs", [failure])


def test_measures_blanked_when_status_not_ok(tmp_path):
    rows = [
        ["L3-L4", 9.1, 40.2, 2, "not_in_fov", "cranial endplate outside FOV"],
        ["L4-L5", 10.0, 42.0, 3, "failed", "segmentation empty"],
        ["L5-S1", 11.5, 41.0, 4, "ok", ""],
    ]
    table = cohort.assemble([("sub-01", "ses-1", _disc_file(tmp_path, "01", "1", rows))], "discs")
    blank = table[table["status"] != "ok"]
    assert len(blank) == 2
    assert blank[["height_mm", "width_mm", "pfirrmann_auto"]].isna().all().all()
    assert list(blank["note"]) == ["cranial endplate outside FOV", "segmentation empty"]
    assert table.loc[table["level"] == "L5-S1", "height_mm"].item() == 11.5


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (
            ["level", "height_mm", "pfirrmann_auto", "status", "note"],
            [["L3-L4", 1, 2, "ok", ""]],
            "width_mm",
        ),
        (DISC_HEADER, [["L2-L3", 1, 2, 3, "ok", ""]], "L2-L3"),
        (
            DISC_HEADER,
            [
                ["L3-L4", 1, 2, 3, "done", ""],
                ["L4-L5", 1, 2, 3, "ok", ""],
                ["L5-S1", 1, 2, 3, "ok", ""],
            ],
            "done",
        ),
        (DISC_HEADER, [["L3-L4", 1, 2, 3, "ok", ""], ["L4-L5", 1, 2, 3, "ok", ""]], "one row"),
        (
            DISC_HEADER,
            [
                ["L3-L4", "abc", 2, 3, "ok", ""],
                ["L4-L5", 1, 2, 3, "ok", ""],
                ["L5-S1", 1, 2, 3, "ok", ""],
            ],
            "abc",
        ),
    ],
)
def test_validation_error_names_the_file(tmp_path, header, rows, message):
    path = _disc_file(tmp_path, "07", "2", rows, header)
    with pytest.raises(ValueError, match=message) as error:
        cohort.assemble([("sub-07", "ses-2", path)], "discs", [])
    assert str(path) in str(error.value)


def test_sessions_sorted_numerically(tmp_path):
    given = [("sub-10", "ses-1"), ("sub-2", "ses-10"), ("sub-2", "ses-2"), ("sub-2", "ses-1")]
    per_session = [(sub, ses, _vert_file(tmp_path, sub, ses)) for sub, ses in given]
    table = cohort.assemble(per_session, "vertebrae", [])
    sessions = table.drop_duplicates(["participant_id", "session_id"])
    assert list(zip(sessions["participant_id"], sessions["session_id"], strict=True)) == [
        ("sub-2", "ses-1"),
        ("sub-2", "ses-2"),
        ("sub-2", "ses-10"),
        ("sub-10", "ses-1"),
    ]


def test_write_tsv_na_decimals_and_round_trip(tmp_path):
    rows = [
        ["L3-L4", "n/a", "n/a", "n/a", "not_in_fov", "n/a"],
        ["L4-L5", 10.123456, 42.0, 3, "ok", ""],
        ["L5-S1", -0.0001, 41.0, "n/a", "ok", ""],
    ]
    table = cohort.assemble([("sub-01", "ses-1", _disc_file(tmp_path, "01", "1", rows))], "discs")
    out = group_dir(tmp_path) / "discs.tsv"
    write_tsv(table, out)
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == list(DISC_COLUMNS)
    assert lines[1].split("\t") == [
        "sub-01",
        "ses-1",
        "L3-L4",
        "n/a",
        "n/a",
        "n/a",
        "not_in_fov",
        "n/a",
    ]
    assert lines[2].split("\t")[3:6] == ["10.123", "42.000", "3"]
    assert lines[3].split("\t")[3] == "0.000"
    assert not list(out.parent.glob(".*tmp"))  # temporary file renamed away


def test_write_tsv_keeps_small_p_values(tmp_path):
    out = tmp_path / "stats.tsv"
    write_tsv(pd.DataFrame({"mean_change": [0.12345], "p_value": [1.234e-5]}), out)
    assert out.read_text().splitlines()[1] == "0.123\t1.23e-05"


def test_derivatives_description(tmp_path):
    root = derivatives_root(tmp_path)
    path = cohort.write_derivatives_description(root, "1.2.3")
    content = json.loads(Path(path).read_text())
    assert content["Name"] == "spineflow"
    assert content["BIDSVersion"] == "1.10.0"
    assert content["DatasetType"] == "derivative"
    assert content["GeneratedBy"] == [{"Name": "spineflow", "Version": "1.2.3"}]
    assert content["SourceDatasets"] == [{"URL": "bids:raw:"}]
    assert (root / content["DatasetLinks"]["raw"]).resolve() == (tmp_path / "bids").resolve()
    assert "figures" in (root / ".bidsignore").read_text().split()
    assert (root / "README.md").read_text().startswith("# spineflow derivatives")


# --- the group tables feed the statistics ---------------------------------------------------


def _table3(discs, vertebrae):
    grades, source = statistics.grades(discs, None)
    tables = {"discs": discs, "vertebrae": vertebrae, "grades": grades}
    people = pd.DataFrame(index=pd.Index([], name="participant_id"))
    pairs_of = statistics.measure_pairs(tables)
    result = statistics.table3(tables, pairs_of, people, statistics.Settings(), source)
    return result[result["group"] == "all"]


def _row(result, measure="height_mm", level="L4-L5"):
    row = result[(result["measure"] == measure) & (result["level"] == level)]
    assert len(row) == 1
    return row.iloc[0]


def test_longitudinal_reads_assembled_tables(tmp_path):
    per_session, vert = [], []
    for sub, ses, heights in (
        ("01", "1", (9.0, 10.0, 11.0)),
        ("01", "2", (9.2, 10.1, 11.0)),
        ("02", "1", (8.0, 9.0, 10.0)),
        ("02", "2", (8.1, 9.3, 10.2)),
    ):
        rows = [[lvl, h, 40.0, 2, "ok", ""] for lvl, h in zip(LEVELS, heights, strict=True)]
        per_session.append((sub, ses, _disc_file(tmp_path, sub, ses, rows)))
        vert.append((sub, ses, _vert_file(tmp_path, sub, ses)))
    discs = cohort.assemble(per_session, "discs")
    failure = {"participant_id": "03", "session_id": "1", "stage": "segment", "message": "oom"}
    vertebrae = cohort.assemble(vert, "vertebrae", [failure])
    result = _table3(discs, vertebrae)
    row = _row(result, level="L3-L4")
    assert row["n_pairs"] == 2 and row["mean_change"] == pytest.approx(0.15)
    l3 = _row(result, measure="intervertebral_distance_mm", level="L3")
    assert l3["n_pairs"] == 2 and l3["n_no_ses2"] == 1  # sub-03 failed at ses-1, has no ses-2
    assert l3["note"] == "no variation in change: tests undefined"  # both 25.0 -> 25.0


def test_registration_disagreements_are_read_and_failures_reach_the_group_notes(tmp_path):
    discs = pd.DataFrame(
        {
            "participant_id": ["sub-01"] * 4 + ["sub-02"] * 2,
            "session_id": ["ses-1", "ses-1", "ses-2", "ses-2", "ses-1", "ses-2"],
            "level": ["L4-L5", "L5-S1"] * 2 + ["L4-L5"] * 2,
            "note": ["", "2 of 25 profiles without a clear edge", "", "", "", ""],
        }
    )
    longitudinal = tmp_path / "sub-01_desc-longitudinal_discs.tsv"
    write_tsv(
        pd.DataFrame(
            {
                "level": ["L4-L5", "L5-S1"],
                "height_ses1_mm": [10.0, 9.0],
                "height_ses2_mm": [9.9, 9.0],
                "change_mm": [-0.1, 0.0],
                "change_note": ["the registration disagrees", ""],
            }
        ),  # fmt: skip
        longitudinal,
    )
    assert cohort.registration_disagreements([("sub-01", longitudinal)]) == [
        ("sub-01", "L4-L5", "the registration disagrees (heights ses-1 10.00, ses-2 9.90 mm)")
    ]
    failure = {"participant_id": "02", "stage": "register", "message": "no\n overlap"}
    noted = cohort.with_pair_failures(discs, [failure])
    assert list(noted["note"]) == [
        "",
        "2 of 25 profiles without a clear edge",
        "",
        "",
        "register failed: no overlap",
        "register failed: no overlap",
    ]
