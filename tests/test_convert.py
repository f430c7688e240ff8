"""DICOM -> BIDS conversion through nipype's Dcm2niix, PHI scrubbing, and the BIDS tables."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from dicom_factory import PHI, corrupt_compressed, write_enhanced_mr, write_mr_series

from spineflow.convert.dicom_index import build_index, file_key
from spineflow.convert.nifti import (
    PARTICIPANT_COLUMNS,
    ConversionError,
    convert_series,
    write_dataset_description,
    write_participants_tsv,
    write_scans_tsv,
    write_sessions_tsv,
)
from spineflow.convert.phi import is_phi_key
from spineflow.core.bids import bids

# Identifying values as they may appear in outputs, with the usual name variants.
PHI_STRINGS = [
    *PHI.values(),
    "DOE",
    "JANE",
    "HOUSE",
    "SMITHERS",
    "Jane Doe",
    "20240105",
    "081500",
    "08:15:00",
    "19800101",
]


@pytest.fixture
def sagittal(tmp_path):
    dicom = tmp_path / "dicom"
    written = write_mr_series(
        dicom / "Study" / "Series",
        n_slices=6,
        rows=32,
        columns=24,
        pixel_spacing_mm=(1.09375, 0.9),
        slice_spacing_mm=3.3,
    )
    (dicom / "notes.txt").write_text("not dicom")
    series, files, *_ = build_index(dicom)
    return dicom, series.iloc[0], files, written


def test_convert_series_geometry_and_no_phi(tmp_path, sagittal, monkeypatch):
    dicom, row, files, written = sagittal
    # Snakemake scripts run the venv python without the venv on PATH.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    raw = tmp_path / "bids"
    out_nifti = bids(
        raw,
        datatype="anat",
        sub=row["participant_id"],
        ses="ses-1",
        acq="sag",
        suffix="PDw",
        extension=".nii.gz",
    )
    out_json = out_nifti.replace(".nii.gz", ".json")
    convert_series(
        dicom,
        list(files["relpath"]),
        out_nifti,
        out_json,
        tmp_path / "work",
        series_key=row["series_key"],
    )

    image = nib.load(out_nifti)
    assert image.shape == (24, 32, 6)  # i runs along a row (Columns), j along a column (Rows)
    voxel_sizes = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(voxel_sizes, [0.9, 1.09375, 3.3], atol=1e-4)
    assert abs(image.affine[0, 2]) > 3.2  # slices step along x (L-R): sagittal
    for field in ("descrip", "aux_file", "db_name", "intent_name"):
        assert image.header[field].item() == b""

    sidecar = json.loads(open(out_json).read())
    assert sidecar["SpineflowSeriesKey"] == row["series_key"]
    assert not [key for key in sidecar if is_phi_key(key)]
    assert sidecar["EchoTime"] == pytest.approx(0.03)

    from spineflow.convert.phi import find_phi_strings

    assert find_phi_strings(raw, PHI_STRINGS) == []
    assert list((tmp_path / "work").iterdir()) == []  # temp folder removed


def test_enhanced_multiframe_converts_in_slice_order(tmp_path, monkeypatch):
    """One file holds the series (Siemens XA, Philips): dcm2niix stacks its frames."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    dicom = tmp_path / "dicom"
    write_enhanced_mr(dicom / "mf.dcm", n_frames=6, rows=32, columns=24)
    series, files, *_ = build_index(dicom)
    out_nifti = tmp_path / "bids" / "sub-01_ses-1_acq-sag_PDw.nii.gz"
    convert_series(dicom, list(files["relpath"]), out_nifti,
                   str(out_nifti).replace(".nii.gz", ".json"), tmp_path / "work",
                   series_key=series.iloc[0]["series_key"])  # fmt: skip
    image = nib.as_closest_canonical(nib.load(out_nifti))
    assert image.shape == (6, 24, 32)  # canonical: x across the slices, z along the rows
    np.testing.assert_allclose(image.header.get_zooms(), [3.5, 0.8, 0.8], atol=1e-4)
    means = np.asarray(image.dataobj, dtype=float).mean(axis=(1, 2))
    assert np.all(np.abs(np.diff(means) - 100) < 5)  # frames 1..6 from left to right


def test_convert_series_series_key_from_dicom(tmp_path, sagittal):
    dicom, row, files, _ = sagittal
    out_nifti, out_json = tmp_path / "out" / "x.nii.gz", tmp_path / "out" / "x.json"
    convert_series(dicom, list(files["relpath"]), out_nifti, out_json, tmp_path / "work")
    assert json.loads(out_json.read_text())["SpineflowSeriesKey"] == row["series_key"]


