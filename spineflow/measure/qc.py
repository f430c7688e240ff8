"""The QC gate: no value is reported ``ok`` that an anatomist would call impossible.

A measured value keeps status ``ok`` only if it passes every check that applies to it:

- its physical range (``QcLimits``: disc height 2-20 mm, width 20-65 mm, intervertebral
  distance 15-50 mm);
- the slices either side of the mid-sagittal one (``_lateral_reasons``): a disc's height
  measured afresh on each differs from the mid-sagittal one by little;
- its neighbouring levels in the same session: a disc far taller than the session's other discs
  (a collapsed disc beside healthy ones is pathology, not an error, so only the tall side is
  checked), a width or an intervertebral distance far from the others';
- the labels' anatomical order (``order_problem``: measured disc centres must follow each other
  caudally at a plausible spacing);
- the discs next to it, for a vertebra's intervertebral distance (``gate_endplates``): it runs
  from their endplates, and fails with a disc that fails;
- where the participant was seen twice, the other session (``gate_sessions``: a disc does not
  change its width, nor a vertebra its height, by millimetres within months), and the change
  the per-vertebra registration gives (``gate_registration``);
- a reviewer's rating after looking at the figures (config ``qc_ratings_tsv``,
  ``gate_ratings``).

A value that fails becomes ``qc_failed``: its number is left out of the tables (only ``ok``
rows carry measures) and the note says what was measured and why it was not trusted. The
statistics leave ``qc_failed`` values out and count them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spineflow.core.anatomy import LEVELS, VERTEBRAE
from spineflow.core.tables import (
    KINDS,
    MEASURES,
    append_note,
    measures,
    read_text_tsv,
    with_bids_ids,
)
from spineflow.measure.session import LATERAL_DIFFERENCE

QC_FAILED = "qc_failed"
# the measures each kind's checks read: the millimetre ones (a grade has no physical range)
CHECKED = {table: tuple(m.name for m in measures(table, "mm")) for table in KINDS}


def _registered(limit: str) -> dict:
    """A QC limit's default per measure, from the measures' list (``core.tables.MEASURES``)."""
    return {m.name: getattr(m, limit) for m in MEASURES if getattr(m, limit) is not None}


@dataclass(frozen=True)
class QcLimits:
    """The gate's limits (config ``qc``)."""

    range_mm: dict = field(default_factory=lambda: _registered("plausible_mm"))
    # a disc's height over the median of the session's other discs' heights
    max_height_ratio: float = 2.0
    # a width or an intervertebral distance over the median of the session's others'
    ratio_range: dict = field(default_factory=lambda: _registered("neighbour_ratio"))
    # the largest difference between two sessions of one participant
    sessions_mm: dict = field(default_factory=lambda: _registered("sessions_mm"))
    # consecutive measured disc centres along the spine (label order), mm
    disc_spacing_mm: tuple = (18.0, 65.0)
    # a disc's mean height on the slices either side minus the mid-sagittal one, at most
    max_lateral_difference_mm: float = 1.0

    @classmethod
    def from_config(cls, settings: dict | None) -> QcLimits:
        """Limits from the config's ``qc`` section (missing keys keep their defaults)."""
        settings = settings or {}
        default = cls()
        ranges = {
            **default.range_mm,
            **{k: tuple(v) for k, v in settings.get("range_mm", {}).items()},
        }
        ratios = {
            **default.ratio_range,
            **{k: tuple(v) for k, v in settings.get("ratio_range", {}).items()},
        }
        return cls(
            range_mm=ranges,
            max_height_ratio=float(settings.get("max_height_ratio", default.max_height_ratio)),
            ratio_range=ratios,
            sessions_mm={**default.sessions_mm, **settings.get("sessions_mm", {})},
            disc_spacing_mm=tuple(settings.get("disc_spacing_mm", default.disc_spacing_mm)),
            max_lateral_difference_mm=float(
                settings.get("max_lateral_difference_mm", default.max_lateral_difference_mm)
            ),
        )


def _fail(table: pd.DataFrame, reasons: pd.Series, kind: str) -> None:
    """Mark rows qc_failed (index -> reason), each reason appended to the row's note and its
    measures blanked: a row that is not ok carries no number."""
    for index, reason in reasons.items():
        note = table.at[index, "note"]
        note = note if isinstance(note, str) else ""
        table.at[index, "status"] = QC_FAILED
        table.at[index, "note"] = "; ".join(filter(None, [note, f"QC: {reason}"]))
        for measure in KINDS[kind].measures:
            if measure in table:
                table.at[index, measure] = np.nan


def _ok_values(table: pd.DataFrame, measure: str) -> pd.Series:
    return table.loc[(table["status"] == "ok") & table[measure].notna(), measure]


def _range_reasons(table: pd.DataFrame, measure: str, limits: QcLimits) -> pd.Series:
    lo, hi = limits.range_mm[measure]
    values = _ok_values(table, measure)
    bad = values[(values < lo) | (values > hi)]
    return bad.map(lambda v: f"{measure} {v:.1f} outside {lo:g}-{hi:g} mm")


