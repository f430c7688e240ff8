"""Protected health information (PHI): what must never leave the DICOM folder, and checks.

The key list follows the DICOM PS3.15 basic de-identification profile as far as it concerns
MR sidecars. ``dcm2niix -ba y`` already drops patient name/ID/birth date, but it keeps
InstitutionName, InstitutionAddress, StationName and AcquisitionTime in the sidecar and writes
the acquisition time into the NIfTI ``descrip`` field, so both are scrubbed here again.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib

from spineflow.core.io import atomic_write_bytes

PHI_KEYS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "OtherPatientIDs",
        "OtherPatientNames",
        "AccessionNumber",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "StudyID",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "AcquisitionDateTime",
        # Times of day are dropped too: with a clinic's schedule they narrow down who was scanned.
        "StudyTime",
        "SeriesTime",
        "AcquisitionTime",
        "ContentTime",
        # Free text that scanners and technicians fill with names.
        "ImageComments",
        "StudyComments",
        "RequestingPhysician",
        "ProcedureStepDescription",
        "StudyDescription",
    }
)

# Any sidecar key containing one of these words is treated as PHI (case-sensitive CamelCase
# words, so e.g. "EchoTime" and "ProtocolName" survive).
PHI_KEY_WORDS = (
    "Date",
    "UID",
    "Patient",
    "Institution",
    "Physician",
    "Operator",
    "Accession",
    "Station",
    "SerialNumber",
    "Birth",
    "Address",
    "Comment",
)

# NIfTI-1/2 free-text header fields that dcm2niix (or other tools) may fill.
NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")

_GZIP_MAGIC = b"\x1f\x8b"


def is_phi_key(key: str) -> bool:
    """True when a sidecar/DICOM keyword names identifying data."""
    return key in PHI_KEYS or any(word in key for word in PHI_KEY_WORDS)


def scrub_sidecar(sidecar: dict) -> dict:
    """Return a copy of a BIDS sidecar without PHI keys (nested dicts scrubbed too)."""
    clean = {}
    for key, value in sidecar.items():
        if is_phi_key(key):
            continue
        clean[key] = scrub_sidecar(value) if isinstance(value, dict) else value
    return clean


def scrub_nifti_header(path: str | Path) -> None:
    """Blank the free-text NIfTI header fields in place; data and affine stay byte-identical.

    The header bytes are edited directly (rather than re-saving through nibabel) so that
    nothing else, such as qform/sform codes or data scaling, can change.
    """
    path = Path(path)
    raw = path.read_bytes()
    compressed = raw[:2] == _GZIP_MAGIC
    content = bytearray(gzip.decompress(raw) if compressed else raw)
    header_class = _nifti_header_class(bytes(content[:4]), path)
    fields = header_class.template_dtype.fields
    for name in NIFTI_TEXT_FIELDS:
        dtype, offset = fields[name][:2]
        content[offset : offset + dtype.itemsize] = b"\0" * dtype.itemsize
    if compressed:
        # mtime=0 and no stored file name: the gzip header carries nothing either.
        payload = gzip.compress(bytes(content), compresslevel=6, mtime=0)
    else:
        payload = bytes(content)
    atomic_write_bytes(path, payload)


def _nifti_header_class(first4: bytes, path: Path) -> type:
    for order in ("<", ">"):
        size = int.from_bytes(first4, "little" if order == "<" else "big")
        if size == 348:
            return nib.Nifti1Header
        if size == 540:
            return nib.Nifti2Header
    raise ValueError(f"{path.name}: not a NIfTI-1/2 file (sizeof_hdr not 348 or 540)")


def find_phi_strings(root_dir: str | Path, phi_strings: Iterable[str]) -> list[tuple[str, str]]:
    """Every (path, string) where a PHI string occurs, case-insensitively, under root_dir.

    Searches file and folder names and every file's bytes (gzip files also decompressed).
    Name variants such as 'LAST^FIRST' vs 'FIRST LAST' are the caller's to list.
    """
    needles = [s for s in dict.fromkeys(phi_strings) if s]
    # bytes.lower() folds ASCII case only, as re.IGNORECASE does on bytes; one lowering per
    # blob and a substring search per string is ~10x faster than a regular expression each
    lowered = [(s, s.encode().lower()) for s in needles]
    hits: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root_dir):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            hits.extend((path, s) for s in needles if s.lower() in name.lower())
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not os.path.exists(path):
                continue
            blobs = [blob.lower() for blob in _file_blobs(path)]
            hits.extend((path, s) for s, needle in lowered if any(needle in b for b in blobs))
    return hits


def _file_blobs(path: str) -> list[bytes]:
    data = Path(path).read_bytes()
    blobs = [data]
    if data[:2] == _GZIP_MAGIC:
        try:
            blobs.append(gzip.decompress(data))
        except (OSError, EOFError):  # not really gzip: the raw bytes were searched already
            pass
    return blobs
