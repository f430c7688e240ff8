"""One function per pipeline step, taking plain paths and parameters (what scripts/ call)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, cohort, convert, longitudinal, measure, qc, segment
from .bids import bids_uris
from .dicom_index import load_index
from .labels import VERTEBRA_LABELS, lookup_table
from .midsagittal import canal_polarity, load_canonical
from .preprocess import n4_bias_correct, write_sidecar
from .register import register_levels, register_rigid
from .runner import is_placeholder, read_failures

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


def bias_correct(in_path, out_path, field_path, sidecar_path, field_sidecar_path, params,
                 threads):  # fmt: skip
    facts = n4_bias_correct(
        in_path,
        out_path,
        field_path=field_path,
        shrink_factor=params["shrink_factor"],
        iterations=tuple(params["iterations"]),
        convergence_threshold=params["convergence_threshold"],
        threads=threads,
    )
    both = {"Sources": [str(in_path)], "SkullStripped": False}
    write_sidecar(sidecar_path, {**both, "N4": facts})
    field = "N4 bias field: the raw image over the corrected one"
    write_sidecar(field_sidecar_path, {**both, "Description": field})


def segment_session(image_path, dseg_path, dseg_tsv, sidecar_path, method="builtin",
                    external_path=None, label_scheme="spineps", raw_sidecar=None):  # fmt: skip
    """The session's label map in spineflow's values: the built-in segmentation, or another
    tool's map translated (``segment.from_external``)."""
    volume = load_canonical(image_path)
    if method == "external":
        labels, facts = segment.from_external(volume, external_path, label_scheme)
        facts.update(Method="external", Sources=[str(image_path), str(external_path)])
    else:
        polarity = canal_polarity(_read_json(raw_sidecar))
        labels, facts = segment.segment_volume(volume, canal_polarity=polarity)
        facts.update(Method="spineflow builtin", Sources=[str(image_path)])
    segment.write_dseg(labels, volume, image_path, dseg_path)
    table = pd.DataFrame(lookup_table(), columns=["index", "name"])
    table.to_csv(dseg_tsv, sep="\t", index=False)
    write_sidecar(sidecar_path, facts)


def fit_cortex(image_path, dseg_path, out_json, raw_sidecar=None, dseg_sidecar=None):
    """The session's cortex misfit per candidate thickness (``measure.cortex_fit``), which
    the measurement of each of the participant's sessions pools."""
    volume, labels, thickness, midline = _labelled_image(image_path, dseg_path, raw_sidecar,
                                                      dseg_sidecar)  # fmt: skip
    fit = measure.cortex_fit(volume, labels, thickness, midline)
    log.info("cortex fitted on %d endplates", fit["Endplates"])
    write_sidecar(out_json, {"Sources": [str(image_path), str(dseg_path)], **fit})


def measure_session(image_path, dseg_path, discs_tsv, vertebrae_tsv, sidecar_path, cortex_mm,
                    raw_sidecar=None, cortex_fit_paths=(), qc_settings=None,
                    dseg_sidecar=None):  # fmt: skip
    """Disc and vertebra tables of one session, through the QC gate (``qc.gate_session``,
    limits from the config's ``qc``), and a sidecar with how they were measured and the disc
    geometry the longitudinal step carries between sessions. ``cortex_fit_paths``: the
    participant's sessions' ``fit_cortex`` files, pooled when ``cortex_mm`` is auto (those of
    sessions that failed are left out, as the next run leaves the sessions out)."""
    cortex_fit_paths = [p for p in cortex_fit_paths if not is_placeholder(p)]
    volume, labels, thickness, midline = _labelled_image(image_path, dseg_path, raw_sidecar,
                                                      dseg_sidecar)  # fmt: skip
    fits = [json.loads(Path(p).read_text()) for p in cortex_fit_paths] or None
    discs, vertebrae, facts = measure.measure_session(
        volume, labels, cortex_mm, thickness, fits, midline
    )
    limits = qc.QcLimits.from_config(qc_settings)
    facts["LabelOrderProblem"] = qc.order_problem(facts["Discs"], limits)
    discs, vertebrae = qc.gate_session(discs, vertebrae, limits, facts["LabelOrderProblem"])
    cohort.write_tsv(discs, discs_tsv)
    cohort.write_tsv(vertebrae, vertebrae_tsv)
    sources = [str(image_path), str(dseg_path), *map(str, cortex_fit_paths)]
    write_sidecar(sidecar_path, {"Sources": sources, **facts})


def _labelled_image(image_path, dseg_path, raw_sidecar, dseg_sidecar):
    """A session's image, its label map, its slices' thickness (the DICOM SliceThickness, when
    not their spacing) and the mid-sagittal surface the segmentation recorded in the label
    map's sidecar, where it did (``segment.MIDSAGITTAL_SURFACE``; None: the measurement finds
    its own)."""
    volume = load_canonical(image_path)
    labels = measure.load_labels(dseg_path, volume)
    surface = (_read_json(dseg_sidecar) or {}).get(segment.MIDSAGITTAL_SURFACE)
    midline = None if surface is None else np.asarray(surface, float)
    return volume, labels, (_read_json(raw_sidecar) or {}).get("SliceThickness"), midline