def _neighbour_reasons(table: pd.DataFrame, measure: str, limits: QcLimits) -> pd.Series:
    """Values far from the median of the session's other values of the measure, where those
    others agree with each other (so that the odd one out is the one flagged)."""
    values = _ok_values(table, measure)
    lo, hi = (
        (0.0, limits.max_height_ratio) if measure == "height_mm" else limits.ratio_range[measure]
    )
    reasons = {}
    for index, value in values.items():
        others = values.drop(index)
        if len(others) < 2 or others.max() > hi * others.min():  # nothing to judge it by
            continue
        median = float(others.median())
        if not lo <= value / median <= hi:
            reasons[index] = (
                f"{measure} {value:.1f} is {value / median:.2f} times the median "
                f"of the session's other levels ({median:.1f})"
            )
    return pd.Series(reasons, dtype=object)


def _lateral_reasons(table: pd.DataFrame, limits: QcLimits) -> pd.Series:
    """Heights the slices either side contradict (``measure.session.LATERAL_DIFFERENCE``): a fit on
    the mid-sagittal surface that took another edge than its neighbours' (noise alone keeps the
    difference within about 0.3 mm: the limit lies at some five of its SDs)."""
    limit = limits.max_lateral_difference_mm
    difference = table.loc[table["status"] == "ok", LATERAL_DIFFERENCE]
    bad = difference[difference.abs() > limit]
    return pd.Series(
        {index: (f"height_mm {table.at[index, 'height_mm']:.1f}, on the slices either side "
                 f"{table.at[index, 'height_mm'] + d:.1f} (mean): over {limit:g} mm apart")
         for index, d in bad.items()},
        dtype=object,
    )  # fmt: skip


