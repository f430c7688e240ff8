"""Scoring against manual masks: heights from masks of known geometry, the structure a label
lies on from masks of discs only or of bodies only."""

import nibabel as nib
import numpy as np
import pytest

from spineflow.core.anatomy import VERTEBRA_LABELS, disc_label
from spineflow_dev.evaluate_fov import cut_from_below
from spineflow_dev.evaluate_masks import (
    anchors,
    body_gap_height_mm,
    disc_mask_height_mm,
    ends_beyond_mask_mm,
    lies_on,
    mask_heights,
    surfaces_beyond_mask_mm,
)

SHAPE = (20, 120, 200)  # canonical [x, y, z], 1 mm voxels


def _tilted_box(data, value, centre_yz, half_ap, half_height, angle_deg, x=range(6, 14)):
    """Fill a rectangle (AP x height, mm) rotated by angle in the sagittal plane."""
    yy, zz = np.meshgrid(np.arange(SHAPE[1]), np.arange(SHAPE[2]), indexing="ij")
    a = np.radians(angle_deg)
    u = (yy - centre_yz[0]) * np.cos(a) + (zz - centre_yz[1]) * np.sin(a)
    t = -(yy - centre_yz[0]) * np.sin(a) + (zz - centre_yz[1]) * np.cos(a)
    inside = (np.abs(u) <= half_ap) & (np.abs(t) <= half_height)
    for k in x:
        data[k][inside] = value


@pytest.mark.parametrize("angle", [0.0, 12.0])
def test_a_disc_masks_height_is_its_thickness(angle):
    data = np.zeros(SHAPE, np.int16)
    _tilted_box(data, disc_label("L4"), (60, 100), 18, 5.0, angle)
    # voxels whose centres lie within 5 mm of the mid-plane: 10 mm thick tilted, 11 mm between
    # the outer voxel edges when aligned with the grid
    height = disc_mask_height_mm(data, disc_label("L4"), np.array([1.0, 1.0]))
    assert 9.8 <= height <= 11.2


@pytest.mark.parametrize("angle", [0.0, 10.0])
def test_the_gap_between_two_body_masks_is_the_discs_height(angle):
    data = np.zeros(SHAPE, np.int16)
    a = np.radians(angle)
    up = np.array([-np.sin(a), np.cos(a)])  # the bodies' stacking axis in (y, z)
    centre = np.array([60.0, 100.0])
    for name, sign in (("L4", +1), ("L5", -1)):
        body_centre = centre + sign * up * (5.0 + 13.0)  # 10 mm gap, 26 mm tall bodies
        _tilted_box(data, VERTEBRA_LABELS[name], body_centre, 18, 13.0, angle)
    gap = body_gap_height_mm(data, VERTEBRA_LABELS["L4"], VERTEBRA_LABELS["L5"], np.ones(2))
    # voxels whose centres lie within 13 mm of a body's centre: 10 mm between them tilted,
    # 9 mm between the voxel edges aligned with the grid
    assert 8.8 <= gap <= 10.2


def test_labels_are_placed_on_structures_read_from_discs_only_masks():
    data = np.zeros(SHAPE, np.int16)
    for k, level in enumerate(("L2", "L3", "L4", "L5")):  # discs below L2 ... L5
        _tilted_box(data, disc_label(level), (60, 170 - 38 * k), 18, 4.0, 0.0)
    image = nib.Nifti1Image(data, np.eye(4))
    known = anchors(image)
    names = [a.name for a in known]
    assert names == ["L2-L3", "L3", "L3-L4", "L4", "L4-L5", "L5", "L5-S1"]
    centre_of = {a.name: a.centre for a in known}
    assert lies_on(centre_of["L4"] + [0, 3, 2], known) == "L4"  # a body label near its place
    assert lies_on(centre_of["L4-L5"] + [0, 0, 38], known) == "L3-L4"  # one level off
    assert lies_on(centre_of["L4"] + [0, 25, 0], known) == "none"  # in front of L4, off it
    assert lies_on(centre_of["L2-L3"] + [0, 0, 60], known) == "?"  # beyond the masks
    assert lies_on(centre_of["L5-S1"] + [0, 0, -2], known) == "L5-S1"  # the end mask's own
    assert lies_on(centre_of["L5-S1"] + [0, -4, -5], known) == "?"  # S1: no mask to judge by


