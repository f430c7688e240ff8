"""PHI scrubbing of sidecars and NIfTI headers, and the PHI search used by other tests."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np

from spineflow.convert.phi import find_phi_strings, is_phi_key, scrub_nifti_header, scrub_sidecar


def test_scrub_sidecar_drops_phi_keeps_acquisition_parameters():
    sidecar = {
        "PatientName": "DOE^JANE",
        "PatientBirthDate": "19800101",
        "InstitutionName": "Example General Hospital",
        "InstitutionAddress": "1 Sample Street",
        "StationName": "MR7",
        "AcquisitionTime": "08:15:00",
        "AcquisitionDateTime": "2024-01-05T08:15:00",
        "SeriesInstanceUID": "1.2.3",
        "ReferringPhysicianName": "HOUSE",
        "DeviceSerialNumber": "1234",
        "EchoTime": 0.03,
        "RepetitionTime": 3.0,
        "SliceThickness": 3,
        "ProtocolName": "PD_TSE_SAG",
        "SeriesDescription": "PD_TSE_SAG",
        "ImageType": ["ORIGINAL", "PRIMARY"],
    }
    clean = scrub_sidecar(sidecar)
    assert set(clean) == {
        "EchoTime",
        "RepetitionTime",
        "SliceThickness",
        "ProtocolName",
        "SeriesDescription",
        "ImageType",
    }
    assert sidecar["PatientName"] == "DOE^JANE"  # the input is not modified


def test_phi_key_words():
    assert is_phi_key("OperatorsName") and is_phi_key("StudyInstanceUID")
    assert not is_phi_key("EchoTime") and not is_phi_key("InversionTime")


def _nifti(path, descrip=b"TE=30;Time=081500.000 DOE^JANE"):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([1.1, 1.2, 3.3, 1.0])
    affine[:3, 3] = [10, -20, 30]
    image = nib.Nifti1Image(data, affine)
    image.header["descrip"] = descrip
    image.header["aux_file"] = b"PATX4711"
    image.header["db_name"] = b"DOE"
    image.header["intent_name"] = b"JANE"
    nib.save(image, path)
    return data, image.affine


def test_scrub_nifti_header_blank_fields_keep_data_and_affine(tmp_path):
    path = tmp_path / "image.nii.gz"
    data, _ = _nifti(path)
    affine = nib.load(path).affine  # as stored (float32), which must survive bit for bit
    scrub_nifti_header(path)
    image = nib.load(path)
    for field in ("descrip", "aux_file", "db_name", "intent_name"):
        assert image.header[field].item() == b""
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), data)
    np.testing.assert_array_equal(image.affine, affine)
    assert find_phi_strings(tmp_path, ["DOE", "PATX4711", "081500"]) == []


def test_scrub_nifti_header_uncompressed(tmp_path):
    path = tmp_path / "image.nii"
    data, _ = _nifti(path)
    before = path.read_bytes()
    scrub_nifti_header(path)
    after = path.read_bytes()
    assert len(after) == len(before) and after[348:] == before[348:]
    assert nib.load(path).header["descrip"].item() == b""


def test_find_phi_strings_names_contents_and_gzip(tmp_path):
    folder = tmp_path / "Doe_Jane"
    folder.mkdir()
    (folder / "notes.txt").write_text("nothing here")
    (tmp_path / "a.json").write_text('{"x": "patx4711"}')
    (tmp_path / "b.gz").write_bytes(gzip.compress(b"...ACC98765..."))
    hits = find_phi_strings(tmp_path, ["doe_jane", "PATX4711", "ACC98765", "absent"])
    found = {(p.split("/")[-1], s) for p, s in hits}
    assert found == {("Doe_Jane", "doe_jane"), ("a.json", "PATX4711"), ("b.gz", "ACC98765")}
