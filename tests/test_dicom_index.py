"""DICOM indexing: participants, sessions, geometry checks, caching and series selection."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml
from dicom_factory import PHI, write_enhanced_mr, write_mr_series

from spineflow.convert import dicom_index
from spineflow.convert.dicom_index import (
    build_index,
    load_index,
    load_or_build,
    orientation_label,
    plan_visits,
    pseudonym,
    read_visit_dates,
    save_index,
    select_series,
)

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def _rules():
    return yaml.safe_load(CONFIG.read_text())["series"]


def _one(series, **where):
    mask = pd.Series(True, index=series.index)
    for column, value in where.items():
        mask &= series[column] == value
    assert mask.sum() == 1, series
    return series[mask].iloc[0]


def test_unreadable_files_left_out_and_listed_by_key(tmp_path, caplog):
    named = tmp_path / "Moreau^Marta_19780329"  # an export's folder names carry PHI
    write_mr_series(named / "b", n_slices=4)
    (named / "README").write_text("not an image")
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.dcm").write_bytes(b"")
    index = dicom_index.DicomIndex(*build_index(tmp_path))
    assert len(index.series) == 1 and len(index.files) == 4
    assert set(index.files["relpath"]) == {
        f"Moreau^Marta_19780329/b/IM{i:04d}" for i in range(1, 5)
    }
    skipped = index.skipped.set_index("relpath")
    assert set(skipped.index) == {"Moreau^Marta_19780329/README", "junk.bin", "empty.dcm"}
    assert skipped["reason"].str.startswith("not readable DICOM").all()
    assert skipped.loc["junk.bin", "file_key"] == dicom_index.file_key("junk.bin")
    with caplog.at_level(logging.WARNING, logger="spineflow.convert.dicom_index"):
        load_or_build(tmp_path, tmp_path.parent / "index")
    assert "3 file(s) under the DICOM folder left out: 3 not readable DICOM" in caplog.text
    assert "Moreau" not in caplog.text and "junk" not in caplog.text
    assert "private" in (tmp_path.parent / "index" / "README").read_text()


def test_truncated_file_fails_its_series_by_instance_and_key(tmp_path):
    written = write_mr_series(tmp_path / "a", n_slices=5)
    cut = written["paths"][2]
    cut.write_bytes(cut.read_bytes()[:-100])
    series, files, *_ = build_index(tmp_path)
    row = series.iloc[0]
    key = dicom_index.file_key(cut.relative_to(tmp_path).as_posix())
    assert row["status"] == "failed"
    assert f"instance 3 ({key}) truncated: 1948 of 2048 bytes of pixel data" in row["note"]
    assert len(files) == 5  # the file stays in its series: left out, it would be a gap


def test_enhanced_multiframe_geometry_from_functional_groups(tmp_path):
    path = write_enhanced_mr(tmp_path / "mf.dcm", n_frames=6)
    series, files, *_ = build_index(tmp_path)
    row = series.iloc[0]
    assert (row["orientation"], row["status"], row["n_files"]) == ("sagittal", "ok", 1)
    assert row["pixel_spacing_mm"] == "0.8x0.8" and row["slice_thickness_mm"] == 3.5
    assert files["relpath"].tolist() == [path.name]


def _folder_of(series, files):
    key_dir = files.assign(folder=files["relpath"].str.split("/").str[0])
    folders = key_dir.drop_duplicates("series_key").set_index("series_key")["folder"]
    return series.assign(folder=series["series_key"].map(folders))


def test_visits_ordered_by_study_date_and_time(tmp_path):
    # Written to disk out of order, with names that sort against the dates.
    write_mr_series(tmp_path / "z_first", study_date="20240105", study_time="081500")
    write_mr_series(tmp_path / "a_third", study_date="20240510", study_time="070000")
    write_mr_series(tmp_path / "m_second", study_date="20240105", study_time="143000")
    write_mr_series(tmp_path / "other", patient_id="OTHER1", study_date="20230101")
    series, files, *_ = build_index(tmp_path)
    visits = plan_visits(series, _rules()).merge(series[["series_key"]])
    series = _folder_of(visits, files)
    first = _one(series, folder="z_first")
    assert (first["session_id"], first["days_from_baseline"]) == ("ses-1", 0)
    second = _one(series, folder="m_second")
    assert (second["session_id"], second["days_from_baseline"]) == ("ses-2", 0)
    third = _one(series, folder="a_third")
    assert (third["session_id"], third["days_from_baseline"]) == ("ses-3", 126)
    other = _one(series, folder="other")
    assert other["session_id"] == "ses-1" and other["participant_id"] != first["participant_id"]
    assert "3 studies of this participant match" in third["note"]
    assert other["note"] == ""


def test_unrelated_studies_are_not_visits(tmp_path):
    """Six older studies of the patient (brain, fieldmap, scout) do not number the sessions:
    the two lumbar studies are ses-1 and ses-2, days counted from the first of them."""
    for year, description in enumerate(["T1_MPRAGE", "fieldmap", "scout", "FLAIR_AX",
                                         "DWI", "T2_AX_BRAIN"], start=2014):  # fmt: skip
        write_mr_series(tmp_path / f"old{year}", study_date=f"{year}0301",
                        series_description=description,
                        orientation="axial" if "AX" in description else "sagittal")  # fmt: skip
    write_mr_series(tmp_path / "visit1", study_date="20250105")
    write_mr_series(tmp_path / "visit2", study_date="20250520")
    series, files, *_ = build_index(tmp_path)
    visits = _folder_of(plan_visits(series, _rules()), files)
    kept = visits[visits["status"] != "dropped"].set_index("folder")
    assert kept["session_id"].to_dict() == {"visit1": "ses-1", "visit2": "ses-2"}
    assert kept["days_from_baseline"].tolist() == [0, 135]
    dropped = visits[visits["status"] == "dropped"]
    assert len(dropped) == 6 and (dropped["session_id"] == "").all()
    assert dropped["note"].str.contains("matches the geometry rule: not a visit").all()
    assert dropped["days_from_baseline"].isna().all()


def test_visit_dates_choose_the_sessions(tmp_path):
    """A participant whose visits sessions_tsv dates has as sessions only the studies within
    the window of a listed date; a listed visit no study matches is failed, said so; a
    participant without dates is numbered in date order."""
    dicom = tmp_path / "dicom"
    for study_date in ("20190110", "20200201", "20210301"):  # all three lumbar
        write_mr_series(dicom / study_date, study_date=study_date)
    write_mr_series(dicom / "other", patient_id="OTHER1", study_date="20230101")
    index = build_index(dicom)
    dated = index.series["participant_id"].value_counts().index[0]  # the one with 3 studies
    sessions_tsv = tmp_path / "sessions.tsv"
    sessions_tsv.write_text(
        "participant_id\tsession_id\tweight_kg\tvisit_date\n"
        f"{dated}\tses-1\t70\t2020-02-03\n{dated}\tses-2\t71\t2021-03-01\n"
        f"{dated}\tses-3\t72\t2022-06-01\nsub-elsewhere\tses-1\t60\t2020-01-01\n"
    )
    visits = plan_visits(index.series, _rules(), read_visit_dates(sessions_tsv), index.studies,
                         window_days=5)  # fmt: skip
    visits = _folder_of(visits, index.files)
    mine = visits[visits["participant_id"] == dated].set_index("session_id")
    assert mine.loc["ses-1", "folder"] == "20200201" and mine.loc["ses-2", "folder"] == "20210301"
    assert mine.loc["ses-2", "days_from_baseline"] == 394  # from ses-1, not the 2019 study
    assert mine.loc["ses-3", "status"] == "failed" and pd.isna(mine.loc["ses-3", "study_key"])
    assert "within 5 day(s) of the visit_date" in mine.loc["ses-3", "note"]
    old = mine.loc[""]
    assert (old["folder"], old["status"]) == ("20190110", "dropped")
    assert "no visit_date of sessions_tsv is within 5 day(s)" in old["note"]
    other = visits[visits["participant_id"] != dated]
    assert other[["session_id", "status"]].values.tolist() == [["ses-1", "ok"]]
    narrow = plan_visits(index.series, _rules(), read_visit_dates(sessions_tsv), index.studies)
    # the 2020 study is 2 days off the listed date: outside a window of 0 days
    sessions = narrow.loc[narrow["participant_id"] == dated, "session_id"].tolist()
    assert sessions == ["", "", "ses-2", "ses-1", "ses-3"]


def test_visit_dates_pair_each_study_and_date_once(tmp_path):
    """Nearest pairs first, but a study whose nearest date another study took still gets a
    free date within the window."""
    dicom = tmp_path / "dicom"
    for study_date in ("20200101", "20200102"):
        write_mr_series(dicom / study_date, study_date=study_date)
    index = build_index(dicom)
    participant = index.series["participant_id"].iloc[0]
    sessions_tsv = tmp_path / "sessions.tsv"
    sessions_tsv.write_text("participant_id\tsession_id\tvisit_date\n"
                            f"{participant}\tses-1\t2020-01-01\n"
                            f"{participant}\tses-2\t2020-01-05\n")  # fmt: skip
    visits = _folder_of(plan_visits(index.series, _rules(), read_visit_dates(sessions_tsv),
                                    index.studies, window_days=5), index.files)  # fmt: skip
    assert visits.set_index("folder")["session_id"].to_dict() == {
        "20200101": "ses-1",
        "20200102": "ses-2",
    }


def test_visit_dates_name_the_bad_line(tmp_path):
    sessions_tsv = tmp_path / "sessions.tsv"
    sessions_tsv.write_text("participant_id\tsession_id\tvisit_date\n01\t1\t2020-02-03\n"
                            "02\t1\t03.02.2020\n")  # fmt: skip
    with pytest.raises(ValueError, match=r"sessions.tsv, line 3: visit_date '03.02.2020' is not"):
        read_visit_dates(sessions_tsv)
    sessions_tsv.write_text("participant_id\tsession_id\tvisit_date\n01\tses_1\t2020-02-03\n")
    with pytest.raises(ValueError, match=r"line 2: session_id 'ses_1' is not a BIDS label"):
        read_visit_dates(sessions_tsv)
    sessions_tsv.write_text("participant_id\tsession_id\tweight_kg\n01\t1\t70\n")
    assert read_visit_dates(sessions_tsv).empty  # weights only: sessions as numbered


def test_tables_hold_no_phi(tmp_path):
    write_mr_series(tmp_path, study_date="20240105")
    series, files, *_ = build_index(tmp_path)
    text = series.to_csv(sep="\t") + files.to_csv(sep="\t")
    for value in [*PHI.values(), "20240105", "081500"]:
        assert value.lower() not in text.lower()
    assert not any("uid" in column.lower() for column in [*series.columns, *files.columns])


def test_id_map_and_unknown_patients(tmp_path, caplog):
    dicom, index = tmp_path / "dicom", tmp_path / "index"
    write_mr_series(dicom / "p1", patient_id="PATX4711")
    write_mr_series(dicom / "Smith^John_19700101", patient_id="PATY0815")
    id_map = tmp_path / "id_map.tsv"
    id_map.write_text("dicom_patient_id\tparticipant_id\nPATX4711\tsub-01\nPATY0815\t02\n")
    series, _, skipped, _ = build_index(dicom, id_map)
    assert sorted(series["participant_id"]) == ["sub-01", "sub-02"] and skipped.empty
    id_map.write_text("dicom_patient_id\tparticipant_id\nPATX4711\tsub-01\n")
    with caplog.at_level(logging.WARNING, logger="spineflow.convert.dicom_index"):
        series, _, skipped, _ = load_or_build(dicom, index, id_map)  # skip: the others go on
    assert list(series["participant_id"]) == ["sub-01"]
    assert set(skipped["reason"]) == {"PatientID not in the id_map"}
    assert skipped["relpath"].str.startswith("Smith^John_19700101/").all()
    with pytest.raises(ValueError) as error:
        load_or_build(dicom, index, id_map, unknown_patients="fail")
    message = str(error.value)
    assert str(id_map) in message and str(index / "skipped.tsv") in message
    for text in (message, caplog.text):
        assert "PATY0815" not in text and "Smith" not in text


@pytest.mark.parametrize("label", ["sub-01_x", "../../evil", ""])
def test_id_map_participant_must_be_a_bids_label(tmp_path, label):
    id_map = tmp_path / "id_map.tsv"
    id_map.write_text(f"dicom_patient_id\tparticipant_id\nA1\tsub-01\nB2\t{label}\n")
    with pytest.raises(ValueError, match=rf"{id_map}, line 3: participant_id .* not a BIDS"):
        dicom_index.read_id_map(id_map)


def test_pseudonym_stable_and_salted(tmp_path):
    assert pseudonym("PATX4711") == pseudonym("PATX4711")
    assert pseudonym("PATX4711", "salt-a") != pseudonym("PATX4711", "salt-b")
    assert pseudonym("PATX4711").startswith("sub-") and len(pseudonym("PATX4711")) == 12
    write_mr_series(tmp_path)
    first = build_index(tmp_path, salt="s1").series
    again = build_index(tmp_path, salt="s1").series
    other = build_index(tmp_path, salt="s2").series
    assert (
        first["participant_id"][0]
        == again["participant_id"][0]
        == pseudonym(PHI["PatientID"], "s1")
    )
    assert other["participant_id"][0] != first["participant_id"][0]


def test_orientation_labels():
    assert orientation_label([0, 1, 0, 0, 0, -1]) == "sagittal"
    assert orientation_label([1, 0, 0, 0, 0, -1]) == "coronal"
    assert orientation_label([1, 0, 0, 0, 1, 0]) == "axial"
    # 10 degrees off sagittal is still sagittal; 45 degrees between axes is oblique.
    assert orientation_label([0, 0.985, 0.174, 0, -0.174, 0.985]) == "sagittal"
    assert orientation_label([0, 1, 0, 0.7071, 0, -0.7071]) == "oblique"


def _decoy_session(root: Path, **study) -> None:
    """Localizer, axial, sagittal T1 and two sagittal PD (a repeat) in one study."""
    study.setdefault("study_uid", pydicom.uid.generate_uid())
    write_mr_series(
        root / "loc",
        orientation=["sagittal", "coronal", "axial"],
        n_slices=3,
        series_number=1,
        series_description="localizer",
        **study,
    )
    write_mr_series(root / "t1", series_number=2, series_description="T1_TSE_SAG", **study)
    write_mr_series(root / "pd", series_number=3, series_description="PD_TSE_SAG_FS", **study)
    write_mr_series(root / "pd2", series_number=4, series_description="PD_TSE_SAG_FS", **study)
    write_mr_series(
        root / "ax", orientation="axial", series_number=5, series_description="PD_TSE_AX", **study
    )


def test_orientation_and_validation_in_index(tmp_path):
    study = {"study_uid": pydicom.uid.generate_uid()}
    _decoy_session(tmp_path, **study)
    write_mr_series(tmp_path / "gap", n_slices=8, skip_slices=[4], series_number=6, **study)
    write_mr_series(tmp_path / "short", n_slices=2, series_number=7, **study)
    series = build_index(tmp_path).series
    by_number = series.set_index("series_number")
    assert by_number.loc[1, "orientation"] == "mixed" and by_number.loc[1, "status"] == "failed"
    assert by_number.loc[3, "orientation"] == "sagittal" and by_number.loc[3, "status"] == "ok"
    assert by_number.loc[5, "orientation"] == "axial"
    assert by_number.loc[6, "status"] == "failed" and "missing slice" in by_number.loc[6, "note"]
    assert "between instances 4-6" in by_number.loc[6, "note"]
    assert by_number.loc[7, "status"] == "failed" and "only 2 file" in by_number.loc[7, "note"]
    row = by_number.loc[3]
    assert (row["rows"], row["columns"], row["n_files"]) == (32, 32, 5)
    assert row["pixel_spacing_mm"] == "1.09375x1.09375" and row["slice_thickness_mm"] == 3.0
    assert row["image_type"] == "ORIGINAL\\PRIMARY\\M\\ND"


def test_select_series_picks_sagittal_pd_over_decoys(tmp_path, caplog):
    _decoy_session(tmp_path / "s1", study_date="20240105")
    _decoy_session(tmp_path / "s2", study_date="20240601")
    series = build_index(tmp_path).series
    with caplog.at_level(logging.INFO, logger="spineflow.convert.dicom_index"):
        chosen = select_series(series, _rules())
    assert list(chosen["study_rank"]) == [1, 2]
    assert set(chosen["series_number"]) == {4}  # the repeat, highest series number
    assert set(chosen["rule"]) == {"sagittal_pd"} and chosen["geometry"].all()
    assert set(chosen["suffix"]) == {"PDw"} and set(chosen["acq"]) == {"sag"}
    assert chosen["note"].str.contains("kept series 4").all()
    assert "kept series 4" in caplog.text


def test_select_series_prefers_ok_and_rejects_unknown_field(tmp_path):
    study = {"study_uid": pydicom.uid.generate_uid()}
    write_mr_series(tmp_path / "a", series_number=3, **study)
    write_mr_series(tmp_path / "b", series_number=4, n_slices=6, skip_slices=[2], **study)
    series = build_index(tmp_path).series
    chosen = select_series(series, _rules())
    assert list(chosen["series_number"]) == [3] and list(chosen["status"]) == ["ok"]
    bad = [{**_rules()[0], "criteria": {"SeriesDescriptionX": "pd"}}]
    with pytest.raises(ValueError, match="SeriesDescriptionX.*known fields: participant_id"):
        select_series(series, bad)


def test_save_load_roundtrip(tmp_path):
    write_mr_series(tmp_path / "dicom")
    (tmp_path / "dicom" / "notes.txt").write_text("not an image")
    index = build_index(tmp_path / "dicom")
    save_index(index, tmp_path / "index")
    for built, loaded in zip(index, load_index(tmp_path / "index"), strict=True):
        pd.testing.assert_frame_equal(loaded, built, check_dtype=False)


def test_load_or_build_uses_cache_until_dicom_changes(tmp_path, monkeypatch):
    dicom, index = tmp_path / "dicom", tmp_path / "index"
    write_mr_series(dicom / "a")
    first = load_or_build(dicom, index).series
    assert (index / "fingerprint.json").exists()

    def forbidden(*args, **kwargs):
        raise AssertionError("a DICOM file was opened although the index was cached")

    with monkeypatch.context() as patch:
        patch.setattr(dicom_index.pydicom, "dcmread", forbidden)
        cached = load_or_build(dicom, index).series
    pd.testing.assert_frame_equal(cached, first, check_dtype=False)

    write_mr_series(dicom / "b", series_number=2, study_date="20240601")
    rebuilt, files, *_ = load_or_build(dicom, index)
    assert len(rebuilt) == 2 and len(files) == 10
    # A different salt also invalidates the cache (participant labels change).
    salted = load_or_build(dicom, index, salt="other").series
    assert set(salted["participant_id"]) != set(rebuilt["participant_id"])


def test_repeated_series_rank_by_number_not_by_text():
    # series numbers come back from the cached index as text: "10" must beat "9"
    row = {
        "participant_id": "sub-01",
        "study_key": "s1",
        "study_rank": 1,
        "study_day": 0,
        "series_description": "pd_sag",
        "orientation": "sagittal",
        "status": "ok",
        "note": "",
    }
    series = pd.DataFrame(
        [
            {**row, "series_key": "a", "series_number": "9"},
            {**row, "series_key": "b", "series_number": "10"},
        ]
    )
    rules = [
        {
            "name": "pd",
            "datatype": "anat",
            "suffix": "PDw",
            "geometry": True,
            "criteria": {"orientation": "^sagittal$", "series_description": "(?i)(pd)"},
        }
    ]
    chosen = select_series(series, rules)
    assert list(chosen["series_key"]) == ["b"] and "kept series 10" in chosen.iloc[0]["note"]