def test_mask_heights_say_which_kind_of_mask_they_come_from():
    data = np.zeros(SHAPE, np.int16)
    _tilted_box(data, disc_label("L3"), (60, 150), 18, 4.0, 0.0)
    _tilted_box(data, VERTEBRA_LABELS["L4"], (60, 110), 18, 13.0, 0.0)
    _tilted_box(data, VERTEBRA_LABELS["L5"], (60, 75), 18, 13.0, 0.0)
    heights = mask_heights(nib.Nifti1Image(data, np.eye(4)))
    assert heights["L3-L4"][1] == "disc" and heights["L4-L5"][1] == "bodies"
    assert heights["L4-L5"][0] == pytest.approx(8.0, abs=0.3)
    assert "L5-S1" not in heights


def test_endplate_surfaces_are_placed_against_the_disc_masks_edges():
    """A disc mask 9 mm thick (voxel centres within 4 mm of its mid-plane, edges 4.5 mm out);
    the run's upper surface 5.5 mm above the mid-plane, its lower 5.0 mm below: 1.0 and
    0.5 mm beyond the mask, into the bone."""
    data = np.zeros(SHAPE, np.int16)
    _tilted_box(data, disc_label("L4"), (60, 100), 18, 4.0, 0.0)
    geometry = {
        "origin_ras": [10.0, 60.0, 100.0], "ap_ras": [0.0, 1.0, 0.0], "up_ras": [0.0, 0.0, 1.0],
        "upper_coef": [0.0, 0.0, 5.5], "lower_coef": [0.0, 0.0, -5.0],
        "u_post": -18.0, "u_ant": 18.0,
    }  # fmt: skip
    upper, lower = surfaces_beyond_mask_mm(geometry, nib.Nifti1Image(data, np.eye(4)),
                                           disc_label("L4"))  # fmt: skip
    assert upper == pytest.approx(1.0, abs=0.1) and lower == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize("angle", [0.0, 12.0])
def test_a_discs_ap_ends_are_placed_against_its_masks_ends(angle):
    """A disc mask 36 mm long (voxel centres within 18 mm of its middle: its ends 18.5 mm out,
    aligned with the grid); the run's posterior end 20 mm behind the middle, its anterior one
    17 mm in front: 1.5 mm beyond the mask and 1.5 mm short of it (up to 0.7 mm either way
    tilted, where the mask's end is a staircase of voxels)."""
    data = np.zeros(SHAPE, np.int16)
    _tilted_box(data, disc_label("L4"), (60, 100), 18, 4.0, angle)
    a = np.radians(angle)
    geometry = {
        "origin_ras": [10.0, 60.0, 100.0], "ap_ras": [0.0, np.cos(a), np.sin(a)],
        "up_ras": [0.0, -np.sin(a), np.cos(a)],
        "upper_coef": [0.0, 0.0, 5.5], "lower_coef": [0.0, 0.0, -5.0],
        "u_post": -20.0, "u_ant": 17.0,
    }  # fmt: skip
    posterior, anterior = ends_beyond_mask_mm(geometry, nib.Nifti1Image(data, np.eye(4)),
                                              disc_label("L4"))  # fmt: skip
    tolerance = 0.1 if angle == 0 else 0.7
    assert posterior == pytest.approx(1.5, abs=tolerance)
    assert anterior == pytest.approx(-1.5, abs=tolerance)


def test_a_cut_from_below_keeps_every_voxel_where_it_was():
    """An image stored head to foot (z falls along its third axis), 2 mm slices from z 30 down
    to -8: cut by 12 mm from below, its voxels from z 4 up stay at their scanner coordinates."""
    data = np.arange(4 * 5 * 20, dtype=np.float32).reshape(4, 5, 20)
    affine = np.diag([1.0, 1.0, -2.0, 1.0])
    affine[:3, 3] = (0.0, 0.0, 30.0)
    volume = cut_from_below(nib.Nifti1Image(data, affine), 12.0)
    z = volume.affine[2, 3] + volume.affine[2, 2] * np.arange(volume.data.shape[2])
    assert volume.data.shape[2] == 14 and np.isclose(z.min(), 4.0) and np.isclose(z.max(), 30.0)
    top = int(np.argmax(z))
    assert np.array_equal(volume.data[:, :, top], data[:, :, 0])
