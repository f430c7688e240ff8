"""The preprocess step: N4 bias correction of one session's image."""

from __future__ import annotations

from spineflow.core.io import write_sidecar
from spineflow.preprocess.n4 import n4_bias_correct


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
