"""Height change through per-vertebra transforms, on disc geometry whose change is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from spineflow.core.itk import ras_to_lps
from spineflow.longitudinal.change import height_change, own_height_mm, participant_heights

ORIGIN_RAS = np.array([3.0, 40.0, -20.0])
AP_RAS = np.array([0.0, math.cos(0.3), -math.sin(0.3)])  # a disc tilted 17 deg in the plane
UP_RAS = np.array([0.0, math.sin(0.3), math.cos(0.3)])
HEIGHT_MM = 10.0


def _record(upper_offset_mm: float = 0.0, pose: sitk.Transform | None = None) -> dict:
    """A flat-ish disc: concave endplates 10 mm apart, in a frame placed by an optional pose
    (ses-1 RAS -> the session's RAS) that moves the whole spine."""
    origin, ap, up = ORIGIN_RAS, AP_RAS, UP_RAS
    if pose is not None:

        def move(point):
            return np.array(pose.TransformPoint(tuple(ras_to_lps(point)))) * [-1, -1, 1]

        origin, ap, up = (
            move(origin),
            move(origin + ap) - move(origin),
            move(origin + up) - move(origin),
        )
    return {
        "status": "ok",
        "origin_ras": origin.tolist(), "ap_ras": ap.tolist(), "up_ras": up.tolist(),
        "upper_coef": [-0.004, 0.0, HEIGHT_MM / 2 + upper_offset_mm],
        "lower_coef": [0.004, 0.0, -HEIGHT_MM / 2],
        "u_post": -18.0, "u_ant": 18.0, "upper_mid_u": 0.0, "lower_mid_u": 0.0,
        "height_mm": float("nan"),
    }  # fmt: skip


def _shift_along_up(mm: float) -> sitk.TranslationTransform:
    """ses-1 -> ses-2 LPS motion: mm along the disc's cranial axis."""
    return sitk.TranslationTransform(3, tuple(ras_to_lps(UP_RAS * mm)))


def test_no_motion_is_no_change():
    record = _record()
    record["height_mm"] = own_height_mm(record)
    identity = sitk.TranslationTransform(3)
    change = height_change(record, record, identity, identity)
    assert change["change_mm"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("loss_mm", [0.3, -0.2, 0.05])
def test_upper_vertebra_sinking_is_a_height_loss(loss_mm):
    ses1 = _record()
    ses2 = _record(upper_offset_mm=-loss_mm)
    change = height_change(ses1, ses2, _shift_along_up(-loss_mm), sitk.TranslationTransform(3))
    assert change["change_forward_mm"] == pytest.approx(-loss_mm, abs=1e-6)
    assert change["change_backward_mm"] == pytest.approx(-loss_mm, abs=1e-6)


def test_a_new_pose_of_the_whole_spine_is_no_change():
    """Both vertebrae move alike (the patient lies differently): the change stays zero."""
    pose = sitk.Euler3DTransform()
    pose.SetCenter(tuple(ras_to_lps(ORIGIN_RAS + [0, 0, 60])))
    pose.SetRotation(math.radians(4), math.radians(-2), math.radians(3))
    pose.SetTranslation((5.0, -7.0, 12.0))
    ses1 = _record()
    ses2 = _record(pose=pose.GetInverse())
    change = height_change(ses1, ses2, pose, pose)
    assert change["change_mm"] == pytest.approx(0.0, abs=1e-6)


def test_flexion_of_the_upper_vertebra_changes_the_mean_height_by_the_geometry():
    """Upper vertebra tilts 2 deg about the left-right axis through the disc's anterior end:
    the posterior part opens, the mean height over the central 80 % rises by tan(2) * the
    distance of the window's centre from that axis (18 mm)."""
    ses1 = _record()
    tilt = sitk.Euler3DTransform()
    tilt.SetCenter(tuple(ras_to_lps(ORIGIN_RAS + 18.0 * AP_RAS)))
    tilt.SetRotation(math.radians(2.0), 0.0, 0.0)
    expected = 18.0 * math.tan(math.radians(2.0))
    identity = sitk.TranslationTransform(3)
    forward = height_change(ses1, ses1, tilt, identity)["change_forward_mm"]
    assert abs(forward) == pytest.approx(expected, rel=0.02)


def test_participant_table_reports_the_own_heights_change_and_the_registrations_beside_it():
    ses1, ses2 = _record(), _record(upper_offset_mm=-0.3)
    ses1["height_mm"], ses2["height_mm"] = 10.1, 9.85  # the sessions' own heights
    transforms = {"L4": _shift_along_up(-0.3), "L5": sitk.TranslationTransform(3)}
    table = participant_heights({"L4-L5": ses1}, {"L4-L5": ses2}, transforms).iloc[0]
    assert table["change_mm"] == pytest.approx(-0.25)
    assert (table["height_ses1_mm"], table["height_ses2_mm"]) == pytest.approx((10.1, 9.85))
    assert table["change_registration_mm"] == pytest.approx(-0.3, abs=1e-6)
    assert table["change_note"] == ""


def test_a_registration_that_disagrees_with_the_own_heights_is_noted():
    """A vertebra's transform locked onto its neighbour (25 mm off): the change stays the own
    heights', and the note points at the disagreement."""
    ses1, ses2 = _record(), _record(upper_offset_mm=-0.3)
    ses1["height_mm"], ses2["height_mm"] = 10.0, 9.75
    transforms = {"L4": _shift_along_up(-25.0), "L5": sitk.TranslationTransform(3)}
    table = participant_heights({"L4-L5": ses1}, {"L4-L5": ses2}, transforms).iloc[0]
    assert table["change_mm"] == pytest.approx(-0.25)
    assert table["change_registration_mm"] == pytest.approx(-25.0, abs=1e-6)
    assert "per-vertebra registration gives a change -24.75 mm" in table["change_note"]
