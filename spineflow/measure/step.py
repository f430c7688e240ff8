"""The measure steps: a session's cortex fit, and its discs and vertebrae measured."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from spineflow.core.io import read_json, write_sidecar
from spineflow.core.midsagittal import load_canonical
from spineflow.core.plane import load_labels
from spineflow.core.runner import is_placeholder
from spineflow.core.tables import write_tsv
from spineflow.measure import qc
from spineflow.measure.session import cortex_fit
from spineflow.measure.session import measure_session as measure_discs
from spineflow.measure.settings import MeasureSettings
from spineflow.segment import labelling as segment

log = logging.getLogger(__name__)


def fit_cortex(image_path, dseg_path, out_json, raw_sidecar=None, dseg_sidecar=None,
               measurement=None):  # fmt: skip
    """The session's cortex misfit per candidate thickness (``measure.session.cortex_fit``), which
    the measurement of each of the participant's sessions pools; ``measurement``: the config's
    section."""
    volume, labels, thickness, midline = _labelled_image(image_path, dseg_path, raw_sidecar,
                                                      dseg_sidecar)  # fmt: skip
    settings = MeasureSettings.from_config(measurement)
    fit = cortex_fit(volume, labels, thickness, midline, settings=settings)
    log.info("cortex fitted on %d endplates", fit["Endplates"])
    write_sidecar(out_json, {"Sources": [str(image_path), str(dseg_path)], **fit})


def measure_session(image_path, dseg_path, discs_tsv, vertebrae_tsv, sidecar_path, measurement,
                    raw_sidecar=None, cortex_fit_paths=(), qc_settings=None,
                    dseg_sidecar=None):  # fmt: skip
    """Disc and vertebra tables of one session, through the QC gate (``qc.gate_session``,
    limits from the config's ``qc``), and a sidecar with how they were measured and the disc
    geometry the longitudinal step carries between sessions. ``cortex_fit_paths``: the
    participant's sessions' ``fit_cortex`` files, pooled when the config's
    ``measurement.endplate_cortex_mm`` is auto (those of sessions that failed are left out, as
    the next run leaves the sessions out)."""
    cortex_fit_paths = [p for p in cortex_fit_paths if not is_placeholder(p)]
    volume, labels, thickness, midline = _labelled_image(image_path, dseg_path, raw_sidecar,
                                                      dseg_sidecar)  # fmt: skip
    fits = [json.loads(Path(p).read_text()) for p in cortex_fit_paths] or None
    cortex_mm = (measurement or {}).get("endplate_cortex_mm", "auto")
    settings = MeasureSettings.from_config(measurement)
    discs, vertebrae, facts = measure_discs(volume, labels, cortex_mm, thickness, fits, midline,
                                            settings=settings)  # fmt: skip
    limits = qc.QcLimits.from_config(qc_settings)
    facts["LabelOrderProblem"] = qc.order_problem(facts["Discs"], limits)
    discs, vertebrae = qc.gate_session(discs, vertebrae, limits, facts["LabelOrderProblem"])
    write_tsv(discs, discs_tsv)
    write_tsv(vertebrae, vertebrae_tsv)
    sources = [str(image_path), str(dseg_path), *map(str, cortex_fit_paths)]
    write_sidecar(sidecar_path, {"Sources": sources, **facts})


def _labelled_image(image_path, dseg_path, raw_sidecar, dseg_sidecar):
    """A session's image, its label map, its slices' thickness (the DICOM SliceThickness, when
    not their spacing) and the mid-sagittal surface the segmentation recorded in the label
    map's sidecar, where it did (``labelling.MIDSAGITTAL_SURFACE``; None: the measurement finds
    its own)."""
    volume = load_canonical(image_path)
    labels = load_labels(dseg_path, volume)
    surface = (read_json(dseg_sidecar) or {}).get(segment.MIDSAGITTAL_SURFACE)
    midline = None if surface is None else np.asarray(surface, float)
    return volume, labels, (read_json(raw_sidecar) or {}).get("SliceThickness"), midline
