"""Index a raw DICOM folder into series and files tables, without PHI, pick series, and
decide which studies are the visits of this study.

The index is the only thing later stages read about the DICOM folder: participant labels,
opaque study and series keys, and header-level geometry/validation. Its series table holds no
names, IDs, dates or UIDs (studies carry day offsets instead of dates). Its files and skipped
tables hold paths relative to the DICOM folder, which may carry names from an export's folders:
they stay in ``sourcedata/`` (``INDEX_README``), and logs name a file only by its key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from spineflow.core.ids import bare, prefixed
from spineflow.core.io import NA, atomic_write_text

log = logging.getLogger(__name__)

HEADER_TAGS = [
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "SeriesNumber",
    "SeriesDescription",
    "ProtocolName",
    "ImageType",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "Rows",
    "Columns",
    "PixelSpacing",
    "SliceThickness",
    "InstanceNumber",
    "NumberOfFrames",
    "BodyPartExamined",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "BitsAllocated",
    "SamplesPerPixel",
    "PixelData",
]

SERIES_COLUMNS = [
    "participant_id",
    "study_key",
    "study_rank",
    "study_day",
    "series_key",
    "series_number",
    "series_description",
    "protocol_name",
    "image_type",
    "body_part",
    "orientation",
    "n_files",
    "rows",
    "columns",
    "pixel_spacing_mm",
    "slice_thickness_mm",
    "status",
    "note",
]
FILE_COLUMNS = ["series_key", "relpath", "instance_number"]
SKIPPED_COLUMNS = ["file_key", "relpath", "reason"]
STUDY_COLUMNS = ["participant_id", "study_key", "study_date"]
SELECTION_COLUMNS = [
    *SERIES_COLUMNS[: SERIES_COLUMNS.index("series_number") + 1],  # the series' keys
    "rule",
    "datatype",
    "suffix",
    "acq",
    "geometry",
    "status",
    "note",
]

SERIES_TSV = "series.tsv"
FILES_TSV = "files.tsv"
SKIPPED_TSV = "skipped.tsv"
STUDIES_TSV = "studies.tsv"
INDEX_TABLES = (SERIES_TSV, FILES_TSV, SKIPPED_TSV, STUDIES_TSV)  # DicomIndex's, in order
FINGERPRINT_JSON = "fingerprint.json"
INDEX_FORMAT = 3  # bump when the tables change, so old caches are rebuilt
INDEX_README = """\
The DICOM index spineflow reads instead of the DICOM folder.

series.tsv: one row per DICOM series, without names, IDs, dates or UIDs.
files.tsv: the files of each series; skipped.tsv: files left out, and why.
Both hold paths relative to the DICOM folder. An export's folder names often carry patient
names and dates, and studies.tsv holds each study's date (to match the visit dates a
sessions_tsv may list): keep sourcedata/ as private as the DICOM folder itself. Logs and
reports name a file only by its file_key.
"""
UNKNOWN_PATIENTS = ("skip", "fail")
UNKNOWN_PATIENT = "PatientID not in the id_map"
DUPLICATE_INSTANCE = "a copy of an instance (same SOPInstanceUID) kept as"
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data
DEFER_BYTES = 1024  # larger values (the pixel data) are not read, only located

OBLIQUE_COSINE = 0.8  # below this the normal has no dominant axis
GAP_FACTOR = 1.5  # a step this many median spacings long means a slice is missing
MIN_SLICES = 3
_AXIS_NAMES = ("sagittal", "coronal", "axial")  # LPS x, y, z normals


# --- identifiers --------------------------------------------------------------------------


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def series_key_for_uid(series_uid: str) -> str:
    """Opaque, stable series (or study) key: a UID itself is a trackable identifier, its hash
    prefix not."""
    return _sha256_hex(series_uid)[:12]


def file_key(relpath: str) -> str:
    """How logs name a file: its path may carry a patient's name."""
    return "file-" + _sha256_hex(relpath)[:12]


def pseudonym(patient_id: str, salt: str = "spineflow") -> str:
    """``sub-`` + 8 hex of sha256(salt + PatientID).

    Stable across runs (the same DICOM always lands in the same participant folder, so reruns
    and added timepoints line up) and, without the salt, not reversible by hashing a list of
    candidate patient IDs.
    """
    return prefixed(_sha256_hex(salt + patient_id)[:8], "sub")


BIDS_LABEL = re.compile(r"^[A-Za-z0-9]+$")


