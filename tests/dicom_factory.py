"""Write small but real MR DICOM series for tests (pydicom only, no external data)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"

# Row and column direction cosines (LPS) per orientation; normal = row x column.
ORIENTATIONS = {
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}

# Identifying values every test series carries, so tests can look for them in outputs.
PHI = {
    "PatientName": "DOE^JANE",
    "PatientID": "PATX4711",
    "PatientBirthDate": "19800101",
    "InstitutionName": "Example General Hospital",
    "InstitutionAddress": "1 Sample Street Springfield",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "OperatorsName": "SMITHERS^WAYLON",
    "AccessionNumber": "ACC98765",
    "StationName": "MRSTATION7",
}


def write_mr_series(
    out_dir: str | Path,
    *,
    orientation: str | Sequence[str] = "sagittal",
    n_slices: int = 5,
    rows: int = 32,
    columns: int = 32,
    pixel_spacing_mm: tuple[float, float] = (1.09375, 1.09375),
    slice_thickness_mm: float = 3.0,
    slice_spacing_mm: float = 3.3,
    skip_slices: Sequence[int] = (),
    patient_id: str = PHI["PatientID"],
    patient_name: str = PHI["PatientName"],
    study_date: str = "20240105",
    study_time: str = "081500",
    study_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "PD_TSE_SAG_FS",
    protocol_name: str | None = None,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    name_pattern: str = "IM{index:04d}",
    seed: int = 0,
) -> dict:
    """Write one series (one file per slice) and return its uids and file paths.

    ``orientation`` may be a list with one orientation per slice (a 3-plane localizer).
    ``skip_slices`` leaves those slice indices out (a missing-slice series).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_slice = [orientation] * n_slices if isinstance(orientation, str) else list(orientation)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(n_slices):
        if index in skip_slices:
            continue
        row, col = (np.array(v) for v in ORIENTATIONS[per_slice[index]])
        normal = np.cross(row, col)
        position = np.array([-20.0, -17.5, 17.5]) + index * slice_spacing_mm * normal
        ds = _dataset(study_uid, series_uid, frame_uid)
        ds.update(_phi_elements(patient_id, patient_name))
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = study_time
        ds.SeriesNumber = series_number
        ds.InstanceNumber = index + 1
        ds.SeriesDescription = series_description
        ds.ProtocolName = protocol_name or series_description
        ds.ImageType = list(image_type)
        ds.ImageOrientationPatient = [*row.tolist(), *col.tolist()]
        ds.ImagePositionPatient = position.tolist()
        ds.SliceLocation = float(position @ normal)
        ds.Rows, ds.Columns = rows, columns
        ds.PixelSpacing = list(pixel_spacing_mm)
        ds.SliceThickness = slice_thickness_mm
        ds.SpacingBetweenSlices = slice_spacing_mm
        pixels = rng.integers(0, 1000, size=(rows, columns), dtype=np.uint16)
        ds.PixelData = pixels.tobytes()
        path = out_dir / name_pattern.format(index=index + 1, series=series_number)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return {"study_uid": study_uid, "series_uid": series_uid, "paths": paths}


def write_enhanced_mr(
    path: str | Path,
    *,
    n_frames: int = 6,
    rows: int = 32,
    columns: int = 32,
    pixel_spacing_mm: tuple[float, float] = (0.8, 0.8),
    slice_thickness_mm: float = 3.5,
    study_date: str = "20240105",
    series_description: str = "PD_TSE_SAG_FS",
    seed: int = 0,
) -> Path:
    """One enhanced multi-frame MR file (a whole sagittal series, as Siemens XA and current
    Philips scanners export): its geometry only in the functional groups. Each frame's
    intensity is 100 x its frame number, so a reader can check the slice order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _dataset(generate_uid(), generate_uid(), generate_uid(), ENHANCED_MR_IMAGE_STORAGE)
    ds.update(_phi_elements(PHI["PatientID"], PHI["PatientName"]))
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDateTime = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "081500"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SeriesDescription = ds.ProtocolName = series_description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, n_frames
    row, col = ORIENTATIONS["sagittal"]
    normal = np.cross(row, col)
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [*row, *col]
    measures.PixelSpacing = list(pixel_spacing_mm)
    measures.SliceThickness = slice_thickness_mm
    measures.SpacingBetweenSlices = slice_thickness_mm
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for index in range(n_frames):
        frame, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = (
            np.array([-20.0, -12.8, 12.8]) + index * slice_thickness_mm * normal
        ).tolist()
        content.InStackPositionNumber = index + 1
        content.StackID = "1"
        content.DimensionIndexValues = [1, index + 1]
        frame.PlanePositionSequence = [position]
        frame.FrameContentSequence = [content]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    rng = np.random.default_rng(seed)
    pixels = np.stack([np.full((rows, columns), 100 * (i + 1)) for i in range(n_frames)])
    pixels = (pixels + rng.integers(0, 5, size=pixels.shape)).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def corrupt_compressed(paths) -> None:
    """Rewrite each file's pixel data as a JPEG 2000 codestream that is broken after its first
    marker (what a failed transfer of a compressed export leaves): the header and the file
    size look fine, only the decoder finds out."""
    rng = np.random.default_rng(0)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + rng.bytes(600)])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)


def _dataset(
    study_uid: str, series_uid: str, frame_uid: str, sop_class: str = MR_IMAGE_STORAGE
) -> FileDataset:
    meta = FileMetaDataset()
    sop_uid = generate_uid()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "MR"
    ds.Manufacturer = "ACME"
    ds.MagneticFieldStrength = 3.0
    ds.RepetitionTime = 3000.0
    ds.EchoTime = 30.0
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.MRAcquisitionType = "2D"
    ds.PatientPosition = "HFS"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def _phi_elements(patient_id: str, patient_name: str) -> FileDataset:
    phi = FileDataset("", {})
    for keyword, value in PHI.items():
        setattr(phi, keyword, value)
    phi.PatientID = patient_id
    phi.PatientName = patient_name
    phi.PatientSex = "F"
    phi.PatientAge = "044Y"
    return phi
