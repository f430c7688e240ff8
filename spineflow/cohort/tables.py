"""Cohort tables: per-session measure tables -> group tables (statistics: spineflow.stats).

The columns are ``core.tables``'. A measure is only ever reported for a
structure whose status is ``ok``; ``assemble`` enforces this whatever the input says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spineflow.core.bids import RAW_DATASET_LINK, derivatives_root, raw_dataset_link
from spineflow.core.ids import prefixed
from spineflow.core.io import BIDS_VERSION, NA, atomic_write_text
from spineflow.core.tables import KINDS, STATUSES, TableKind, append_note, read_text_tsv


def _natural_key(text: str) -> tuple:
    """'sub-2' < 'sub-10', 'ses-2' < 'ses-10' (digit runs compare as numbers)."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", str(text))
        if part
    )


def _sorted(table: pd.DataFrame, kind: TableKind) -> pd.DataFrame:
    rank = {name: i for i, name in enumerate(kind.order)}
    order = sorted(
        range(len(table)),
        key=lambda i: (
            _natural_key(table["participant_id"].iat[i]),
            _natural_key(table["session_id"].iat[i]),
            rank[table[kind.key].iat[i]],
        ),
    )
    return table.iloc[order].reset_index(drop=True)


# --- assembling the group tables ----------------------------------------------------------


def _read_session_table(path: str | Path, kind: TableKind, participant_id: str, session_id: str):
    try:
        table = read_text_tsv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"{path}: cannot read {kind.key} table: {error}") from error
    required = [kind.key, *kind.measures, "status", "note"]
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {required}")
    # a table that names its own participant/session must agree with the caller
    for column, expected in (("participant_id", participant_id), ("session_id", session_id)):
        if column in table.columns:
            found = set(table[column].dropna().map(str)) - {expected}
            if found:
                raise ValueError(f"{path}: {column} {sorted(found)} but expected {expected}")
            table = table.drop(columns=column)

    names = table[kind.key].fillna("")
    unknown = sorted(set(names) - set(kind.order))
    if unknown:
        raise ValueError(f"{path}: unknown {kind.key}(s) {unknown}; known: {list(kind.order)}")
    if names.duplicated().any() or len(names) != len(kind.order):
        raise ValueError(
            f"{path}: expected exactly one row per {kind.key} {list(kind.order)}, "
            f"found {list(names)}"
        )
    status = table["status"].fillna("")
    bad_status = sorted(set(status) - set(STATUSES))
    if bad_status:
        raise ValueError(f"{path}: unknown status {bad_status}; known: {list(STATUSES)}")

    for measure in kind.measures:
        values = pd.to_numeric(table[measure], errors="coerce")
        not_numbers = table[measure].notna() & values.isna()
        if not_numbers.any():
            raise ValueError(
                f"{path}: non-numeric {measure}: {sorted(set(table.loc[not_numbers, measure]))}"
            )
        if measure in kind.integer:
            given = values.dropna()
            if ((given != given.round()) | (given < 1) | (given > 5)).any():
                raise ValueError(f"{path}: {measure} must be an integer 1-5, got {list(given)}")
        table[measure] = values.astype("float64")
    table["note"] = table["note"].fillna("")
    for column in table.columns.difference([kind.key, *kind.measures, "status", "note"]):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.notna().sum() == table[column].notna().sum():  # all numbers: keep as numbers
            table[column] = values
    table.insert(0, "session_id", session_id)
    table.insert(0, "participant_id", participant_id)
    return table


def _failure_rows(failures: Iterable[dict], kind: TableKind) -> pd.DataFrame:
    notes: dict[tuple[str, str], list[str]] = {}
    for failure in failures:
        missing = {"participant_id", "session_id", "stage", "message"} - set(failure)
        if missing:
            raise ValueError(f"failure record {failure!r} lacks {sorted(missing)}")
        session = (
            prefixed(failure["participant_id"], "sub"),
            prefixed(failure["session_id"], "ses"),
        )
        note = f"{failure['stage']} failed: {' '.join(str(failure['message']).split())}"
        if note not in notes.setdefault(session, []):
            notes[session].append(note)
    rows = [
        {
            "participant_id": sub,
            "session_id": ses,
            kind.key: name,
            "status": "failed",
            "note": "; ".join(session_notes),
        }
        for (sub, ses), session_notes in notes.items()
        for name in kind.order
    ]
    return pd.DataFrame(rows, columns=["participant_id", "session_id", kind.key, "status", "note"])


