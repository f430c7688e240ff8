"""Write rendered slices as a real MR DICOM series (one file per slice, as scanners export)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from spineflow_dev.synth.render import SliceGeometry


@dataclass(frozen=True)
class StudyInfo:
    """What one scanner visit stamps on every file (including the identifying fields)."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    accession: str
    institution: str
    institution_address: str
    referring_physician: str
    operator: str
    study_date: str
    study_time: str
    study_uid: str
    frame_of_reference_uid: str


@dataclass(frozen=True)
class SeriesInfo:
    number: int
    description: str
    repetition_time_ms: float
    echo_time_ms: float
    scan_options: str


def ras_to_lps(vector) -> np.ndarray:
    return np.asarray(vector, dtype=float) * np.array([-1.0, -1.0, 1.0])


def write_series(
    folder: Path,
    volume: np.ndarray,
    geometry: SliceGeometry,
    study: StudyInfo,
    series: SeriesInfo,
    rng: np.random.Generator,
    series_uid: str | None = None,
    first_instance: int = 1,
) -> list[Path]:
    """volume: (n_slices, rows, cols) float, scaled here to 12-bit unsigned integers.

    Pass the same series_uid to add images of other planes to one series (a 3-plane localizer).
    """
    folder.mkdir(parents=True, exist_ok=True)
    scale = 3000.0 / max(float(np.percentile(volume, 99.9)), 1e-6)
    pixels = np.clip(np.rint(volume * scale), 0, 4095).astype(np.uint16)
    series_uid = series_uid or generate_uid()
    row_lps, col_lps = ras_to_lps(geometry.row_dir), ras_to_lps(geometry.col_dir)
    normal_lps = np.cross(row_lps, col_lps)
    paths = []
    for k, centre in enumerate(geometry.slice_centres):
        corner = (
            np.asarray(centre)
            - (geometry.cols - 1) / 2 * geometry.pixel_mm * geometry.row_dir
            - (geometry.rows - 1) / 2 * geometry.pixel_mm * geometry.col_dir
        )
        position_lps = ras_to_lps(corner)
        ds = _dataset(study, series, series_uid, geometry)
        ds.InstanceNumber = first_instance + k
        ds.ImagePositionPatient = [f"{x:.6f}" for x in position_lps]
        ds.ImageOrientationPatient = [f"{x:.6f}" for x in (*row_lps, *col_lps)]
        ds.SliceLocation = f"{float(np.dot(position_lps, normal_lps)):.6f}"
        ds.PixelData = pixels[k].tobytes()
        # opaque, non-identifying file names, as PACS exports use
        path = folder / f"IM{rng.integers(0, 16**6):06X}{first_instance + k:03d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _dataset(study: StudyInfo, series: SeriesInfo, series_uid: str, geometry) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    sop_uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Modality = "MR"
    ds.Manufacturer = "SpineflowSynth"
    ds.ManufacturerModelName = "Phantom3T"
    ds.MagneticFieldStrength = "3"
    ds.BodyPartExamined = "LSPINE"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.AccessionNumber = study.accession
    ds.InstitutionName = study.institution
    ds.InstitutionAddress = study.institution_address
    ds.ReferringPhysicianName = study.referring_physician
    ds.OperatorsName = study.operator
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = (
        f"{int(study.study_time[:2]):02d}{series.number:02d}00"
    )
    ds.StudyInstanceUID = study.study_uid
    ds.StudyID = "1"
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.SeriesDescription = series.description
    ds.ProtocolName = series.description
    ds.PatientPosition = "HFS"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = series.scan_options
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = f"{series.repetition_time_ms:g}"
    ds.EchoTime = f"{series.echo_time_ms:g}"
    ds.EchoTrainLength = 12
    ds.FlipAngle = "150"
    ds.ImagingFrequency = "123.2"
    ds.SliceThickness = f"{geometry.thickness_mm:g}"
    if len(geometry.slice_centres) > 1:
        spacing = np.linalg.norm(geometry.slice_centres[1] - geometry.slice_centres[0])
        ds.SpacingBetweenSlices = f"{spacing:g}"
    ds.PixelSpacing = [f"{geometry.pixel_mm:.6f}", f"{geometry.pixel_mm:.6f}"]
    ds.Rows, ds.Columns = geometry.rows, geometry.cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = "1200", "2400"
    return ds
