"""Segmentation methods by name (config ``segmentation.method``).

A method labels one session (``SegmentationJob``) in spineflow's values (``core.anatomy``) and
returns the label map with the facts for its sidecar (``Method`` and ``Sources`` included).
Everything after it reads only the label map, so a new method is a function here (or in its own
module) listed in ``METHODS`` and named in config/schema.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spineflow.core.io import read_json
from spineflow.core.midsagittal import Volume, canal_polarity
from spineflow.segment.labelling import from_external, segment_volume
from spineflow.segment.settings import DEFAULTS, SegmentSettings


@dataclass(frozen=True)
class SegmentationJob:
    image: Path  # the bias-corrected image
    volume: Volume  # ... loaded in canonical orientation
    raw_sidecar: Path | None  # the raw image's sidecar (the sequence tells the canal's polarity)
    external: Path | None  # another tool's label map of this session, if the method reads one
    label_scheme: str  # how that map's values translate (``core.anatomy.SCHEMES``)
    settings: SegmentSettings = DEFAULTS  # config ``segmentation.tuning``


def builtin(job: SegmentationJob) -> tuple[np.ndarray, dict]:
    """spineflow's own: marrow along the canal, checked by the learned network (docs/methods)."""
    polarity = canal_polarity(read_json(job.raw_sidecar))
    labels, facts = segment_volume(job.volume, canal_polarity=polarity, settings=job.settings)
    return labels, {**facts, "Method": "spineflow builtin", "Sources": [str(job.image)]}


def external(job: SegmentationJob) -> tuple[np.ndarray, dict]:
    """Another segmenter's label map of the session, translated (``labelling.from_external``)."""
    labels, facts = from_external(job.volume, job.external, job.label_scheme,
                                  settings=job.settings)  # fmt: skip
    return labels, {**facts, "Method": "external", "Sources": [str(job.image), str(job.external)]}


METHODS: dict[str, Callable[[SegmentationJob], tuple[np.ndarray, dict]]] = {
    "builtin": builtin,
    "external": external,
}


def method(name: str) -> Callable[[SegmentationJob], tuple[np.ndarray, dict]]:
    if name not in METHODS:
        raise ValueError(f"segmentation.method {name!r}: known methods are {sorted(METHODS)}")
    return METHODS[name]
