"""Disc-height change between timepoints, measured through the per-vertebra registration.

Each session's own measurement (``measure``) places both endplates of a disc; measured twice,
the two heights differ by the change plus two independent edge errors. The vertebrae are rigid,
so the change is better seen as the motion of one vertebra relative to the other: each vertebra
is registered rigidly between the sessions, masked by itself (``register.register_levels``), and
the first session's endplate surfaces are carried to the second session by their own
vertebra's transform. The height between the carried surfaces, over the same central 80 % of
the disc, minus the height between the original ones is the change; the same is done from the
second session back to the first, and the two estimates are averaged (inverse consistency).
Both heights then share one edge placement, so its error cancels in the change, and pose
differences between the sessions cannot masquerade as change.

The heights reported per session keep the mean of the two sessions' own measurements and split
the change symmetrically about it (neither session is the reference, as in an unbiased
halfway space).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .measure import CENTRAL_SHARE, Frame
from .register import lps_to_ras, ras_to_lps

# points along each endplate carried between sessions (frame u, every 0.5 mm)
CURVE_STEP_MM = 0.5
# a registration is trusted for the change only where its forward and backward estimates agree
# and it stays near the sessions' own heights (their difference errs by ~0.3 mm SD): beyond
# these a vertebra's transform is wrong, and the change is the difference of the own heights
MAX_FORWARD_BACKWARD_MM = 0.3
MAX_FROM_OWN_CHANGE_MM = 1.0


def read_transform(path) -> sitk.Transform:
    return sitk.ReadTransform(str(path))


def _map(transform: sitk.Transform, points_ras: np.ndarray) -> np.ndarray:
    points = ras_to_lps(points_ras)
    return lps_to_ras(np.array([transform.TransformPoint(tuple(map(float, p))) for p in points]))


def _frame(record: dict) -> Frame:
    """The disc's frame in scanner RAS mm (``measure.geometry_record``)."""
    return Frame(*(np.asarray(record[k], dtype=float) for k in ("origin_ras", "ap_ras", "up_ras")))


def _window(record: dict) -> np.ndarray:
    """The central share of the disc in the record's frame (as ``measure.DiscResult``)."""
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


def checked_change(change: dict, own_change_mm: float) -> dict:
    """The registration's change where it passes the checks above, else the difference of the
    sessions' own heights; ``change_method`` and ``change_note`` say which and why."""
    disagreement = abs(change["change_forward_mm"] - change["change_backward_mm"])
    from_own = abs(change["change_mm"] - own_change_mm)
    if disagreement <= MAX_FORWARD_BACKWARD_MM and from_own <= MAX_FROM_OWN_CHANGE_MM:
        return {**change, "change_method": "registration", "change_note": ""}
    why = (
        f"forward and backward differ by {disagreement:.2f} mm"
        if disagreement > MAX_FORWARD_BACKWARD_MM
        else f"{from_own:.2f} mm from the own heights' change"
    )
    return {**change, "change_mm": own_change_mm, "change_method": "own heights",
            "change_note": f"registration change not used: {why}"}  # fmt: skip


def participant_heights(records1: dict, records2: dict, transforms: dict) -> pd.DataFrame:
    """Per disc level measured at both sessions: the sessions' own heights, the change through
    the registration (``checked_change``) and the longitudinal heights (mean of the own heights
    -/+ half the change). ``records*``: level -> geometry record; ``transforms``: vertebra ->
    transform."""
    rows = []
    for level, record1 in records1.items():
        record2 = records2.get(level, {})
        if record1.get("status") != "ok" or record2.get("status") != "ok":
            continue
        upper, lower = level.split("-")
        if upper not in transforms or lower not in transforms:
            continue
        own_change = record2["height_mm"] - record1["height_mm"]
        change = checked_change(
            height_change(record1, record2, transforms[upper], transforms[lower]), own_change
        )
        base = (record1["height_mm"] + record2["height_mm"]) / 2
        rows.append(
            {
                "level": level,
                "height_cross_ses1_mm": record1["height_mm"],
                "height_cross_ses2_mm": record2["height_mm"],
                **change,
                "height_ses1_mm": base - change["change_mm"] / 2,
                "height_ses2_mm": base + change["change_mm"] / 2,
            }
        )
    return pd.DataFrame(rows)
