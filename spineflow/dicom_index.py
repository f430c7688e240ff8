"""Index a raw DICOM folder into series and files tables, without PHI, and pick series.

The index is the only thing later stages read about the DICOM folder: participant and session
labels, an opaque series key, and header-level geometry/validation. It holds no names, IDs,
dates or UIDs (sessions carry ``days_from_baseline`` instead of dates).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

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
]

SERIES_COLUMNS = [
    "participant_id",
    "session_id",
    "days_from_baseline",
    "series_key",
    "series_number",
    "series_description",
    "protocol_name",
    "image_type",
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
SELECTION_COLUMNS = [
    "participant_id",
    "session_id",
    "series_key",
    "series_number",
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
FINGERPRINT_JSON = "fingerprint.json"
INDEX_FORMAT = 1  # bump when the tables change, so old caches are rebuilt

OBLIQUE_COSINE = 0.8  # below this the normal has no dominant axis
GAP_FACTOR = 1.5  # a step this many median spacings long means a slice is missing
MIN_SLICES = 3
_AXIS_NAMES = ("sagittal", "coronal", "axial")  # LPS x, y, z normals


# --- identifiers --------------------------------------------------------------------------


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def series_key_for_uid(series_uid: str) -> str:
    """Opaque, stable series key: a UID itself is a trackable identifier, its hash prefix not."""
    return _sha256_hex(series_uid)[:12]


def pseudonym(patient_id: str, salt: str = "spineflow") -> str:
    """``sub-`` + 8 hex of sha256(salt + PatientID).

    Stable across runs (the same DICOM always lands in the same participant folder, so reruns
    and added timepoints line up) and, without the salt, not reversible by hashing a list of
    candidate patient IDs.
    """
    return "sub-" + _sha256_hex(salt + patient_id)[:8]


def read_id_map(id_map_path: str | Path) -> dict[str, str]:
    """dicom_patient_id -> participant_id (normalised to ``sub-`` labels)."""
    table = pd.read_csv(id_map_path, sep="\t", dtype=str, keep_default_na=False)
    missing = {"dicom_patient_id", "participant_id"} - set(table.columns)
    if missing:
        raise ValueError(f"id_map {id_map_path}: missing columns {sorted(missing)}")
    ids = table["participant_id"].str.strip()
    ids = ids.where(ids.str.startswith("sub-"), "sub-" + ids)
    return dict(zip(table["dicom_patient_id"].str.strip(), ids, strict=True))


def _participant_ids(patient_ids: pd.Series, id_map_path, salt: str) -> pd.Series:
    if patient_ids.eq("").any():
        # All files without a PatientID end up in one participant: say so, it is rarely right.
        log.warning("%d DICOM file(s) have no PatientID", int(patient_ids.eq("").sum()))
    if not id_map_path:
        return patient_ids.map(lambda pid: pseudonym(pid, salt))
    mapping = read_id_map(id_map_path)
    unmapped = sorted(set(patient_ids) - set(mapping))
    if unmapped:
        # Name the map and a count, never the patient IDs themselves (they are PHI in logs).
        raise ValueError(
            f"{len(unmapped)} DICOM PatientID(s) found in the DICOM folder are missing from "
            f"id_map {id_map_path}; add them (column dicom_patient_id)"
        )
    return patient_ids.map(mapping)


# --- reading headers ----------------------------------------------------------------------


def _iter_files(dicom_dir: Path):
    for dirpath, dirnames, filenames in os.walk(dicom_dir):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _read_header(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
    except InvalidDicomError:
        # Some archives strip the 128-byte preamble; retry leniently, then require UIDs.
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=True)


def _header_record(ds: pydicom.Dataset) -> dict:
    def get(keyword, default=None):
        value = ds.get(keyword, default)
        return default if value is None or value == "" else value

    iop = get("ImageOrientationPatient")
    ipp = get("ImagePositionPatient")
    spacing = get("PixelSpacing")
    return {
        "series_uid": str(ds.SeriesInstanceUID),
        "study_uid": str(get("StudyInstanceUID", ds.SeriesInstanceUID)),
        "patient_id": str(get("PatientID", "")),
        "study_date": str(get("StudyDate", "")),
        "study_time": str(get("StudyTime", "")),
        "series_number": int(get("SeriesNumber", 0)),
        "series_description": str(get("SeriesDescription", "")),
        "protocol_name": str(get("ProtocolName", "")),
        "image_type": "\\".join(get("ImageType", [])) if "ImageType" in ds else "",
        "iop": tuple(float(v) for v in iop) if iop is not None and len(iop) == 6 else None,
        "ipp": tuple(float(v) for v in ipp) if ipp is not None and len(ipp) == 3 else None,
        "rows": int(get("Rows", 0)),
        "columns": int(get("Columns", 0)),
        "pixel_spacing_mm": "x".join(repr(float(v)) for v in spacing) if spacing else "",
        "slice_thickness_mm": float(get("SliceThickness", np.nan)),
        "instance_number": int(get("InstanceNumber", 0)),
        "n_frames": int(get("NumberOfFrames", 1)),
    }


def _read_records(dicom_dir: Path) -> list[dict]:
    records = []
    for path in _iter_files(dicom_dir):
        relpath = path.relative_to(dicom_dir).as_posix()
        try:
            ds = _read_header(path)
        except Exception as error:  # any unreadable file is skipped, never fatal
            log.warning("skipping %s: not DICOM (%s)", relpath, type(error).__name__)
            continue
        if "SOPInstanceUID" not in ds or "SeriesInstanceUID" not in ds:
            log.warning("skipping %s: no SOPInstanceUID/SeriesInstanceUID", relpath)
            continue
        try:
            record = _header_record(ds)
        except (TypeError, ValueError) as error:
            log.warning("skipping %s: unreadable header value (%s)", relpath, error)
            continue
        record["relpath"] = relpath
        records.append(record)
    return records


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


def _parse_date(text: str) -> date | None:
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, IndexError):
        return None


def _number_sessions(studies: pd.DataFrame) -> pd.DataFrame:
    """ses-1, ses-2, ... per participant by (StudyDate, StudyTime) order, plus day offsets."""
    studies = studies.sort_values(["participant_id", "study_date", "study_time", "study_uid"])
    studies["session_id"] = "ses-" + (
        studies.groupby("participant_id").cumcount().add(1).astype(str)
    )
    dates = studies["study_date"].map(_parse_date)
    baseline = dates.groupby(studies["participant_id"]).transform("first")

    def offset(pair):
        day, first = pair
        return (day - first).days if day is not None and first is not None else pd.NA

    studies["days_from_baseline"] = pd.array(
        [offset(pair) for pair in zip(dates, baseline, strict=True)], dtype="Int64"
    )
    return studies


def _sort_by_session(table: pd.DataFrame, then: list[str]) -> pd.DataFrame:
    """Sort numerically by session (ses-2 before ses-10)."""
    number = table["session_id"].str.extract(r"(\d+)$")[0].astype(float)
    order = table.assign(_n=number).sort_values(["participant_id", "_n", *then]).index
    return table.loc[order]


# --- build / save / load ------------------------------------------------------------------


def build_index(
    dicom_dir: str | Path, id_map_path: str | Path | None = None, salt: str = "spineflow"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every DICOM header under dicom_dir; return (series, files) tables without PHI."""
    dicom_dir = Path(dicom_dir)
    records = pd.DataFrame(_read_records(dicom_dir))
    if records.empty:
        log.warning("no DICOM files found under the DICOM folder")
        return pd.DataFrame(columns=SERIES_COLUMNS), pd.DataFrame(columns=FILE_COLUMNS)
    records["participant_id"] = _participant_ids(records["patient_id"], id_map_path, salt)
    studies = records.groupby("study_uid", as_index=False).agg(
        participant_id=("participant_id", "first"),
        study_date=("study_date", "min"),
        study_time=("study_time", "min"),
    )
    studies = _number_sessions(studies).set_index("study_uid")
    series_rows = []
    for _, files in records.groupby("series_uid", sort=False):
        study = studies.loc[files["study_uid"].iloc[0]]
        row = {
            "participant_id": study["participant_id"],
            "session_id": study["session_id"],
            "days_from_baseline": study["days_from_baseline"],
        }
        row.update(_summarise_series(files))
        series_rows.append(row)
    series = pd.DataFrame(series_rows, columns=SERIES_COLUMNS)
    series["days_from_baseline"] = series["days_from_baseline"].astype("Int64")
    series = _sort_by_session(series, ["series_number"])
    records["series_key"] = records["series_uid"].map(series_key_for_uid)
    files = records[FILE_COLUMNS].sort_values(["series_key", "instance_number", "relpath"])
    return series.reset_index(drop=True), files.reset_index(drop=True)


