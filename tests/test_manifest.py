"""The participants' outputs table the cohort steps read (spineflow.cohort.manifest)."""

from __future__ import annotations

import pandas as pd
import pytest

from spineflow.cohort.manifest import (
    PAIR_OUTPUTS,
    SESSION_OUTPUTS,
    pair_outputs,
    session_outputs,
    write_manifest,
)


def _files(root, names):
    paths = [root / name for name in names]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    return [str(p) for p in paths]


def test_the_cohort_steps_read_back_each_output_in_order_from_a_moved_folder(tmp_path):
    deriv = tmp_path / "derivatives" / "spineflow"
    sessions = [("sub-02", "ses-1"), ("sub-01", "ses-1"), ("sub-01", "ses-2")]
    per_session = {
        out: list(zip(*zip(*sessions), _files(deriv, [f"{p}/{s}/{out}.x" for p, s in sessions])))
        for out in SESSION_OUTPUTS
    }
    per_pair = {out: [("sub-01", *_files(deriv, [f"sub-01/{out}.x"]))] for out in PAIR_OUTPUTS}
    manifest = deriv / "logs" / "participant_outputs.tsv"
    write_manifest(per_session, per_pair, manifest)
    table = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    assert len(table) == 3 * len(SESSION_OUTPUTS) + len(PAIR_OUTPUTS)
    assert not table["path"].str.startswith("/").any()  # relative: the folder may move
    assert (table.loc[table["output"].isin(PAIR_OUTPUTS), "session_id"] == "n/a").all()

    moved = tmp_path / "elsewhere"
    (tmp_path / "derivatives").rename(moved)
    root = moved / "spineflow"
    read = session_outputs(root / "logs" / "participant_outputs.tsv", "vertebrae")
    assert read == [(p, s, str(root / p / s / "vertebrae.x")) for p, s in sessions]
    pairs = pair_outputs(root / "logs" / "participant_outputs.tsv", "longitudinal")
    assert pairs == [("sub-01", str(root / "sub-01" / "longitudinal.x"))]


def test_an_empty_cohort_gives_a_table_with_no_rows(tmp_path):
    manifest = tmp_path / "outputs.tsv"
    write_manifest({out: [] for out in SESSION_OUTPUTS}, {}, manifest)
    assert session_outputs(manifest, "discs") == []


def test_an_unknown_output_names_the_table(tmp_path):
    manifest = tmp_path / "outputs.tsv"
    write_manifest({}, {}, manifest)
    with pytest.raises(ValueError, match="outputs.tsv.*'disc'"):
        session_outputs(manifest, "disc")
