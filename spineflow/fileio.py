"""Atomic file writes (a reader, or a killed job, never sees half a file) and JSON-ready
values."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

NA = "n/a"  # BIDS's missing value, in every table spineflow writes
BIDS_VERSION = "1.10.0"  # the specification the datasets follow


def jsonable(value):
    """numpy scalars/arrays, paths and tuples to plain JSON types; NaN and inf to None (JSON
    has neither), also inside numpy scalars."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_if_changed(path: str | Path, text: str) -> None:
    """``atomic_write_text`` unless the file already holds ``text``: an unchanged file keeps
    its time stamp, so the jobs that read it are not planned again."""
    path = Path(path)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
