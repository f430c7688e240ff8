"""Disc-height change between timepoints, and its check through the per-vertebra registration.

The change is the difference of the sessions' own heights (``measure``): each is measured
perpendicular to its own endplates in its own mid-sagittal plane, so the patient's pose does
not enter it. The per-vertebra registration (``per_vertebra.register_levels``) gives a second,
independent estimate: the first session's endplate surfaces are carried to the second session
by their own vertebra's transform, and the height between the carried surfaces, over the same
central 80 % of the disc, minus the height between the original ones is the change; the same is
done from the second session back to the first and the two are averaged.

Why not the other way round: on the 28-participant demo (``make demo``) the own heights' change
erred by 0.06 mm SD against the truth, the registration's by 0.17 mm: a vertebra's rigid
transform, pinned by a few thick slices, errs by more along the disc's axis than a
partial-volume edge fit does. So the registration checks the change: where the two disagree
by more than MAX_DISAGREEMENT_MM a transform or one session's segmentation is wrong, and the
disc's heights are ``qc_failed`` in both sessions (``qc.gate_registration``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import SimpleITK as sitk

from spineflow.core.itk import lps_to_ras, ras_to_lps
from spineflow.core.plane import CENTRAL_SHARE, Frame

# points along each endplate carried between sessions (frame u, every 0.5 mm)
CURVE_STEP_MM = 0.5
# the registration's change errs by ~0.17 mm SD, the own heights' by ~0.06: over five SDs
# apart, one of them is wrong
MAX_DISAGREEMENT_MM = 1.0


def read_transform(path) -> sitk.Transform:
    return sitk.ReadTransform(str(path))


def _map(transform: sitk.Transform, points_ras: np.ndarray) -> np.ndarray:
    points = ras_to_lps(points_ras)
    return lps_to_ras(np.array([transform.TransformPoint(tuple(map(float, p))) for p in points]))


def _frame(record: dict) -> Frame:
    """The disc's frame in scanner RAS mm (``measure.session.geometry_record``)."""
    return Frame(*(np.asarray(record[k], dtype=float) for k in ("origin_ras", "ap_ras", "up_ras")))


def _window(record: dict) -> np.ndarray:
    """The central share of the disc in the record's frame (as ``plane.DiscResult``)."""
    centre = (record["upper_mid_u"] + record["lower_mid_u"]) / 2
    half = CENTRAL_SHARE * (record["u_ant"] - record["u_post"]) / 2
    return np.linspace(centre - half, centre + half, 201)


def endplate_points(record: dict, side: str) -> np.ndarray:
    """Scanner RAS points along one endplate (side "upper" or "lower") of a measured disc."""
    u = np.arange(record["u_post"], record["u_ant"] + 1e-9, CURVE_STEP_MM)
    return _frame(record).point(u, np.polyval(record[f"{side}_coef"], u))


def carried_height_mm(record: dict, upper_to_lower: sitk.Transform) -> float:
    """Height of the disc in the record's frame and window after moving the upper vertebra's
    endplate by ``upper_to_lower`` (its motion relative to the lower vertebra)."""
    u, t = _frame(record).coordinates(_map(upper_to_lower, endplate_points(record, "upper")))
    upper = np.polyfit(u, t, len(record["upper_coef"]) - 1)
    window = _window(record)
    return float(np.mean(np.polyval(upper, window) - np.polyval(record["lower_coef"], window)))


def own_height_mm(record: dict) -> float:
    window = _window(record)
    return float(
        np.mean(np.polyval(record["upper_coef"], window) - np.polyval(record["lower_coef"], window))
    )


def _relative(moved: sitk.Transform, reference: sitk.Transform) -> sitk.Transform:
    """reference^-1 after moved: a point's motion with ``moved``, seen from ``reference``."""
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(reference.GetInverse())
    composite.AddTransform(moved)
    return composite


def height_change(record1: dict, record2: dict, upper: sitk.Transform, lower: sitk.Transform):
    """Change (ses-2 minus ses-1) of one disc's height from its two vertebrae's transforms
    (ses-1 -> ses-2 points, ITK convention): the forward and backward estimates and their mean.
    """
    # ITK composites apply the last added transform first: _relative(a, b)(p) = b^-1(a(p))
    forward = carried_height_mm(record1, _relative(upper, lower)) - own_height_mm(record1)
    backward = own_height_mm(record2) - carried_height_mm(
        record2, _relative(upper.GetInverse(), lower.GetInverse())
    )
    return {"change_forward_mm": forward, "change_backward_mm": backward,
            "change_mm": (forward + backward) / 2}  # fmt: skip


def registration_check(registration_change_mm: float, own_change_mm: float) -> str:
    """A note when the registration's change disagrees with the own heights' (empty if not)."""
    disagreement = registration_change_mm - own_change_mm
    if abs(disagreement) <= MAX_DISAGREEMENT_MM:
        return ""
    return (f"the per-vertebra registration gives a change {disagreement:+.2f} mm from that of "
            "the disc's own heights: one session's endplates (or a vertebra's transform) "
            "are wrong")  # fmt: skip


def participant_heights(records1: dict, records2: dict, transforms: dict) -> pd.DataFrame:
    """Per disc level measured at both sessions: the sessions' own heights, their difference
    (``change_mm``), the registration's estimate beside it (``change_registration_mm``, with
    its forward and backward halves) and a note where the two disagree
    (``registration_check``). ``records*``: level -> geometry record; ``transforms``:
    vertebra -> transform."""
    rows = []
    for level, record1 in records1.items():
        record2 = records2.get(level, {})
        if record1.get("status") != "ok" or record2.get("status") != "ok":
            continue
        upper, lower = level.split("-")
        own_change = record2["height_mm"] - record1["height_mm"]
        row = {"level": level, "height_ses1_mm": record1["height_mm"],
               "height_ses2_mm": record2["height_mm"], "change_mm": own_change}  # fmt: skip
        if upper in transforms and lower in transforms:
            carried = height_change(record1, record2, transforms[upper], transforms[lower])
            registration = carried.pop("change_mm")
            row.update(change_registration_mm=registration, **carried,
                       change_note=registration_check(registration, own_change))  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)
