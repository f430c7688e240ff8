"""The cohort step: the group tables from every session's tables and the failure records."""

from __future__ import annotations

import logging

from spineflow import __version__
from spineflow.cohort import tables as cohort
from spineflow.core.runner import is_placeholder, read_failures
from spineflow.core.tables import write_tsv
from spineflow.measure import qc

log = logging.getLogger(__name__)


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
    write_tsv(discs, discs_tsv)
    write_tsv(vertebrae, vertebrae_tsv)
    cohort.write_derivatives_description(deriv_root, __version__)
