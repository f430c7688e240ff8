"""Intervertebral distance: between the midpoints of the endplates either side of a vertebra
(docs/DESIGN.md)."""

from __future__ import annotations

import numpy as np

from spineflow.core.plane import DiscResult, Plane
from spineflow.measure.endplate import UNFITTED, cranial_key, neighbour_discs


def endplate_midpoint(disc: DiscResult, side: str):
    """Point on one endplate surface at the middle of that endplate's AP extent (None if the
    vertebra's walls were not found). side: "upper" for the vertebra above the disc (its caudal
    endplate), "lower" for the one below."""
    coef, u_mid = (
        (disc.upper_coef, disc.upper_mid_u)
        if side == "upper"
        else (disc.lower_coef, disc.lower_mid_u)
    )
    if coef is None or not np.isfinite(u_mid):
        return None
    return disc.frame.point(u_mid, np.polyval(coef, u_mid))


def intervertebral_distance(plane: Plane, discs: dict, name: str) -> dict:
    above, below = neighbour_discs(name)
    row = {"vertebra": name, "intervertebral_distance_mm": np.nan, "status": "ok", "note": ""}
    over = discs.get(cranial_key(above), discs[above])  # the cranial endplate's carrier
    # the endplates' own discs tell whether they lie in view (the body's label may touch the
    # image edge elsewhere: a sacrum running out of a small field of view)
    if "not_in_fov" in (over.status, discs[below].status):
        row["status"], row["note"] = "not_in_fov", "an endplate is outside the field of view"
        return row
    carriers = {above: (over, "lower"), below: (discs[below], "upper")}
    failed = [f"{d} {result.note}" for d, (result, surface) in carriers.items()
              if getattr(result, f"{surface}_coef") is None]  # fmt: skip
    failed += [f"{d}: the endplate's {UNFITTED}" for d, (result, surface) in carriers.items()
               if surface in result.unfitted]  # fmt: skip
    if failed:
        row["status"], row["note"] = "failed", "endplate not measured: " + "; ".join(failed)
        return row
    cranial = endplate_midpoint(over, "lower")
    caudal = endplate_midpoint(discs[below], "upper")
    if cranial is None or caudal is None:
        row["status"], row["note"] = "failed", "endplate midpoint not found"
        return row
    row["intervertebral_distance_mm"] = float(np.linalg.norm(cranial - caudal))
    return row