def read_id_map(id_map_path: str | Path) -> dict[str, str]:
    """dicom_patient_id -> participant_id (normalised to ``sub-`` labels); a participant_id
    that is not a BIDS label stops with its line."""
    table = pd.read_csv(id_map_path, sep="\t", dtype=str, keep_default_na=False)
    missing = {"dicom_patient_id", "participant_id"} - set(table.columns)
    if missing:
        raise ValueError(f"id_map {id_map_path}: missing columns {sorted(missing)}")
    participants = _bids_ids(table, "participant_id", "sub", f"id_map {id_map_path}")
    return dict(zip(table["dicom_patient_id"].str.strip(), participants, strict=True))


def _bids_ids(table: pd.DataFrame, column: str, prefix: str, source: str) -> list[str]:
    """The column's values as prefixed BIDS ids; one that is not a BIDS label stops with its
    line (the table's index: its row, line 1 the header)."""
    ids = []
    for line, value in zip(table.index + 2, table[column], strict=True):
        label = bare(value, prefix)
        if not BIDS_LABEL.match(label):
            raise ValueError(
                f"{source}, line {line}: {column} {label!r} is not a BIDS label (letters and "
                f"digits only, optionally after '{prefix}-')"
            )
        ids.append(prefixed(label, prefix))
    return ids


def _participant_ids(records: pd.DataFrame, id_map_path, salt: str) -> pd.Series:
    """Each record's participant: from the id_map (empty where it lacks the PatientID), else
    the salted pseudonym."""
    patient_ids = records["patient_id"]
    if patient_ids.eq("").any():
        # All files without a PatientID end up in one participant: say so, it is rarely right.
        log.warning("%d DICOM file(s) have no PatientID", int(patient_ids.eq("").sum()))
    if not id_map_path:
        return patient_ids.map(lambda pid: pseudonym(pid, salt))
    return patient_ids.map(read_id_map(id_map_path)).fillna("")


# --- reading headers ----------------------------------------------------------------------


def _iter_files(dicom_dir: Path):
    for dirpath, dirnames, filenames in os.walk(dicom_dir):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _read_header(path: Path) -> pydicom.Dataset:
    # the pixel data is not read (deferred), but its offset and length are: truncation shows
    read = {"specific_tags": HEADER_TAGS, "defer_size": DEFER_BYTES}
    try:
        return pydicom.dcmread(path, **read)
    except InvalidDicomError:
        # Some archives strip the 128-byte preamble; retry leniently, then require UIDs.
        return pydicom.dcmread(path, force=True, **read)


def _frame_geometry(ds: pydicom.Dataset, keyword: str, group: str):
    """An enhanced multi-frame object's geometry attribute: in the shared functional groups,
    else in the first frame's (the per-frame positions are dcm2niix's to sort)."""
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in ds.get(sequence) or []:
            for entry in item.get(group) or []:
                if keyword in entry:
                    return entry.get(keyword)
    return None


def _header_record(ds: pydicom.Dataset) -> dict:
    def get(keyword, default=None, group=None):
        value = ds.get(keyword)
        if (value is None or value == "") and group:
            value = _frame_geometry(ds, keyword, group)
        return default if value is None or value == "" else value

    iop = get("ImageOrientationPatient", group="PlaneOrientationSequence")
    ipp = get("ImagePositionPatient")
    spacing = get("PixelSpacing", group="PixelMeasuresSequence")
    return {
        "sop_uid": str(ds.SOPInstanceUID),
        "series_uid": str(ds.SeriesInstanceUID),
        "study_uid": str(get("StudyInstanceUID", ds.SeriesInstanceUID)),
        "patient_id": str(get("PatientID", "")),
        "study_date": str(get("StudyDate", "")),
        "study_time": str(get("StudyTime", "")),
        "series_number": int(get("SeriesNumber", 0)),
        "series_description": str(get("SeriesDescription", "")),
        "protocol_name": str(get("ProtocolName", "")),
        "image_type": "\\".join(get("ImageType", [])) if "ImageType" in ds else "",
        "body_part": str(get("BodyPartExamined", "")),
        "iop": tuple(float(v) for v in iop) if iop is not None and len(iop) == 6 else None,
        "ipp": tuple(float(v) for v in ipp) if ipp is not None and len(ipp) == 3 else None,
        "rows": int(get("Rows", 0)),
        "columns": int(get("Columns", 0)),
        "pixel_spacing_mm": "x".join(repr(float(v)) for v in spacing) if spacing else "",
        "slice_thickness_mm": float(get("SliceThickness", np.nan, group="PixelMeasuresSequence")),
        "instance_number": int(get("InstanceNumber", 0)),
        "n_frames": int(get("NumberOfFrames", 1)),
    }