def gate_session(
    discs: pd.DataFrame, vertebrae: pd.DataFrame, limits: QcLimits, order_problem: str = ""
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One session's tables with the rows whose values fail a check marked ``qc_failed``:
    every measured row when ``order_problem`` names one, else the discs' heights against the
    slices either side, ranges, then neighbouring levels (among the values still ok); the
    vertebrae next to a failed disc (``gate_endplates``) before their own checks."""
    out = []
    for table, kind in ((discs, "discs"), (vertebrae, "vertebrae")):
        table = table.copy() if kind == "discs" else gate_endplates(out[0], table)
        if order_problem:
            ok = table.index[table["status"] == "ok"]
            _fail(table, pd.Series(order_problem, index=ok, dtype=object), kind)
        if kind == "discs" and LATERAL_DIFFERENCE in table:
            _fail(table, _lateral_reasons(table, limits), kind)
        for check in (_range_reasons, _neighbour_reasons):
            for measure in CHECKED[kind]:
                _fail(table, check(table, measure, limits), kind)
        out.append(table)
    return out[0], out[1]


def gate_endplates(discs: pd.DataFrame, vertebrae: pd.DataFrame) -> pd.DataFrame:
    """The vertebrae table with each vertebra next to a ``qc_failed`` disc marked ``qc_failed``
    too: its intervertebral distance runs from that disc's endplate, and a disc fails QC where
    its endplates are not trusted (its height or width impossible, contradicted by the slices
    either side, by the other session or by the registration). One session's tables, or the
    group's (rows matched by participant and session)."""
    keys = [c for c in ("participant_id", "session_id") if c in discs and c in vertebrae]
    failed = discs.loc[discs["status"] == QC_FAILED, [*keys, "level"]]
    if failed.empty:
        return vertebrae.copy()
    bounded = pd.concat([failed.assign(vertebra=failed["level"].str.split("-").str[k])
                         for k in (0, 1)])  # fmt: skip
    levels = bounded.sort_values("level").groupby([*keys, "vertebra"])["level"].agg(" and ".join)
    found = vertebrae[[*keys, "vertebra"]].merge(levels.reset_index(), "left", [*keys, "vertebra"])
    found = found["level"].set_axis(vertebrae.index)
    found = found[(vertebrae["status"] == "ok") & found.notna()]
    reasons = found.map(lambda levels: f"its endplate at {levels}, which failed QC")
    table = vertebrae.copy()
    _fail(table, reasons, "vertebrae")
    return table


def order_problem(discs: list[dict], limits: QcLimits) -> str:
    """Why the measured discs are not in anatomical order (empty if they are): each disc's
    centre must lie caudal to the one above it, along that disc's cranial axis, at a spacing a
    vertebra allows, or as many vertebrae as lie between them. ``discs``: geometry records
    (``measure.session.geometry_record``) of consecutive levels, cranial to caudal; those not ok are
    skipped."""
    measured = [(k, d) for k, d in enumerate(discs) if d["status"] == "ok"]
    for (k_upper, upper), (k_lower, lower) in zip(measured[:-1], measured[1:]):
        lo, hi = (spacing * (k_lower - k_upper) for spacing in limits.disc_spacing_mm)
        step = np.subtract(upper["origin_ras"], lower["origin_ras"])
        along = float(step @ np.asarray(lower["up_ras"]))
        if not lo <= along <= hi:
            return (
                f"labels out of anatomical order: {upper['level']} lies {along:.0f} mm above "
                f"{lower['level']} ({lo:g}-{hi:g} expected)"
            )
    return ""


def gate_sessions(table: pd.DataFrame, kind: str, limits: QcLimits) -> pd.DataFrame:
    """A group table (discs or vertebrae) with the values whose two sessions disagree by more
    than a disc or a vertebra can change (``QcLimits.sessions_mm``) marked ``qc_failed`` in
    both sessions: one of them is wrong and nothing tells which."""
    key = KINDS[kind].key
    table = table.copy()
    for measure in CHECKED[kind]:
        limit = limits.sessions_mm[measure]
        for _, rows in _ok_values(table, measure).groupby([table["participant_id"], table[key]]):
            if len(rows) > 1 and rows.max() - rows.min() > limit:
                sessions = table.loc[rows.index, "session_id"]
                values = ", ".join(f"{s} {v:.1f}" for s, v in zip(sessions, rows))
                reason = (
                    f"sessions disagree on {measure} by {rows.max() - rows.min():.1f} mm ({values})"
                )
                _fail(table, pd.Series(reason, index=rows.index, dtype=object), kind)
    return table


def gate_registration(discs: pd.DataFrame, disagreements) -> pd.DataFrame:
    """discs.tsv with each disc whose change through the per-vertebra registration disagrees with
    the sessions' own heights (``cohort.tables.registration_disagreements``: participant, level,
    note) marked ``qc_failed`` in both sessions: the two estimates lie over five of their SDs apart
    (``longitudinal.MAX_DISAGREEMENT_MM``), so one session's endplates are wrong and nothing tells
    which. Where a session's row is already not ok (the gate failed it: that tells which), the note
    only."""
    discs = discs.copy()
    for participant_id, level, note in disagreements:
        where = (discs["participant_id"] == participant_id) & (discs["level"] == level)
        if (discs.loc[where, "status"] == "ok").all():
            _fail(discs, pd.Series(note, index=discs.index[where], dtype=object), "discs")
        else:
            append_note(discs, where, note)
    return discs


RATING_COLUMNS = ("participant_id", "session_id", "level", "rating", "reason")
RATINGS = ("pass", "fail")
ALL_LEVELS = "all"


def read_ratings(path: str | Path, cohort: pd.DataFrame) -> pd.DataFrame:
    """A reviewer's QC ratings (config ``qc_ratings_tsv``: participant_id, session_id, level
    (a disc level, a vertebra or ``all``), rating pass|fail, reason), checked against the
    cohort's sessions (``cohort``: participant_id, session_id); a ValueError names the file,
    the row and the problem."""
    table = read_text_tsv(path)
    missing = [c for c in RATING_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(RATING_COLUMNS)}")
    table = with_bids_ids(table.dropna(how="all"))
    sessions = set(map(tuple, cohort[["participant_id", "session_id"]].values))
    for line, row in zip(range(2, len(table) + 2), table.itertuples()):
        problem = _rating_problem(row, sessions)
        if problem:
            raise ValueError(f"{path}, line {line}: {problem}")
    return table


def _rating_problem(row, sessions: set) -> str:
    if (row.participant_id, row.session_id) not in sessions:
        return f"{row.participant_id} {row.session_id} is not a session of this cohort"
    if row.level not in (*LEVELS, *VERTEBRAE, ALL_LEVELS):
        return f"level {row.level!r} is none of {', '.join((*LEVELS, *VERTEBRAE, ALL_LEVELS))}"
    if row.rating not in RATINGS:
        return f"rating {row.rating!r} is neither pass nor fail"
    if row.rating == "fail" and not isinstance(row.reason, str):
        return "a fail needs its reason"
    return ""


def gate_ratings(table: pd.DataFrame, kind: str, ratings: pd.DataFrame) -> pd.DataFrame:
    """A group table (discs or vertebrae) with the values a reviewer rated fail marked
    ``qc_failed`` (their row's level, or the whole session with ``all``), the reason in the
    note; a pass changes nothing (the gate's own verdict stands)."""
    key = KINDS[kind].key
    table = table.copy()
    failed = ratings[ratings["rating"] == "fail"]
    for row in failed.itertuples():
        where = (
            (table["participant_id"] == row.participant_id)
            & (table["session_id"] == row.session_id)
            & (table["status"] == "ok")
            & ((table[key] == row.level) | (row.level == ALL_LEVELS))
        )
        reason = f"rated fail by a reviewer: {row.reason}"
        _fail(table, pd.Series(reason, index=table.index[where], dtype=object), kind)
    return table
