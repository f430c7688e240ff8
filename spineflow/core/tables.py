"""The output tables: the measures they hold (``MEASURES``, the one list every stage reads), their
columns, and their BIDS-style TSV form.

Public tables (docs/DESIGN.md, "Public interface"):

- discs.tsv: participant_id, session_id, level, height_mm, width_mm, pfirrmann_auto, status,
  note, then any extra feature columns the measure stage wrote.
- vertebrae.tsv: participant_id, session_id, vertebra, intervertebral_distance_mm, status, note.

Missing values are NaN in memory and ``n/a`` on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spineflow.core.anatomy import LEVELS, VERTEBRAE
from spineflow.core.ids import prefixed
from spineflow.core.io import NA, atomic_write_text

STATUSES = ("ok", "not_in_fov", "failed", "qc_failed")
SESSION_1 = "ses-1"
SESSION_2 = "ses-2"


@dataclass(frozen=True)
class Measure:
    """One measured value: its column, the table holding it, its unit, what it is (the full
    definitions are in docs/DESIGN.md) and, for a length, the QC gate's default limits (config
    ``qc`` overrides them). A new measure is one entry here plus the function that makes it;
    the tables, the QC gate, the statistics, the report and the evaluation read this list."""

    name: str  # the column, unit included
    table: str  # discs | vertebrae
    unit: str  # mm | grade
    label: str  # what a person reads on a plot
    definition: str
    plausible_mm: tuple[float, float] | None = None  # outside: impossible anatomy (qc.range_mm)
    # over the median of the session's others (qc.ratio_range); None: a check of its own
    neighbour_ratio: tuple[float, float] | None = None
    sessions_mm: float | None = None  # the largest change between sessions (qc.sessions_mm)

    @property
    def integer(self) -> bool:
        """Whether the value is stored as a nullable integer (an ordinal grade)."""
        return self.unit == "grade"


MEASURES = (
    Measure("height_mm", "discs", "mm", "disc height",
            "mean distance between the endplates over the central 80 % of the disc's AP extent",
            plausible_mm=(2.0, 20.0), sessions_mm=2.0),
    Measure("width_mm", "discs", "mm", "disc width",
            "anteroposterior extent of the disc along its mid-plane",
            plausible_mm=(20.0, 65.0), neighbour_ratio=(0.7, 1.4), sessions_mm=5.0),
    Measure("pfirrmann_auto", "discs", "grade", "Pfirrmann grade",
            "automatic Pfirrmann grade of disc degeneration (1-5 for I-V)"),
    Measure("intervertebral_distance_mm", "vertebrae", "mm", "intervertebral distance",
            "distance between the midpoints of the vertebra's cranial and caudal endplates",
            plausible_mm=(15.0, 50.0), neighbour_ratio=(0.65, 1.5), sessions_mm=3.0),
)  # fmt: skip


def measures(table: str | None = None, unit: str | None = None) -> tuple[Measure, ...]:
    """The registered measures, of one table and/or unit."""
    return tuple(m for m in MEASURES if table in (None, m.table) and unit in (None, m.unit))


class TableKind:
    """A measure table's shape: the column naming its structure, their order, its measures."""

    def __init__(self, table: str, key: str, order: Sequence[str]):
        self.key = key  # the column naming the structure: level | vertebra
        self.order = tuple(order)
        self.measures = tuple(m.name for m in measures(table))
        self.integer = tuple(m.name for m in measures(table) if m.integer)

    @property
    def columns(self) -> tuple[str, ...]:
        return ("participant_id", "session_id", self.key, *self.measures, "status", "note")


KINDS = {"discs": TableKind("discs", "level", LEVELS),
         "vertebrae": TableKind("vertebrae", "vertebra", VERTEBRAE)}  # fmt: skip
DISC_COLUMNS = KINDS["discs"].columns


# --- identifiers and ordering -------------------------------------------------------------


def with_bids_ids(table: pd.DataFrame) -> pd.DataFrame:
    """A copy with participant_id and session_id (where present) as sub-XX and ses-X."""
    ids = {
        column: table[column].map(lambda v, p=prefix: prefixed(v, p))
        for column, prefix in (("participant_id", "sub"), ("session_id", "ses"))
        if column in table
    }
    return table.assign(**ids)


def read_text_tsv(path: str | Path) -> pd.DataFrame:
    """A BIDS-style TSV as text: n/a and empty cells missing, nothing else converted."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[NA, ""])


def append_note(table: pd.DataFrame, where: pd.Series, note: str) -> None:
    """Add ``note`` to the notes of the rows ``where`` holds (after any note they have)."""
    table.loc[where, "note"] = [
        "; ".join(n for n in (old, note) if n) for old in table.loc[where, "note"]
    ]


# --- writing -------------------------------------------------------------------------------


def _format_float(value: float, significant: bool) -> str:
    if value is None or pd.isna(value):
        return NA
    if significant:  # p-values: 3 significant digits, never rounded to 0.000
        return f"{value:.3g}"
    return f"{round(float(value), 3) + 0.0:.3f}"  # + 0.0: no "-0.000"


def write_tsv(df: pd.DataFrame, path: str | Path, *, significant: Sequence[str] = ("p_value",)):
    """Write ``df`` as a BIDS-style TSV: ``n/a`` for missing or empty cells, floats with 3
    decimals (columns in ``significant`` with 3 significant digits instead), via a temporary
    file and a rename so a reader never sees half a table."""
    out = df.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            keep = column in significant
            out[column] = [_format_float(value, keep) for value in out[column]]
        elif not pd.api.types.is_numeric_dtype(out[column]):
            # BIDS TSV: no empty cells, 'n/a' instead (an empty note included)
            out[column] = [
                NA if pd.isna(value) or str(value).strip() == "" else str(value)
                for value in out[column]
            ]
    text = out.to_csv(sep="\t", index=False, na_rep=NA, lineterminator="\n")
    atomic_write_text(path, text)