def _truncation(ds: pydicom.Dataset, size_bytes: int) -> str:
    """Why the file's pixel data is incomplete ('' when it is whole, or compressed: the
    decoder checks that)."""
    if PIXEL_DATA not in ds:
        return ""
    element = ds.get_item(PIXEL_DATA, keep_deferred=True)
    declared = getattr(element, "length", None)
    if declared is None or declared == UNDEFINED_LENGTH:
        return ""
    present = max(0, min(declared, size_bytes - element.value_tell))
    needed = (
        int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * int(ds.get("NumberOfFrames", 1) or 1)
        * int(ds.get("SamplesPerPixel", 1) or 1) * (int(ds.get("BitsAllocated", 16) or 16) // 8)
    )  # fmt: skip
    if present < min(declared, needed) or declared < needed:
        return f"truncated: {present} of {needed} bytes of pixel data"
    return ""


def _read_records(dicom_dir: Path) -> tuple[list[dict], list[dict]]:
    """Every DICOM file's header record, and the files left out with why (any unreadable
    file is left out, never fatal)."""
    records, skipped = [], []
    for path in _iter_files(dicom_dir):
        relpath = path.relative_to(dicom_dir).as_posix()
        try:
            ds = _read_header(path)
            if "SOPInstanceUID" not in ds or "SeriesInstanceUID" not in ds:
                raise ValueError("no SOPInstanceUID/SeriesInstanceUID")
            record = _header_record(ds)
            record["problem"] = _truncation(ds, path.stat().st_size)
        except Exception as error:
            message = str(error).replace(str(path), "the file")[:80]
            reason = f"not readable DICOM ({type(error).__name__}: {message})"
            skipped.append({"file_key": file_key(relpath), "relpath": relpath, "reason": reason})
            continue
        record["relpath"] = relpath
        records.append(record)
    return records, skipped


# --- geometry -----------------------------------------------------------------------------


def slice_normal(iop) -> np.ndarray:
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    return np.cross(row, col)


def orientation_label(iop) -> str:
    """sagittal/coronal/axial from the normal's dominant axis, 'oblique' without one."""
    if iop is None:
        return "unknown"
    normal = slice_normal(iop)
    normal = normal / (np.linalg.norm(normal) or 1.0)
    axis = int(np.argmax(np.abs(normal)))
    return _AXIS_NAMES[axis] if abs(normal[axis]) >= OBLIQUE_COSINE else "oblique"


def _series_orientation(files: pd.DataFrame) -> str:
    labels = set(files["iop"].map(orientation_label))
    return labels.pop() if len(labels) == 1 else "mixed"


def _single_value(values: pd.Series, what: str) -> tuple[object, str | None]:
    unique = values.unique()
    if len(unique) == 1:
        return unique[0], None
    return unique[0], f"inconsistent {what} across files ({len(unique)} different values)"


def _validate_positions(files: pd.DataFrame) -> list[str]:
    """Duplicate or missing slices, from positions projected on the slice normal."""
    iops = np.array(files["iop"].tolist())
    if np.abs(iops - iops[0]).max() > 1e-3:
        return ["image orientation varies across files"]
    if files["ipp"].isna().any():
        return ["ImagePositionPatient missing in some files"]
    normal = slice_normal(iops[0])
    positions = np.array(files["ipp"].tolist()) @ normal
    order = np.argsort(positions)
    positions = positions[order]
    instances = files["instance_number"].to_numpy()[order]
    steps = np.diff(positions)
    problems = []
    duplicates = steps < 1e-3
    if duplicates.any():
        where = ", ".join(str(instances[i + 1]) for i in np.flatnonzero(duplicates))
        problems.append(f"{int(duplicates.sum())} duplicate slice position(s) (instances {where})")
        steps = steps[~duplicates]
        instances = np.delete(instances, np.flatnonzero(duplicates) + 1)
    if len(steps) >= 2:
        median = float(np.median(steps))
        gaps = np.flatnonzero(steps > GAP_FACTOR * median)
        if len(gaps):
            where = ", ".join(f"{instances[i]}-{instances[i + 1]}" for i in gaps)
            problems.append(
                f"missing slice(s): {len(gaps)} gap(s) larger than {GAP_FACTOR} x the median "
                f"spacing {median:.3g} mm (between instances {where})"
            )
    return problems


def _summarise_series(files: pd.DataFrame) -> dict:
    first = files.iloc[0]
    problems = []
    rows, note = _single_value(files["rows"], "Rows")
    problems += [note] if note else []
    columns, note = _single_value(files["columns"], "Columns")
    problems += [note] if note else []
    orientation = _series_orientation(files)
    multiframe = int(files["n_frames"].max()) > 1
    truncated = files[files["problem"] != ""]
    problems += [
        f"instance {row.instance_number} ({file_key(row.relpath)}) {row.problem}"
        for row in truncated.itertuples()
    ]
    if orientation == "mixed":
        problems.append("files have different orientations (a multi-plane localizer?)")
    elif orientation == "unknown":
        problems.append("no ImageOrientationPatient: geometry unknown")
    elif not multiframe:
        if len(files) < MIN_SLICES:
            problems.append(f"only {len(files)} file(s); a 2D series needs {MIN_SLICES}")
        problems += _validate_positions(files)
    return {
        "series_key": series_key_for_uid(first["series_uid"]),
        "series_number": int(first["series_number"]),
        "series_description": first["series_description"],
        "protocol_name": first["protocol_name"],
        "image_type": first["image_type"],
        "body_part": first["body_part"],
        "orientation": orientation,
        "n_files": len(files),
        "rows": int(rows),
        "columns": int(columns),
        "pixel_spacing_mm": first["pixel_spacing_mm"],
        "slice_thickness_mm": first["slice_thickness_mm"],
        "status": "failed" if problems else "ok",
        "note": "; ".join(problems),
    }


# --- sessions -----------------------------------------------------------------------------


def _rank_studies(studies: pd.DataFrame) -> pd.DataFrame:
    """Each study's rank among its participant's (1 = earliest, by StudyDate, StudyTime) and
    its day offset from the participant's earliest dated study: no dates leave the index."""
    studies = studies.sort_values(["participant_id", "study_date", "study_time", "study_uid"])
    studies["study_rank"] = studies.groupby("participant_id").cumcount().add(1)
    days = pd.to_datetime(studies["study_date"], format="%Y%m%d", errors="coerce")
    first = days.groupby(studies["participant_id"]).transform("min")
    studies["study_day"] = (days - first).dt.days.astype("Int64")
    return studies


def _sort_by_study(table: pd.DataFrame, then: list[str]) -> pd.DataFrame:
    return table.sort_values(["participant_id", "study_rank", *then])


def _sort_by_session(table: pd.DataFrame, then: list[str]) -> pd.DataFrame:
    """Sort numerically by session (ses-2 before ses-10)."""
    number = table["session_id"].str.extract(r"(\d+)$")[0].astype(float)
    order = table.assign(_n=number).sort_values(["participant_id", "_n", *then]).index
    return table.loc[order]


# --- build / save / load ------------------------------------------------------------------


class DicomIndex(NamedTuple):
    series: pd.DataFrame  # SERIES_COLUMNS: one row per series, no PHI
    files: pd.DataFrame  # FILE_COLUMNS: each series' files (paths stay in sourcedata/)
    skipped: pd.DataFrame  # SKIPPED_COLUMNS: files left out, and why
    studies: pd.DataFrame  # STUDY_COLUMNS: each study's date (private, as the paths are)


def build_index(
    dicom_dir: str | Path, id_map_path: str | Path | None = None, salt: str = "spineflow"
) -> DicomIndex:
    """Read every DICOM header under dicom_dir into the index. Files that are not readable
    DICOM, and (with an id_map) those of PatientIDs it lacks, are left out and listed."""
    dicom_dir = Path(dicom_dir)
    found, skipped = _read_records(dicom_dir)
    records = pd.DataFrame(found)
    if not records.empty:
        records["participant_id"] = _participant_ids(records, id_map_path, salt)
        unknown = records["participant_id"] == ""
        skipped += [
            {"file_key": file_key(r), "relpath": r, "reason": UNKNOWN_PATIENT}
            for r in records.loc[unknown, "relpath"]
        ]
        records, copies = _drop_copies(records[~unknown])
        skipped += copies
    skipped = pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
    if records.empty:
        return DicomIndex(pd.DataFrame(columns=SERIES_COLUMNS), pd.DataFrame(columns=FILE_COLUMNS),
                          skipped, pd.DataFrame(columns=STUDY_COLUMNS))  # fmt: skip
    studies = records.groupby("study_uid", as_index=False).agg(
        participant_id=("participant_id", "first"),
        study_date=("study_date", "min"),
        study_time=("study_time", "min"),
    )
    studies = _rank_studies(studies).set_index("study_uid")
    series_rows = []
    for _, files in records.groupby("series_uid", sort=False):
        study_uid = files["study_uid"].iloc[0]
        study = studies.loc[study_uid]
        row = {
            "participant_id": study["participant_id"],
            "study_key": series_key_for_uid(study_uid),
            "study_rank": study["study_rank"],
            "study_day": study["study_day"],
        }
        row.update(_summarise_series(files))
        series_rows.append(row)
    series = pd.DataFrame(series_rows, columns=SERIES_COLUMNS)
    series["study_day"] = series["study_day"].astype("Int64")
    series = _sort_by_study(series, ["series_number"])
    records["series_key"] = records["series_uid"].map(series_key_for_uid)
    files = records[FILE_COLUMNS].sort_values(["series_key", "instance_number", "relpath"])
    studies = studies.reset_index().assign(
        study_key=lambda t: t["study_uid"].map(series_key_for_uid)
    )
    studies = _sort_by_study(studies, [])[STUDY_COLUMNS].reset_index(drop=True)
    return DicomIndex(series.reset_index(drop=True), files.reset_index(drop=True), skipped,
                      studies)  # fmt: skip


def _drop_copies(records: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """One file per SOPInstanceUID: exports repeat an instance (a second export of the exam,
    a copy in another transfer syntax). The whole copy is kept, else the first by path."""
    ranked = records.assign(_whole=records["problem"].eq("")).sort_values(
        ["_whole", "relpath"], ascending=[False, True]
    )
    copy = ranked.duplicated("sop_uid")
    kept = ranked[~copy].set_index("sop_uid")["relpath"]
    skipped = [
        {"file_key": file_key(row.relpath), "relpath": row.relpath,
         "reason": f"{DUPLICATE_INSTANCE} {file_key(kept[row.sop_uid])}"}
        for row in ranked[copy].itertuples()
    ]  # fmt: skip
    return records.loc[ranked.index[~copy]].sort_index(), skipped


def _count_reasons(skipped: pd.DataFrame) -> str:
    reasons = skipped["reason"].str.replace(r" \(.*", "", regex=True).value_counts()
    return ", ".join(f"{count} {reason}" for reason, count in reasons.items())


def save_index(index: DicomIndex, index_dir: str | Path) -> None:
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    for table, name in zip(index, INDEX_TABLES, strict=True):
        atomic_write_text(index_dir / name, table.to_csv(sep="\t", index=False, na_rep=NA))
    atomic_write_text(index_dir / "README", INDEX_README)


def _read_tsv(path: Path) -> pd.DataFrame:
    # dtype=str keeps series keys such as '012345678901' and descriptions such as 'NA' intact.
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=["n/a"])


def load_index(index_dir: str | Path) -> DicomIndex:
    index_dir = Path(index_dir)
    series = _read_tsv(index_dir / SERIES_TSV)
    for column in ("study_rank", "study_day", "series_number", "n_files", "rows", "columns"):
        series[column] = pd.to_numeric(series[column]).astype("Int64")
    series["slice_thickness_mm"] = pd.to_numeric(series["slice_thickness_mm"])
    for column in ("series_description", "protocol_name", "image_type", "body_part", "note"):
        series[column] = series[column].fillna("")
    files = _read_tsv(index_dir / FILES_TSV)
    files["instance_number"] = pd.to_numeric(files["instance_number"]).astype("Int64")
    return DicomIndex(series, files, _read_tsv(index_dir / SKIPPED_TSV),
                      _read_tsv(index_dir / STUDIES_TSV))  # fmt: skip


def fingerprint(dicom_dir: str | Path, id_map_path=None, salt: str = "spineflow") -> dict:
    """Cheap summary of the inputs (stat only, no DICOM reads) that decides cache validity."""
    n_files, total_bytes, newest = 0, 0, 0
    for path in _iter_files(Path(dicom_dir)):
        stat = path.stat()
        n_files += 1
        total_bytes += stat.st_size
        newest = max(newest, stat.st_mtime_ns)
    id_map_hash = hashlib.sha256(Path(id_map_path).read_bytes()).hexdigest() if id_map_path else ""
    return {
        "format": INDEX_FORMAT,
        "n_files": n_files,
        "total_bytes": total_bytes,
        "newest_mtime_ns": newest,
        "id_map_sha256": id_map_hash,
        # The salt is a secret: store only its hash.
        "salt_sha256": _sha256_hex(salt),
    }


def load_or_build(
    dicom_dir: str | Path,
    index_dir: str | Path,
    id_map_path: str | Path | None = None,
    salt: str = "spineflow",
    unknown_patients: str = "skip",
) -> DicomIndex:
    """Load the cached index when its fingerprint still matches the inputs, else rebuild;
    say what was left out, and stop on unknown PatientIDs when ``unknown_patients`` is fail."""
    index_dir = Path(index_dir)
    current = fingerprint(dicom_dir, id_map_path, salt)
    stored_path = index_dir / FINGERPRINT_JSON
    cached = all((index_dir / name).exists() for name in INDEX_TABLES)
    if cached and stored_path.exists() and json.loads(stored_path.read_text()) == current:
        log.info("DICOM index unchanged; using the cached index")
        index = load_index(index_dir)
    else:
        index = build_index(dicom_dir, id_map_path, salt)
        save_index(index, index_dir)
        atomic_write_text(stored_path, json.dumps(current, indent=2) + "\n")
    _check_skipped(index.skipped, index_dir / SKIPPED_TSV, id_map_path, unknown_patients)
    return index


def _check_skipped(skipped: pd.DataFrame, listed_in: Path, id_map_path, unknown_patients):
    if skipped.empty:
        return
    log.warning("%d file(s) under the DICOM folder left out: %s (listed in %s)",
                len(skipped), _count_reasons(skipped), listed_in)  # fmt: skip
    unknown = skipped["reason"] == UNKNOWN_PATIENT
    if unknown.any() and unknown_patients == "fail":
        # never the patient IDs or folder names themselves: they are PHI in logs
        raise ValueError(
            f"{int(unknown.sum())} DICOM file(s) have a PatientID that id_map {id_map_path} "
            f"lacks (unknown_patients: fail); their folders are listed in {listed_in}. Add "
            "the PatientIDs to the id_map (column dicom_patient_id), or set "
            "unknown_patients: skip to leave them out"
        )


# --- series selection ---------------------------------------------------------------------


def _check_rule_fields(rules: list[dict], known: list[str]) -> None:
    for rule in rules:
        for section in ("criteria", "exclude"):
            for field in rule.get(section) or {}:
                if field not in known:
                    raise ValueError(
                        f"series rule {rule.get('name')!r}: unknown {section} field {field!r}; "
                        f"known fields: {', '.join(known)}"
                    )


def _text(value) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _matches(series: pd.DataFrame, rule: dict) -> pd.Series:
    """Which series a rule's criteria all match (re.search) and none of its exclusions, for
    the whole index at once: a cohort of thousands has 10^5 series."""
    match = pd.Series(True, index=series.index)
    for section, wanted in (("criteria", True), ("exclude", False)):
        for field, pattern in (rule.get(section) or {}).items():
            search = re.compile(pattern).search
            found = series[field].map(lambda value, search=search: bool(search(_text(value))))
            match &= found if wanted else ~found
    return match


def select_series(series: pd.DataFrame, rules: list[dict]) -> pd.DataFrame:
    """Apply the config ``series`` rules: one row per (participant, study, rule) matched.

    The first matching rule wins per series. When several series of one study match a rule
    (e.g. a repeated scan), the ones that passed validation are preferred, then the highest
    series number (the last repeat is usually the one the technician kept).
    """
    _check_rule_fields(rules, list(series.columns))
    first = pd.Series(-1, index=series.index)
    for number, rule in enumerate(rules):
        first = first.mask((first < 0) & _matches(series, rule), number)
    hits = series[first >= 0]
    if hits.empty:
        return pd.DataFrame(columns=SELECTION_COLUMNS)
    rule_of = [rules[i] for i in first[first >= 0]]
    candidates = pd.DataFrame(
        {
            "participant_id": hits["participant_id"].to_numpy(),
            "study_key": hits["study_key"].to_numpy(),
            "study_rank": hits["study_rank"].to_numpy(),
            "study_day": hits["study_day"].to_numpy(),
            "series_key": hits["series_key"].to_numpy(),
            "series_number": hits["series_number"].to_numpy(),
            "rule": [r["name"] for r in rule_of],
            "datatype": [r["datatype"] for r in rule_of],
            "suffix": [r["suffix"] for r in rule_of],
            "acq": [r.get("acq") or "" for r in rule_of],
            "geometry": [bool(r.get("geometry", False)) for r in rule_of],
            "status": hits["status"].to_numpy(),
            "note": hits["note"].map(_text).to_numpy(),
        }
    )
    keys = ["participant_id", "study_key", "rule"]
    size = candidates.groupby(keys, sort=False)["series_key"].transform("size")
    repeated = [_choose_one(g) for _, g in candidates[size > 1].groupby(keys, sort=False)]
    parts = [candidates[size == 1]] + ([pd.DataFrame(repeated)] if repeated else [])
    chosen = pd.concat(parts, ignore_index=True)[SELECTION_COLUMNS]  # no empty part: dtypes stay
    return _sort_by_study(chosen, ["rule"]).reset_index(drop=True)


def _choose_one(group: pd.DataFrame) -> dict:
    ranked = group.assign(
        _ok=group["status"].eq("ok"), _number=pd.to_numeric(group["series_number"])
    ).sort_values(["_ok", "_number"], ascending=False)
    best = ranked.iloc[0].drop(["_ok", "_number"]).to_dict()
    if len(group) > 1:
        others = ", ".join(str(n) for n in ranked["series_number"].iloc[1:])
        message = (
            f"{len(group)} series matched rule {best['rule']}; kept series "
            f"{best['series_number']} (ignored {others})"
        )
        log.info("%s study %s: %s", best["participant_id"], best["study_key"], message)
        best["note"] = "; ".join(filter(None, [best["note"], message]))
    return best


# --- visits -------------------------------------------------------------------------------

MANY_VISITS_NOTE = "studies of this participant match the geometry rule"
VISIT_COLUMNS = [
    "participant_id",
    "session_id",
    "days_from_baseline",
    "study_key",
    "series_key",
    "series_number",
    "status",
    "note",
]


VISIT_DATE_COLUMNS = ["participant_id", "session_id", "visit_date"]


def read_visit_dates(sessions_tsv: str | Path) -> pd.DataFrame:
    """The visit dates a sessions table lists (participant_id, session_id, visit_date as
    YYYY-MM-DD), or none when it has no visit_date column; a bad row stops with its line."""
    table = pd.read_csv(sessions_tsv, sep="\t", dtype=str, keep_default_na=False)
    if "visit_date" not in table.columns:
        return pd.DataFrame(columns=VISIT_DATE_COLUMNS)
    missing = {"participant_id", "session_id"} - set(table.columns)
    if missing:
        raise ValueError(f"sessions_tsv {sessions_tsv}: missing columns {sorted(missing)}")
    table = table[table["visit_date"].str.strip() != ""]
    source = f"sessions_tsv {sessions_tsv}"
    dates = pd.to_datetime(table["visit_date"].str.strip(), format="%Y-%m-%d", errors="coerce")
    for line, (value, date) in zip(table.index + 2, zip(table["visit_date"], dates), strict=True):
        if pd.isna(date):
            raise ValueError(f"{source}, line {line}: visit_date {value!r} is not YYYY-MM-DD")
    return pd.DataFrame({
        "participant_id": _bids_ids(table, "participant_id", "sub", source),
        "session_id": _bids_ids(table, "session_id", "ses", source),
        "visit_date": dates.to_numpy(),
    })  # fmt: skip


def plan_visits(
    series: pd.DataFrame,
    rules: list[dict],
    visit_dates: pd.DataFrame | None = None,
    studies: pd.DataFrame | None = None,
    window_days: int = 0,
) -> pd.DataFrame:
    """Every study of the index, in VISIT_COLUMNS: a visit of this study when one of its series
    matches the geometry rule, else ``dropped`` with no session: an export often holds a
    patient's unrelated older studies, which must not become visits or shift the real ones'
    numbers. Visits are ses-1, ses-2, ... in date order, or, for a participant with
    ``visit_dates`` (``read_visit_dates``), the listed session whose date is within
    ``window_days`` of the study's (``studies``: each study's date); a listed session that no
    study matches is ``failed``. days_from_baseline counts from the first visit."""
    chosen = select_series(series, rules)
    chosen = chosen[chosen["geometry"].astype(bool)]
    grouped = series.groupby(["participant_id", "study_key"], as_index=False).agg(
        study_rank=("study_rank", "first"), study_day=("study_day", "first"),
        n_series=("series_key", "size"),
    )  # fmt: skip
    plan = grouped.merge(chosen.drop(columns=["study_rank", "study_day"]),
                         on=["participant_id", "study_key"], how="left")  # fmt: skip
    plan = plan.sort_values(["participant_id", "study_rank"]).reset_index(drop=True)
    plan["note"] = plan["note"].fillna("")
    plan["session_id"] = ""
    candidate = plan["series_key"].notna()
    plan.loc[~candidate, "status"] = "dropped"
    plan.loc[~candidate, "note"] = plan.loc[~candidate, "n_series"].map(
        lambda n: f"none of the study's {n} series matches the geometry rule: not a visit"
    )
    if visit_dates is None:
        visit_dates = pd.DataFrame(columns=VISIT_DATE_COLUMNS)
    by_date = candidate & plan["participant_id"].isin(visit_dates["participant_id"])
    numbered = candidate & ~by_date
    numbers = plan[numbered].groupby("participant_id").cumcount().add(1)
    plan.loc[numbered, "session_id"] = numbers.map(lambda n: prefixed(n, "ses"))
    not_found = _match_visit_dates(plan, by_date, visit_dates, studies, window_days)
    visit = plan["session_id"] != ""
    baseline = plan[visit].groupby("participant_id")["study_day"].min()
    plan["days_from_baseline"] = (
        (plan["study_day"] - plan["participant_id"].map(baseline)).where(visit).astype("Int64")
    )
    visits = plan[visit].groupby("participant_id")["session_id"].transform("size")
    many = visits[visits > 2]
    plan.loc[many.index, "note"] = [
        "; ".join(filter(None, [note, f"{n} {MANY_VISITS_NOTE}: each became a session, "
                                "ses-1 and ses-2 are compared"]))
        for note, n in zip(plan.loc[many.index, "note"], many, strict=True)
    ]  # fmt: skip
    if len(not_found):
        plan = pd.concat([plan, not_found], ignore_index=True)
    plan = plan.sort_values("participant_id", kind="stable")
    plan["series_number"] = plan["series_number"].astype("Int64")
    plan["days_from_baseline"] = plan["days_from_baseline"].astype("Int64")
    return plan[VISIT_COLUMNS].reset_index(drop=True)


def _match_visit_dates(plan, by_date, visit_dates, studies, window_days) -> pd.DataFrame:
    """Give each study in ``by_date`` the listed session nearest its date, within the window
    (in place; the others are dropped); return a failed row per listed session no study
    matched."""
    visit_dates = visit_dates[visit_dates["participant_id"].isin(plan["participant_id"])]
    if visit_dates.empty:
        return pd.DataFrame(columns=VISIT_COLUMNS)
    date_of = pd.to_datetime(studies.set_index("study_key")["study_date"], format="%Y%m%d",
                             errors="coerce")  # fmt: skip
    pairs = (
        plan[by_date][["participant_id", "study_key"]]
        .rename_axis("row")
        .reset_index()
        .merge(visit_dates, on="participant_id")
    )
    pairs["gap_days"] = (pd.to_datetime(pairs["study_key"].map(date_of))
                         - pd.to_datetime(pairs["visit_date"])).dt.days.abs()  # fmt: skip
    pairs = pairs[pairs["gap_days"] <= window_days].sort_values(["gap_days", "row"])
    # nearest pair first, each study and each listed session used once
    rows_taken, sessions_taken, kept = set(), set(), []
    for pair in pairs.itertuples():
        session = (pair.participant_id, pair.session_id)
        if pair.row not in rows_taken and session not in sessions_taken:
            rows_taken.add(pair.row)
            sessions_taken.add(session)
            kept.append(pair.Index)
    pairs = pairs.loc[kept]
    plan.loc[pairs["row"], "session_id"] = pairs["session_id"].to_numpy()
    unmatched = by_date & (plan["session_id"] == "")
    plan.loc[unmatched, "status"] = "dropped"
    plan.loc[unmatched, "note"] = (
        f"matches the geometry rule, but no visit_date of sessions_tsv is within {window_days} "
        "day(s) of it (visit_window_days): not a visit"
    )
    listed = zip(visit_dates["participant_id"], visit_dates["session_id"], strict=True)
    missing = visit_dates[[session not in sessions_taken for session in listed]]
    return pd.DataFrame({
        "participant_id": missing["participant_id"],
        "session_id": missing["session_id"],
        "status": "failed",
        "note": (f"no study matches the geometry rule within {window_days} day(s) of the "
                 "visit_date sessions_tsv gives (visit_window_days)"),
    }).reindex(columns=VISIT_COLUMNS)  # fmt: skip
