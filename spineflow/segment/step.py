"""The segment step: one session's label map by the configured method (``segment.methods``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spineflow.core.anatomy import lookup_table
from spineflow.core.io import atomic_write_text, write_sidecar
from spineflow.core.midsagittal import load_canonical
from spineflow.segment.labelling import write_dseg
from spineflow.segment.methods import SegmentationJob, method
from spineflow.segment.settings import SegmentSettings


def segment_session(image_path, dseg_path, dseg_tsv, sidecar_path, method_name="builtin",
                    external_path=None, label_scheme="spineps", raw_sidecar=None,
                    tuning=None):  # fmt: skip
    """The session's label map in spineflow's values, its lookup table and its sidecar;
    ``tuning``: the config's ``segmentation.tuning``."""
    volume = load_canonical(image_path)
    settings = SegmentSettings.from_config({"tuning": tuning})
    job = SegmentationJob(Path(image_path), volume, raw_sidecar and Path(raw_sidecar),
                          external_path and Path(external_path), label_scheme,
                          settings)  # fmt: skip
    labels, facts = method(method_name)(job)
    write_dseg(labels, volume, image_path, dseg_path)
    table = pd.DataFrame(lookup_table(), columns=["index", "name"])
    atomic_write_text(dseg_tsv, table.to_csv(sep="\t", index=False))
    write_sidecar(sidecar_path, facts)
