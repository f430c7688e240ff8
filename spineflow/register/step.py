"""The register step: ses-2 onto ses-1, whole field then per vertebra."""

from __future__ import annotations

from pathlib import Path

from spineflow.core.bids import bids_uris
from spineflow.core.io import write_sidecar
from spineflow.register.methods import RegistrationJob, method


def register_sessions(fixed, moving, fixed_dseg, moving_dseg, out_tfm, level_tfms, out_image,
                      sidecar_path, params, threads):  # fmt: skip
    """ses-2 registered onto ses-1 by the configured method (``register.methods``; by default
    the whole field, then one rigid refinement per vertebra), and the sidecar."""
    job = RegistrationJob(*map(Path, (fixed, moving, fixed_dseg, moving_dseg, out_tfm)),
                          {name: Path(p) for name, p in level_tfms.items()}, Path(out_image),
                          threads)  # fmt: skip
    facts = method(params)(job, params)
    reference = bids_uris([fixed], sidecar_path)[0]  # space-ses1: timepoint 1's image
    write_sidecar(sidecar_path, {
        "Sources": [str(fixed), str(moving)], "SpatialReference": reference,
        "SkullStripped": False, **facts,
    })  # fmt: skip
