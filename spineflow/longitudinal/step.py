"""The longitudinal step: each disc's height change between sessions."""

from __future__ import annotations

import json
from pathlib import Path

from spineflow.core.tables import write_tsv
from spineflow.longitudinal import change as longitudinal


def longitudinal_heights(sidecar_ses1, sidecar_ses2, level_tfms: dict, out_tsv):
    """Per disc: the sessions' own heights, their change and its check through the
    per-vertebra transforms (``longitudinal.participant_heights``)."""
    records = [
        {d["level"]: d for d in json.loads(Path(p).read_text())["Discs"]}
        for p in (sidecar_ses1, sidecar_ses2)
    ]
    transforms = {name: longitudinal.read_transform(path) for name, path in level_tfms.items()}
    write_tsv(longitudinal.participant_heights(*records, transforms), out_tsv)