def _read_json(path) -> dict | None:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def register_sessions(fixed, moving, fixed_dseg, moving_dseg, out_tfm, level_tfms, out_image,
                      sidecar_path, params, threads):  # fmt: skip
    """Whole-field rigid registration of ses-2 to ses-1 (started from the two label maps), then
    one rigid refinement per vertebra (``register.register_levels``)."""
    facts = register_rigid(
        fixed,
        moving,
        out_tfm,
        out_image,
        fixed_dseg=fixed_dseg,
        moving_dseg=moving_dseg,
        sampling_fraction=params["sampling_fraction"],
        iterations=params["iterations"],
        threads=threads,
    )
    levels = register_levels(fixed, moving, fixed_dseg, out_tfm, level_tfms, VERTEBRA_LABELS,
                             moving_dseg=moving_dseg, threads=threads)  # fmt: skip
    reference = bids_uris([fixed], sidecar_path)[0]  # space-ses1: timepoint 1's image
    write_sidecar(sidecar_path, {
        "Sources": [str(fixed), str(moving)], "SpatialReference": reference,
        "SkullStripped": False, "Registration": facts, "PerVertebra": levels,
    })  # fmt: skip


def longitudinal_heights(sidecar_ses1, sidecar_ses2, level_tfms: dict, out_tsv):
    """Per disc: the sessions' own heights, their change and its check through the
    per-vertebra transforms (``longitudinal.participant_heights``)."""
    records = [
        {d["level"]: d for d in json.loads(Path(p).read_text())["Discs"]}
        for p in (sidecar_ses1, sidecar_ses2)
    ]
    transforms = {name: longitudinal.read_transform(path) for name, path in level_tfms.items()}
    cohort.write_tsv(longitudinal.participant_heights(*records, transforms), out_tsv)


def group_tables(per_session, index_failures, failures_dir, visits, discs_tsv, vertebrae_tsv,
                 deriv_root, per_participant=(), qc_settings=None,
                 qc_ratings_tsv=None):  # fmt: skip
    """The cohort tables, values whose sessions disagree beyond what can change marked
    ``qc_failed`` (``qc.gate_sessions``), discs whose change the registration contradicts
    (``qc.gate_registration``), values a reviewer rated fail (``qc.gate_ratings``, from
    ``qc_ratings_tsv``), and the vertebrae next to failed discs (``qc.gate_endplates``).
    ``per_session``: {kind: (participant_id, session_id, path)}; ``per_participant``:
    (participant_id, path) of the longitudinal tables; a path that is a failed step's
    placeholder is left out. Failed sessions come from ``index_failures`` and the records
    in ``failures_dir`` of the ``visits`` planned (those of this run too); a participant's
    record (its registration failed) is noted on both sessions."""
    per_session = {kind: [e for e in entries if not is_placeholder(e[-1])]
                   for kind, entries in per_session.items()}  # fmt: skip
    per_participant = [e for e in per_participant if not is_placeholder(e[-1])]
    planned = {tuple(visit) for visit in visits}
    records = read_failures(failures_dir)
    failures = [
        *index_failures,
        *(r for r in records if (r["participant_id"], r["session_id"]) in planned),
    ]
    participants = {participant for participant, _ in planned}
    pair_failures = [r for r in records
                     if not r["session_id"] and r["participant_id"] in participants]  # fmt: skip
    limits = qc.QcLimits.from_config(qc_settings)
    discs = qc.gate_sessions(cohort.assemble(per_session["discs"], "discs", failures), "discs",
                             limits)  # fmt: skip
    discs = qc.gate_registration(discs, cohort.registration_disagreements(per_participant))
    discs = cohort.with_pair_failures(discs, pair_failures)
    vertebrae = cohort.assemble(per_session["vertebrae"], "vertebrae", failures)
    if qc_ratings_tsv:
        ratings = qc.read_ratings(qc_ratings_tsv, discs)
        discs = qc.gate_ratings(discs, "discs", ratings)
        vertebrae = qc.gate_ratings(vertebrae, "vertebrae", ratings)
        log.info("%d reviewer rating(s) read, %d of them fail", len(ratings),
                 int((ratings["rating"] == "fail").sum()))  # fmt: skip
    vertebrae = qc.gate_sessions(qc.gate_endplates(discs, vertebrae), "vertebrae", limits)
    cohort.write_tsv(discs, discs_tsv)
    cohort.write_tsv(vertebrae, vertebrae_tsv)
    cohort.write_derivatives_description(deriv_root, __version__)
