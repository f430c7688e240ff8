"""Files every stage writes and reads: atomic writes (a reader, or a killed job, never sees half
a file), JSON-ready values, BIDS sidecars, optional JSON inputs."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from spineflow.core.bids import bids_uris

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
        # mkstemp's file is private (0600): give it the mode any new file gets, so the
        # group a core facility shares a cohort with can read the tables
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set back at once (steps are single-threaded)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_if_changed(path: str | Path, text: str) -> None:
    """``atomic_write_text`` unless the file already holds ``text``: an unchanged file keeps
    its time stamp, so the jobs that read it are not planned again."""
    path = Path(path)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def read_json(path: str | Path | None) -> dict | None:
    """A JSON file's content; None when no path is given or nothing is there (an optional
    sidecar)."""
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def write_sidecar(path: str | Path, facts: dict) -> None:
    """Write a BIDS-derivatives-style JSON sidecar (sorted keys, 2-space indent, UTF-8), its
    ``Sources`` as BIDS URIs (``bids.bids_uris``)."""
    if "Sources" in facts:
        facts = {**facts, "Sources": bids_uris(facts["Sources"], path)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(facts), indent=2, sort_keys=True, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")