def save_index(series: pd.DataFrame, files: pd.DataFrame, index_dir: str | Path) -> None:
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    for table, name in ((series, SERIES_TSV), (files, FILES_TSV)):
        tmp = index_dir / f".{name}.tmp"
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        os.replace(tmp, index_dir / name)


def _read_tsv(path: Path) -> pd.DataFrame:
    # dtype=str keeps series keys such as '012345678901' and descriptions such as 'NA' intact.
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=["n/a"])


def load_index(index_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    index_dir = Path(index_dir)
    series = _read_tsv(index_dir / SERIES_TSV)
    for column in ("days_from_baseline", "series_number", "n_files", "rows", "columns"):
        series[column] = pd.to_numeric(series[column]).astype("Int64")
    series["slice_thickness_mm"] = pd.to_numeric(series["slice_thickness_mm"])
    for column in ("series_description", "protocol_name", "image_type", "note"):
        series[column] = series[column].fillna("")
    files = _read_tsv(index_dir / FILES_TSV)
    files["instance_number"] = pd.to_numeric(files["instance_number"]).astype("Int64")
    return series, files


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
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load the cached index when its fingerprint still matches the inputs, else rebuild."""
    index_dir = Path(index_dir)
    current = fingerprint(dicom_dir, id_map_path, salt)
    stored_path = index_dir / FINGERPRINT_JSON
    cached = all((index_dir / name).exists() for name in (SERIES_TSV, FILES_TSV))
    if cached and stored_path.exists():
        if json.loads(stored_path.read_text()) == current:
            log.info("DICOM index unchanged; using the cached index")
            return load_index(index_dir)
        log.info("DICOM folder, id_map or salt changed; rebuilding the index")
    series, files = build_index(dicom_dir, id_map_path, salt)
    save_index(series, files, index_dir)
    tmp = index_dir / f".{FINGERPRINT_JSON}.tmp"
    tmp.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(tmp, stored_path)
    return series, files


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
    """Apply the config ``series`` rules: one row per (participant, session, rule) matched.

    The first matching rule wins per series. When several series of one session match a rule
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
            "session_id": hits["session_id"].to_numpy(),
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
    keys = ["participant_id", "session_id", "rule"]
    size = candidates.groupby(keys, sort=False)["series_key"].transform("size")
    repeated = [_choose_one(g) for _, g in candidates[size > 1].groupby(keys, sort=False)]
    parts = [candidates[size == 1]] + ([pd.DataFrame(repeated)] if repeated else [])
    chosen = pd.concat(parts, ignore_index=True)[SELECTION_COLUMNS]  # no empty part: dtypes stay
    return _sort_by_session(chosen, ["rule"]).reset_index(drop=True)


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
        log.info("%s %s: %s", best["participant_id"], best["session_id"], message)
        best["note"] = "; ".join(filter(None, [best["note"], message]))
    return best