def test_convert_failure_leaves_no_outputs(tmp_path):
    dicom = tmp_path / "dicom"
    # A 3-plane localizer: dcm2niix writes one NIfTI per plane.
    write_mr_series(dicom, orientation=["sagittal", "coronal", "axial"], n_slices=3)
    relpaths = sorted(p.name for p in dicom.iterdir())
    out_nifti, out_json = tmp_path / "out" / "sub-01_PDw.nii.gz", tmp_path / "out" / "x.json"
    with pytest.raises(ConversionError, match="sub-01_PDw.nii.gz"):
        convert_series(dicom, relpaths, out_nifti, out_json, tmp_path / "work")
    assert list((tmp_path / "out").iterdir()) == []
    assert list((tmp_path / "work").iterdir()) == []


def _read(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_bids_tables(tmp_path):
    raw = tmp_path / "bids"
    demographics = tmp_path / "participants.tsv"
    demographics.write_text(
        "participant_id\tname\tsex\tage\theight_cm\tweight_kg\tgroup\tfinish_time_min\n"
        "sub-01\tJane Doe\tF\t44\t170\t65\tfinisher\t250\n"
        "02\tJohn Roe\tM\t38\t180\tn/a\tnon-finisher\tn/a\n"
        "sub-99\tNot Scanned\tM\t30\t175\t70\tfinisher\t240\n"
    )
    dataset = {
        "name": "marathon spine",
        "authors": ["A. Author", "B. Author"],
        "license": "CC0-1.0",
    }
    write_dataset_description(raw, dataset)
    description = json.loads((raw / "dataset_description.json").read_text())
    assert description["Name"] == "marathon spine" and description["DatasetType"] == "raw"
    assert description["Authors"] == ["A. Author", "B. Author"]
    assert description["License"] == "CC0-1.0"
    assert (raw / "README.md").read_text().startswith("# marathon spine")

    write_participants_tsv(raw, ["sub-02", "sub-01", "sub-03"], demographics)
    table = _read(raw / "participants.tsv")
    assert list(table.columns) == list(PARTICIPANT_COLUMNS)  # participant_id first, BMI added
    assert table.columns[0] == "participant_id" and "bmi" in table.columns
    assert list(table["participant_id"]) == ["sub-01", "sub-02", "sub-03"]
    assert table.loc[0, "bmi"] == "22.5"  # 65 / 1.7^2 = 22.49
    assert table.loc[1, "bmi"] == "n/a" and table.loc[1, "weight_kg"] == "n/a"
    assert (table.loc[2].drop("participant_id") == "n/a").all()
    assert "Jane" not in (raw / "participants.tsv").read_text()
    assert json.loads((raw / "participants.json").read_text())["bmi"]["Units"] == "kg/m^2"

    write_participants_tsv(raw, ["sub-01"], None)
    assert _read(raw / "participants.tsv").loc[0, "sex"] == "n/a"

    sessions = pd.DataFrame({"session_id": ["ses-2", "ses-1"], "days_from_baseline": [126, 0]})
    path = write_sessions_tsv(raw, "sub-01", sessions)
    assert path == str(raw / "sub-01" / "sub-01_sessions.tsv")
    assert _read(path).to_dict("list") == {
        "session_id": ["ses-1", "ses-2"],
        "days_from_baseline": ["0", "126"],
    }

    path = write_scans_tsv(raw, "sub-01", "ses-1", ["anat/sub-01_ses-1_acq-sag_PDw.nii.gz"])
    assert path == str(raw / "sub-01" / "ses-1" / "sub-01_ses-1_scans.tsv")
    assert _read(path).to_dict("list") == {"filename": ["anat/sub-01_ses-1_acq-sag_PDw.nii.gz"]}


def test_corrupt_compressed_series_names_its_file_by_key(tmp_path, monkeypatch):
    """Encapsulated pixel data has no length to check in the index: dcm2niix finds it broken,
    and the error names the series and the file by key, never its path or a temporary copy."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    dicom = tmp_path / "dicom"
    written = write_mr_series(dicom / "Doe^Jane_19800101", n_slices=4)
    corrupt_compressed(written["paths"])
    series, files, *_ = build_index(dicom)
    assert series.iloc[0]["status"] == "ok"
    out_nifti = tmp_path / "bids" / "sub-01_ses-1_acq-sag_PDw.nii.gz"
    with pytest.raises(ConversionError) as error:
        convert_series(dicom, list(files["relpath"]), out_nifti,
                       str(out_nifti).replace(".nii.gz", ".json"), tmp_path / "work",
                       series_key=series.iloc[0]["series_key"])  # fmt: skip
    first_line = str(error.value).splitlines()[0]
    key = file_key(files["relpath"].iloc[0])
    assert series.iloc[0]["series_key"] in first_line and key in first_line
    assert "OpenJPEG" in first_line
    assert "Doe" not in str(error.value) and "dcm2niix_" not in str(error.value)
    assert not out_nifti.exists()
