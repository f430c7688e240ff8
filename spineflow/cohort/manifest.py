"""The participants' outputs the cohort steps read, listed in one table: the group tables and the
report read it, not thousands of inputs each, and Snakemake's ``--batch participant_outputs=i/n``
plans one share of the participants at a time (everything per participant lies above this
rule, everything per cohort below it)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from spineflow.core.tables import read_text_tsv, write_tsv

# what each session and each participant's pair hand to the cohort steps
SESSION_OUTPUTS = ("discs", "vertebrae", "session_figure")
PAIR_OUTPUTS = ("longitudinal", "registration_figure")
COLUMNS = ("participant_id", "session_id", "output", "path")


def write_manifest(per_session: dict, per_pair: dict, out_tsv) -> None:
    """Write the table: ``per_session`` {output: [(participant_id, session_id, path)]} and
    ``per_pair`` {output: [(participant_id, path)]} (session_id n/a), each path relative to the
    table's own folder (the output folder may move)."""
    rows = [(*entry[:-1], output, entry[-1])
            for output, entries in per_session.items() for entry in entries]  # fmt: skip
    rows += [(participant, None, output, path)
             for output, entries in per_pair.items() for participant, path in entries]  # fmt: skip
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    folder = Path(out_tsv).absolute().parent
    table["path"] = [Path(os.path.relpath(Path(p).absolute(), folder)).as_posix()
                     for p in table["path"]]  # fmt: skip
    write_tsv(table, out_tsv)


def session_outputs(manifest_tsv, output: str) -> list[tuple[str, str, str]]:
    """(participant_id, session_id, path) of one of ``SESSION_OUTPUTS``, in the table's order."""
    rows = _rows(manifest_tsv, output)
    return list(zip(rows.participant_id, rows.session_id, rows.path))


def pair_outputs(manifest_tsv, output: str) -> list[tuple[str, str]]:
    """(participant_id, path) of one of ``PAIR_OUTPUTS``, in the table's order."""
    rows = _rows(manifest_tsv, output)
    return list(zip(rows.participant_id, rows.path))


def _rows(manifest_tsv, output: str) -> pd.DataFrame:
    """The table's rows of one output, their paths as found from the working directory."""
    if output not in SESSION_OUTPUTS + PAIR_OUTPUTS:
        raise ValueError(f"{manifest_tsv}: no output {output!r} in a manifest")
    table = read_text_tsv(manifest_tsv)
    rows = table[table["output"] == output].copy()
    folder = Path(manifest_tsv).parent
    rows["path"] = [os.path.normpath(folder / path) for path in rows["path"]]
    return rows
