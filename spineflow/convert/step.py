"""The convert steps: one session's DICOM to BIDS NIfTI, and the raw dataset's metadata."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from spineflow.convert import nifti as convert
from spineflow.convert.dicom_index import load_index

log = logging.getLogger(__name__)


def convert_session(
    index_dir, dicom_dir, series_key, out_nifti, out_json, raw_dir, subject, session, work_dir
):
    files = load_index(index_dir).files
    relpaths = files.loc[files["series_key"] == series_key, "relpath"].tolist()
    log.info("converting series %s (%d files)", series_key, len(relpaths))
    convert.convert_series(dicom_dir, relpaths, out_nifti, out_json, work_dir, series_key)
    session_dir = Path(out_nifti).parent.parent
    convert.write_scans_tsv(raw_dir, subject, session, [os.path.relpath(out_nifti, session_dir)])


def bids_metadata(visits_tsv, participants_tsv, dataset, raw_dir, sessions_tsvs):
    """The raw dataset's description, participants.tsv and each participant's sessions.tsv,
    for the studies that are visits (``dicom_index.plan_visits``)."""
    visits = pd.read_csv(visits_tsv, sep="\t", na_values="n/a", keep_default_na=False,
                         dtype={"session_id": str, "days_from_baseline": "Int64"})  # fmt: skip
    visits = visits[visits["status"] != "dropped"]
    convert.write_dataset_description(raw_dir, dataset)
    convert.write_participants_tsv(
        raw_dir, visits["participant_id"].unique(), participants_tsv or None
    )
    for participant, sessions in visits.groupby("participant_id"):
        convert.write_sessions_tsv(raw_dir, participant, sessions)
    missing = [p for p in sessions_tsvs if not Path(p).exists()]
    if missing:
        raise RuntimeError(f"sessions tables not written: {missing}")
