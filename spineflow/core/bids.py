"""The one function that builds every BIDS path in spineflow (raw, derivatives, logs).

Entities are written in the order of the BIDS specification's entity table, so the same
entities always give the same name, whoever asks.
"""

from __future__ import annotations

import os
from pathlib import Path

from spineflow.core.ids import bare

# BIDS entity order (specification, appendix "Entity table"), plus derivative entities.
ENTITY_ORDER = (
    "sub",
    "ses",
    "task",
    "acq",
    "ce",
    "rec",
    "dir",
    "run",
    "mod",
    "echo",
    "from",
    "to",
    "mode",
    "space",
    "res",
    "den",
    "label",
    "desc",
)

DERIVATIVES_NAME = "spineflow"


def bids(
    root: str | Path | None = None,
    *,
    datatype: str | None = None,
    suffix: str | None = None,
    extension: str = "",
    subject_dir: bool = True,
    **entities: str | int | None,
) -> str:
    """Build a BIDS path: ``root/sub-X/[ses-Y/][datatype/]sub-X_ses-Y_..._suffix.ext``.

    ``entities`` use BIDS keys (``sub``, ``ses``, ``acq``, ``desc``, ``from_`` for ``from`` ...);
    values may be Snakemake wildcards such as ``"{subject}"``. ``subject_dir=False`` drops the
    sub-/ses- folders (used for group-level files and logs).
    """
    given = {key.rstrip("_"): value for key, value in entities.items() if value is not None}
    unknown = set(given) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}; known: {ENTITY_ORDER}")
    labels = {key: bare(given[key], key) for key in ENTITY_ORDER if key in given}
    parts = [f"{key}-{value}" for key, value in labels.items()]
    if suffix:
        parts.append(suffix)
    name = "_".join(parts) + extension
    folders: list[str] = []
    if subject_dir and "sub" in labels:
        folders.append(f"sub-{labels['sub']}")
        if "ses" in labels:
            folders.append(f"ses-{labels['ses']}")
    if datatype:
        folders.append(datatype)
    path = Path(*folders, name) if folders else Path(name)
    return str(Path(root) / path) if root is not None else str(path)


def raw_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "bids"


def derivatives_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "derivatives" / DERIVATIVES_NAME


def group_dir(output_dir: str | Path) -> Path:
    return derivatives_root(output_dir) / "group"


RAW_DATASET_LINK = "raw"  # the raw dataset's name in BIDS URIs (DatasetLinks of the derivatives)


def raw_dataset_link(output_dir: str | Path) -> dict[str, str]:
    """The derivatives' DatasetLinks: where ``bids:raw:`` points, relative to them."""
    deriv = derivatives_root(output_dir)
    return {RAW_DATASET_LINK: Path(os.path.relpath(raw_root(output_dir), deriv)).as_posix()}


def bids_uris(paths, sidecar_path: str | Path) -> list[str]:
    """``paths`` as a derivatives sidecar at ``sidecar_path`` names its sources: ``bids::``
    in the derivatives, ``bids:raw:`` in the raw dataset, the file name alone elsewhere. Never
    an absolute path: it names users and projects on shared clusters, and differs between
    two identical runs in two folders."""
    deriv = next(
        (parent for parent in Path(os.path.abspath(sidecar_path)).parents
         if parent.name == DERIVATIVES_NAME and parent.parent.name == "derivatives"),
        None,
    )  # fmt: skip
    datasets = [("", deriv), (RAW_DATASET_LINK, raw_root(deriv.parent.parent))] if deriv else []
    uris = []
    for path in map(Path, map(os.path.abspath, paths)):
        inside = [(name, root) for name, root in datasets if path.is_relative_to(root)]
        uris.append(
            f"bids:{inside[0][0]}:{path.relative_to(inside[0][1]).as_posix()}"
            if inside
            else path.name
        )
    return uris
