"""One function per pipeline step, taking plain paths and parameters (what scripts/ call)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from . import __version__, cohort, convert, measure, segment
from .dicom_index import load_index
from .midsagittal import load_canonical
from .preprocess import n4_bias_correct, write_sidecar
from .register import register_rigid

log = logging.getLogger(__name__)


def convert_session(
    index_dir, dicom_dir, series_key, out_nifti, out_json, raw_dir, subject, session, work_dir
):
    _, files = load_index(index_dir)
    relpaths = files.loc[files["series_key"] == series_key, "relpath"].tolist()
    log.info("converting series %s (%d files)", series_key, len(relpaths))
    convert.convert_series(dicom_dir, relpaths, out_nifti, out_json, work_dir, series_key)
    session_dir = Path(out_nifti).parent.parent
    convert.write_scans_tsv(raw_dir, subject, session, [os.path.relpath(out_nifti, session_dir)])


def bids_metadata(index_dir, participants_tsv, raw_dir, sessions_tsvs):
    series, _ = load_index(index_dir)
    convert.write_dataset_description(raw_dir, "spineflow raw BIDS")
    convert.write_participants_tsv(
        raw_dir, series["participant_id"].unique(), participants_tsv or None
    )
    for participant, sessions in series.groupby("participant_id"):
        convert.write_sessions_tsv(raw_dir, participant, sessions)
    missing = [p for p in sessions_tsvs if not Path(p).exists()]
    if missing:
        raise RuntimeError(f"sessions tables not written: {missing}")


def bias_correct(in_path, out_path, field_path, sidecar_path, params, threads):
    facts = n4_bias_correct(
        in_path,
        out_path,
        field_path=field_path,
        shrink_factor=params["shrink_factor"],
        iterations=tuple(params["iterations"]),
        convergence_threshold=params["convergence_threshold"],
        threads=threads,
    )
    write_sidecar(sidecar_path, {"Sources": [str(in_path)], "N4": facts})


def segment_session(image_path, dseg_path, dseg_tsv, sidecar_path):
    volume = load_canonical(image_path)
    labels, facts = segment.segment_volume(volume)
    segment.write_dseg(labels, volume, image_path, dseg_path)
    table = pd.DataFrame(segment.lookup_table(), columns=["index", "name"])
    table.to_csv(dseg_tsv, sep="\t", index=False)
    write_sidecar(
        sidecar_path, {"Sources": [str(image_path)], "Method": "spineflow builtin", **facts}
    )


def measure_session(image_path, dseg_path, discs_tsv, vertebrae_tsv, cortex_mm):
    volume = load_canonical(image_path)
    labels = measure.load_labels(dseg_path, volume)
    discs, vertebrae = measure.measure_session(volume, labels, cortex_mm)
    cohort.write_tsv(discs, discs_tsv)
    cohort.write_tsv(vertebrae, vertebrae_tsv)


def register_sessions(fixed, moving, out_tfm, out_image, sidecar_path, params, threads):
    facts = register_rigid(
        fixed,
        moving,
        out_tfm,
        out_image,
        sampling_fraction=params["sampling_fraction"],
        iterations=params["iterations"],
        threads=threads,
    )
    write_sidecar(sidecar_path, {"Sources": [str(fixed), str(moving)], "Registration": facts})


def group_tables(per_session, failures, discs_tsv, vertebrae_tsv, longitudinal_tsv, deriv_root):
    discs = cohort.assemble(per_session["discs"], "discs", failures)
    vertebrae = cohort.assemble(per_session["vertebrae"], "vertebrae", failures)
    cohort.write_tsv(discs, discs_tsv)
    cohort.write_tsv(vertebrae, vertebrae_tsv)
    cohort.write_tsv(cohort.longitudinal(discs, vertebrae), longitudinal_tsv)
    cohort.write_derivatives_description(deriv_root, __version__)