def assemble(
    per_session: Sequence[tuple[str, str, str | Path]],
    kind: str,
    failures: Sequence[dict] = (),
) -> pd.DataFrame:
    """One group table from the per-session tables, plus rows for sessions known to have failed.

    ``per_session``: (participant_id, session_id, path) of each measure-stage table;
    ``kind``: "discs" or "vertebrae"; ``failures``: {participant_id, session_id, stage, message}
    for sessions without a table, each becoming one ``failed`` row per level/vertebra with the
    note "<stage> failed: <message>" (several failures of one session are joined with "; ").

    Raises ValueError (naming the file) for a missing column, an unknown level/vertebra or
    status, a non-numeric measure, a level given twice or not at all; and for a session given
    twice, or given both as a table and as a failure.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    spec = KINDS[kind]
    tables, seen = [], {}
    for participant_id, session_id, path in per_session:
        session = (prefixed(participant_id, "sub"), prefixed(session_id, "ses"))
        if session in seen:
            raise ValueError(f"{session[0]} {session[1]} given twice: {seen[session]} and {path}")
        seen[session] = path
        tables.append(_read_session_table(path, spec, *session))
    failed = _failure_rows(failures, spec)
    both = set(zip(failed["participant_id"], failed["session_id"], strict=True)) & set(seen)
    if both:
        raise ValueError(
            "sessions given both as a measure table and as failed: "
            + ", ".join(f"{sub} {ses} ({seen[sub, ses]})" for sub, ses in sorted(both))
        )

    extras: list[str] = []
    for table in tables:
        extras += [c for c in table.columns if c not in spec.columns and c not in extras]
    columns = [*spec.columns, *extras]
    frames = [frame.reindex(columns=columns) for frame in (*tables, failed) if len(frame)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    for measure in spec.measures:
        values = pd.to_numeric(table[measure], errors="coerce").astype("float64")
        values[table["status"] != "ok"] = np.nan  # never trust a measure of a missing structure
        table[measure] = values.astype("Int64") if measure in spec.integer else values
    for column in ("participant_id", "session_id", spec.key, "status", "note"):
        table[column] = table[column].fillna("").astype(str)
    return _sorted(table, spec)


def registration_disagreements(per_participant: Sequence[tuple[str, str | Path]]) -> list:
    """(participant_id, level, note) of each disc whose change through the per-vertebra
    registration disagrees with the difference of the sessions' own heights
    (``longitudinal.participant_heights``, its ``change_note``, with the two heights)."""
    found = []
    for participant_id, path in per_participant:
        table = pd.read_csv(path, sep="\t", na_values=[NA], keep_default_na=False)
        for row in table.itertuples():
            if isinstance(getattr(row, "change_note", ""), str) and row.change_note:
                heights = (
                    f"heights ses-1 {row.height_ses1_mm:.2f}, ses-2 {row.height_ses2_mm:.2f} mm"
                )
                found.append((participant_id, row.level, f"{row.change_note} ({heights})"))
    return found


def with_pair_failures(discs: pd.DataFrame, pair_failures: Sequence[dict] = ()) -> pd.DataFrame:
    """discs.tsv with the participants whose registration failed in both sessions' notes."""
    discs = discs.copy()
    for failure in pair_failures:
        where = discs["participant_id"] == prefixed(failure["participant_id"], "sub")
        append_note(
            discs, where, f"{failure['stage']} failed: {' '.join(str(failure['message']).split())}"
        )
    return discs


# what BIDS has no place for (fMRIPrep ignores its own the same way): QC figures, the group
# tables, logs and benchmarks, per-session measure tables, ITK transforms, JSON-only records;
# folder names without a trailing slash: bids-validator 3 then ignores them at any depth
DERIVATIVES_BIDSIGNORE = (
    "figures", "group", "logs", "benchmarks", "*_discs.tsv", "*_discs.json",
    "*_vertebrae.tsv", "*_xfm.tfm", "*_endplates.json",
)  # fmt: skip
DERIVATIVES_README = """\
# spineflow derivatives

Per session (sub-*/ses-*/anat): the N4-corrected image (desc-preproc) and its bias field,
the vertebra and disc labels (desc-vertebrae_dseg), and the measurements (*_discs.tsv,
*_vertebrae.tsv, with the fitted geometry in *_discs.json). Per participant (sub-*/anat): the
rigid transforms from timepoint 2 to timepoint 1 (whole field and per vertebra, ITK .tfm) and
the change per disc (desc-longitudinal_discs.tsv). QC figures are in figures/ folders, the
cohort tables, statistics and report in group/, logs and benchmarks in logs/ and benchmarks/.
Sources are named by BIDS URIs: bids:raw: is the raw dataset (DatasetLinks).
"""


def write_derivatives_description(deriv_root: str | Path, version: str) -> str:
    """dataset_description.json of the derivatives dataset, with its README and .bidsignore
    (``DERIVATIVES_BIDSIGNORE``); returns the description's path.

    The source (raw BIDS) dataset is linked as a BIDS URI, ``bids:raw:``, whose location
    (``DatasetLinks``) is relative to the derivatives root: ``{output_dir}/bids`` seen from
    ``{output_dir}/derivatives/spineflow``.
    """
    deriv_root = Path(deriv_root)
    output_dir = deriv_root.parent.parent
    if derivatives_root(output_dir) != deriv_root:
        raise ValueError(
            f"{deriv_root} is not a spineflow derivatives root (<out>/derivatives/...)"
        )
    path = deriv_root / "dataset_description.json"
    content = {
        "Name": "spineflow",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "spineflow", "Version": str(version)}],
        "SourceDatasets": [{"URL": f"bids:{RAW_DATASET_LINK}:"}],
        "DatasetLinks": raw_dataset_link(output_dir),
    }
    atomic_write_text(path, json.dumps(content, indent=2) + "\n")
    atomic_write_text(deriv_root / "README.md", DERIVATIVES_README)
    atomic_write_text(deriv_root / ".bidsignore", "\n".join(DERIVATIVES_BIDSIGNORE) + "\n")
    return str(path)
