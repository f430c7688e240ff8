"""Rigid registration recovers a known rigid motion of a synthetic sagittal-like volume."""

from __future__ import annotations

import math
import time

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from spineflow.core.itk import apply_rigid_to_points, lps_to_ras, ras_to_lps
from spineflow.register.masks import eroded_in_plane, mapped_box
from spineflow.register.out_of_plane import search_out_of_plane
from spineflow.register.per_vertebra import (
    _chain_start,
    _lands_inside,
    _matched_out_of_plane,
    register_vertebra,
)
from spineflow.register.settings import DEFAULTS
from spineflow.register.whole_field import register_rigid

SIZE_VOX = (96, 96, 15)  # i: anterior-posterior, j: inferior-superior, k: left-right (slices)
SPACING_MM = (1.1, 1.1, 3.3)
# Columns are the LPS directions of index axes i, j, k: a sagittal acquisition.
DIRECTION = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
ORIGIN_MM = (-25.0, 50.0, 55.0)
TRUE_ROTATION_DEG = 3.0  # about the left-right axis (LPS x): flexion, the usual motion
TRUE_TRANSLATION_MM = (2.0, 3.0, -math.sqrt(25.0 - 4.0 - 9.0))  # |t| = 5 mm
TRE_LIMIT_MM = 0.5


def _grid(size_vox, spacing_mm) -> sitk.Image:
    image = sitk.Image([int(n) for n in size_vox], sitk.sitkFloat32)
    image.SetSpacing(spacing_mm)
    image.SetDirection(DIRECTION)
    image.SetOrigin(ORIGIN_MM)
    return image


def _physical_points_lps(image: sitk.Image) -> np.ndarray:
    """LPS mm of every voxel centre, shaped (k, j, i, 3) like SimpleITK arrays."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in image.GetSize()[::-1]), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float)
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    return index @ matrix.T + np.array(image.GetOrigin())


def _soft_inside(r: np.ndarray, edge_mm: float = 1.5) -> np.ndarray:
    """Smooth indicator of r <= 1 (r: normalised ellipsoid radius), so resampling is benign."""
    return 1.0 / (1.0 + np.exp((r - 1.0) * 10.0 / edge_mm))


def _phantom_on(image: sitk.Image, centre_mm: np.ndarray, fat: float = 90.0) -> sitk.Image:
    """Body ellipsoid with asymmetric blobs of different intensities (no symmetry to alias),
    the largest as bright as ``fat`` (a tissue whose brightness the fat suppression sets)."""
    p = _physical_points_lps(image) - centre_mm

    def ellipsoid(offset, radii):
        return np.sqrt((((p - offset) / radii) ** 2).sum(-1))

    values = 60.0 * _soft_inside(ellipsoid((0, 0, 0), (20, 45, 48)))
    blobs = [  # (offset LPS mm, radii mm, intensity)
        ((0, 8, 10), (12, 14, 16), fat),
        ((-6, -15, -20), (8, 8, 10), -40.0),
        ((8, 20, -25), (7, 10, 8), 70.0),
        ((-10, 5, 30), (6, 12, 6), 120.0),
        ((5, -25, 5), (9, 6, 12), 40.0),
    ]
    for offset, radii, intensity in blobs:
        values += intensity * _soft_inside(ellipsoid(np.array(offset), np.array(radii)))
    out = sitk.GetImageFromArray(values.astype(np.float32))
    out.CopyInformation(image)
    return out


def _centre_mm(image: sitk.Image) -> np.ndarray:
    centre_index = [(n - 1) / 2 for n in image.GetSize()]
    return np.array(image.TransformContinuousIndexToPhysicalPoint(centre_index))


def _true_transform(centre_mm: np.ndarray) -> sitk.Euler3DTransform:
    """Fixed-space -> moving-space truth, in ITK's convention."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(centre_mm))
    transform.SetRotation(math.radians(TRUE_ROTATION_DEG), 0.0, 0.0)
    transform.SetTranslation(TRUE_TRANSLATION_MM)
    return transform


def _with_noise(image: sitk.Image, sigma: float, seed: int) -> sitk.Image:
    values = sitk.GetArrayFromImage(image)
    noisy = values + np.random.default_rng(seed).normal(0, sigma, values.shape)
    return _like(image, np.clip(noisy, 0, None))


def _like(image: sitk.Image, values: np.ndarray) -> sitk.Image:
    """``values`` as an image on ``image``'s grid, of its pixel type."""
    out = sitk.Cast(sitk.GetImageFromArray(values.astype(np.float64)), image.GetPixelID())
    out.CopyInformation(image)
    return out


def _correlation(a: sitk.Image, b: sitk.Image) -> float:
    values_a = sitk.GetArrayViewFromImage(a).ravel()
    values_b = sitk.GetArrayViewFromImage(b).ravel()
    return float(np.corrcoef(values_a, values_b)[0, 1])


def _target_points_mm(centre_mm: np.ndarray) -> np.ndarray:
    """A 3 x 3 x 3 grid of points inside the body (LPS mm)."""
    offsets = np.stack(
        np.meshgrid([-12, 0, 12], [-30, 0, 30], [-30, 0, 30], indexing="ij"), -1
    ).reshape(-1, 3)
    return centre_mm + offsets


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("reg")
    grid = _grid(SIZE_VOX, SPACING_MM)
    centre = _centre_mm(grid)
    # The phantom lives on a fine (1.1 mm isotropic) grid; both sessions are resampled from it,
    # so fixed and moving get the same interpolation treatment.
    fine = _phantom_on(_grid((96, 96, 45), (1.1, 1.1, 1.1)), centre)
    truth = _true_transform(centre)
    fixed = sitk.Resample(fine, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    # Resample evaluates fine(T(x)); with T = truth^-1, moving(truth(x)) == fixed(x).
    moving = sitk.Resample(fine, grid, truth.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    fixed, moving = _with_noise(fixed, 2.0, seed=1), _with_noise(moving, 2.0, seed=2)
    paths = {name: tmp / f"{name}.nii.gz" for name in ("fixed", "moving", "resampled")}
    sitk.WriteImage(fixed, str(paths["fixed"]))
    sitk.WriteImage(moving, str(paths["moving"]))
    tfm = tmp / "sub-01_from-ses2_to-ses1_mode-image_xfm.tfm"
    start_s = time.perf_counter()
    facts = register_rigid(paths["fixed"], paths["moving"], tfm, paths["resampled"], threads=1)
    elapsed_s = time.perf_counter() - start_s
    points = _target_points_mm(centre)
    expected = np.array([truth.TransformPoint(tuple(p)) for p in points])
    tre_mm = np.linalg.norm(apply_rigid_to_points(tfm, points) - expected, axis=1)
    print(
        f"\nregistration {elapsed_s:.1f} s; TRE mean {tre_mm.mean():.3f} max {tre_mm.max():.3f} mm"
    )
    print({k: v for k, v in facts.items() if k != "Levels"})
    return {"paths": paths, "tfm": tfm, "facts": facts, "tre_mm": tre_mm}


def test_recovers_known_rigid_motion(case):
    assert case["tre_mm"].max() < TRE_LIMIT_MM, case["tre_mm"]
    facts = case["facts"]
    assert facts["RotationDegrees"][0] == pytest.approx(TRUE_ROTATION_DEG, abs=0.3)
    assert len(facts["Levels"]) == 3
    # The thick slice axis is never shrunk: every level keeps all 15 slices.
    assert all(level["FixedSizeVoxels"][2] == SIZE_VOX[2] for level in facts["Levels"])


def test_transform_file_reads_back(case):
    transform = sitk.ReadTransform(str(case["tfm"]))
    assert len(transform.GetParameters()) == 6


def test_a_rerun_on_one_thread_writes_the_same_transform_to_the_last_digit(case, tmp_path):
    """The rule runs on one thread so that a rerun reproduces its transforms (with more, ITK
    adds the metric's per-thread sums in the order the threads finish)."""
    paths = case["paths"]
    again = tmp_path / "again.tfm"
    register_rigid(paths["fixed"], paths["moving"], again, tmp_path / "again.nii.gz", threads=1)
    assert again.read_bytes() == case["tfm"].read_bytes()


def test_resampled_matches_fixed_better(case):
    paths = case["paths"]
    fixed, moving, resampled = (sitk.ReadImage(str(paths[n])) for n in paths)
    assert _correlation(resampled, fixed) > _correlation(moving, fixed) + 0.05
    assert np.array_equal(nib.load(paths["resampled"]).affine, nib.load(paths["fixed"]).affine)
    assert nib.load(paths["resampled"]).get_data_dtype() == np.float32


def test_ras_lps_round_trip_matches_itk(case):
    """nibabel's RAS voxel centres, flipped to LPS, are SimpleITK's physical points."""
    image = nib.load(case["paths"]["fixed"])
    index = np.array([[0, 0, 0], [10, 20, 5], [95, 95, 14]], dtype=float)
    ras = nib.affines.apply_affine(image.affine, index)
    itk = sitk.ReadImage(str(case["paths"]["fixed"]))
    lps = np.array([itk.TransformContinuousIndexToPhysicalPoint(tuple(i)) for i in index])
    np.testing.assert_allclose(ras_to_lps(ras), lps, atol=1e-3)
    np.testing.assert_allclose(lps_to_ras(ras_to_lps(ras)), ras)


def _session_pair(
    motion: sitk.Transform, moving_fat: float = 90.0
) -> tuple[sitk.Image, sitk.Image, np.ndarray]:
    """Fixed and moving thick-slice images of the phantom, the moving one moved by ``motion``
    (fixed -> moving points) and its fat as bright as ``moving_fat``, with noise; and the
    phantom's centre (LPS mm)."""
    grid = _grid(SIZE_VOX, SPACING_MM)
    centre = _centre_mm(grid)
    fine_grid = _grid((96, 96, 45), (1.1, 1.1, 1.1))
    fixed = sitk.Resample(_phantom_on(fine_grid, centre), grid, sitk.Transform(),
                          sitk.sitkLinear, 0.0, sitk.sitkFloat32)  # fmt: skip
    moving = sitk.Resample(_phantom_on(fine_grid, centre, moving_fat), grid, motion.GetInverse(),
                           sitk.sitkLinear, 0.0, sitk.sitkFloat32)  # fmt: skip
    return _with_noise(fixed, 2.0, seed=3), _with_noise(moving, 2.0, seed=4), centre


def _motion(centre_mm, rotation_deg, translation_mm) -> sitk.Euler3DTransform:
    motion = sitk.Euler3DTransform()
    motion.SetCenter(tuple(centre_mm))
    motion.SetRotation(*(math.radians(a) for a in rotation_deg))
    motion.SetTranslation(translation_mm)
    return motion


def _tre_mm(found: sitk.Transform, truth: sitk.Transform, centre_mm) -> np.ndarray:
    points = _target_points_mm(centre_mm)
    return np.array(
        [np.linalg.norm(np.subtract(found.TransformPoint(tuple(p)), truth.TransformPoint(tuple(p))))
         for p in points]
    )  # fmt: skip


def test_vertebra_refinement_recovers_its_sagittal_motion():
    """Flexion and a shift in the sagittal plane, from a start 2.5 mm and 3 deg away."""
    grid_centre = _centre_mm(_grid(SIZE_VOX, SPACING_MM))
    truth = _motion(grid_centre, (3.0, 0.0, 0.0), (0.0, 2.0, -1.5))
    fixed, moving, centre = _session_pair(truth)
    body = sitk.Cast(fixed > 30.0, sitk.sitkUInt8)
    found, facts = register_vertebra(fixed, moving, body, _motion(centre, (0, 0, 0), (0, 0, 0)))
    assert _tre_mm(found, truth, centre).max() < 0.3, facts


def test_out_of_plane_search_finds_yaw_roll_and_left_right_shift():
    """Across 3.3 mm slices: a turn about the long axis and about the anterior-posterior axis,
    and a left-right shift, found by the exhaustive searches from no motion at all, on the
    intensities and on their edges. The body reaches the slab's outer slices, which a search
    over +-6 mm cannot read (they land off the moving image at its ends); the second round,
    within 2 mm of the first's shift, reads them (with the first round's reach throughout:
    yaw 6.6 deg, roll 2.3 deg, TRE max 0.41 mm)."""
    grid_centre = _centre_mm(_grid(SIZE_VOX, SPACING_MM))
    truth = _motion(grid_centre, (0.0, 2.0, 7.0), (2.3, 0.0, 0.0))
    fixed, moving, centre = _session_pair(truth)
    body = sitk.Cast(fixed > 30.0, sitk.sitkUInt8)
    start = _motion(centre, (0, 0, 0), (0, 0, 0))
    found, facts = search_out_of_plane(fixed, moving, body, start, centre)
    assert facts["YawDegrees"] == pytest.approx(7.0, abs=0.2)
    assert facts["RollDegrees"] == pytest.approx(2.0, abs=0.2)
    assert _tre_mm(found, truth, centre).max() < 0.2, facts
    # each cue alone finds the motion too, and the answer is their mean
    cues = facts["PerCue"].values()
    for name, truth_value in (("YawDegrees", 7.0), ("RollDegrees", 2.0),
                              ("LeftRightShiftMillimetres", 2.3)):  # fmt: skip
        assert [cue[name] for cue in cues] == pytest.approx([truth_value] * 2, abs=0.7), facts
        assert facts[name] == pytest.approx(np.mean([cue[name] for cue in cues]))
    # the sagittal motion is left alone: the point the turn is about stays where it was, but
    # for the shift
    np.testing.assert_allclose(
        np.subtract(found.TransformPoint(tuple(centre)), centre)[1:], 0.0, atol=1e-6
    )


def _times_field_across_slices(image: sitk.Image, centre_mm, per_mm: float) -> sitk.Image:
    """The image under a receive field that grows by ``per_mm`` per mm left-right (LPS x)."""
    x_mm = _physical_points_lps(image)[..., 0] - centre_mm[0]
    return _like(image, sitk.GetArrayFromImage(image) * (1 + per_mm * x_mm))


def _near_midline(mask: sitk.Image, centre_mm, half_width_mm: float) -> sitk.Image:
    x_mm = _physical_points_lps(mask)[..., 0] - centre_mm[0]
    return _like(mask, sitk.GetArrayFromImage(mask) * (abs(x_mm) < half_width_mm))


def test_left_right_shift_found_under_fields_that_differ_across_the_slices():
    """The sessions' bias fields differ by 13 % across a vertebra's slices: with the slices'
    marrow matched, the search finds the left-right shift; without, the field moves the
    intensities' peak (0.52 mm; their edges' hardly, and the mean of the two 0.27 mm). The
    phantom's marrow is not uniform (its blobs): matched where the start left it, 1.2 mm off,
    the slices' brightness took up part of the shift (0.73 mm off), hence the rounds."""
    grid_centre = _centre_mm(_grid(SIZE_VOX, SPACING_MM))
    truth = _motion(grid_centre, (0.0, 0.0, 0.0), (1.2, 0.0, 0.0))
    fixed, moving, centre = _session_pair(truth)
    moving = _times_field_across_slices(moving, centre, 0.005)
    # the vertebra's middle, not its lateral walls (as register_levels' LATERAL_REACH_MM)
    body = _near_midline(sitk.Cast(fixed > 30.0, sitk.sitkUInt8), centre, 13.0)
    marrow = eroded_in_plane(body, 3.0)
    start = _motion(centre, (0, 0, 0), (0, 0, 0))
    _, plain = search_out_of_plane(fixed, moving, body, start, centre)
    matched, facts = _matched_out_of_plane(
        fixed, moving, body, marrow, start, centre, settings=DEFAULTS
    )
    intensity_shift_mm = plain["PerCue"]["Intensity"]["LeftRightShiftMillimetres"]
    error_mm = _tre_mm(matched, truth, centre).max()
    assert error_mm < 0.3 < abs(intensity_shift_mm - 1.2), (error_mm, plain, facts)


def test_left_right_shift_and_turn_found_where_the_fat_suppression_differs():
    """The second visit's fat far darker against bone and muscle (90 -> 20): the intensities'
    cue still finds the left-right shift and no turn (as normalised correlation, it found a
    shift 0.5 mm short and a 1.3 deg yaw, 2.7 deg roll: the correlation rewards a darker
    tissue landing on a darker one)."""
    grid_centre = _centre_mm(_grid(SIZE_VOX, SPACING_MM))
    truth = _motion(grid_centre, (0.0, 0.0, 0.0), (1.2, 0.0, 0.0))
    fixed, moving, centre = _session_pair(truth, moving_fat=20.0)
    body = _near_midline(sitk.Cast(fixed > 30.0, sitk.sitkUInt8), centre, 13.0)
    start = _motion(centre, (0, 0, 0), (0, 0, 0))
    found, facts = search_out_of_plane(fixed, moving, body, start, centre)
    intensity = facts["PerCue"]["Intensity"]
    assert intensity["LeftRightShiftMillimetres"] == pytest.approx(1.2, abs=0.15), facts
    assert [intensity["YawDegrees"], intensity["RollDegrees"]] == pytest.approx([0, 0], abs=0.5)
    assert _tre_mm(found, truth, centre).max() < 0.3, facts


def _about_joint(roll_deg: float, shear_mm: float):
    """A vertebra turned by ``roll_deg`` about the anterior-posterior axis through its joint
    with a neighbour, 20 mm cranial of its centre, and slid ``shear_mm`` left-right there:
    the truth, its joint and centre, and a search from no motion (turning about ``pivot``,
    the shift within +-``shift_range_mm``)."""
    joint = _centre_mm(_grid(SIZE_VOX, SPACING_MM)) + np.array([0.0, 0.0, 20.0])
    truth = _motion(joint, (0.0, roll_deg, 0.0), (shear_mm, 0.0, 0.0))
    fixed, moving, centre = _session_pair(truth)
    body = _near_midline(sitk.Cast(fixed > 30.0, sitk.sitkUInt8), centre, 13.0)
    start = _motion(centre, (0, 0, 0), (0, 0, 0))

    def search(pivot, shift_range_mm):
        return search_out_of_plane(fixed, moving, body, start, pivot, shift_range_mm)

    return truth, joint, centre, search


def test_turn_about_the_joint_with_a_neighbour_is_found():
    """Lateral bending between visits: 3 deg about the shared disc (which moves the vertebra's
    centre 1 mm left-right), and a 0.3 mm slide across it."""
    truth, joint, centre, search = _about_joint(-3.0, 0.3)
    found, facts = search(joint, DEFAULTS.joint_shear_mm)
    assert facts["RollDegrees"] == pytest.approx(-3.0, abs=0.5)
    assert _tre_mm(found, truth, centre).max() < 0.3, facts


def test_vertebra_held_at_its_joint_with_a_neighbour():
    """Images that say the vertebra slid 3 mm across its disc (the sacrum's search followed
    what lies beside it that far): searched free about its centre, it follows them; about
    the joint, its place there moves by no more than ``joint_shear_mm`` from where its neighbour
    put it (the start)."""
    _, joint, centre, search = _about_joint(0.0, 3.0)
    (free, _), (held, facts) = (
        search(centre, DEFAULTS.left_right_search_mm),
        search(joint, DEFAULTS.joint_shear_mm),
    )
    assert free.TransformPoint(tuple(joint))[0] - joint[0] == pytest.approx(3.0, abs=0.3)
    assert abs(held.TransformPoint(tuple(joint))[0] - joint[0]) <= DEFAULTS.joint_shear_mm + 1e-6, (
        facts
    )


def _stacked_vertebrae(grid: sitk.Image) -> dict[str, sitk.Image]:
    """Five box-shaped vertebra masks, L2 to S1, one below the other (index j runs inferior)
    across the middle of the slices."""
    masks = {}
    for n, name in enumerate(("L2", "L3", "L4", "L5", "S1")):
        array = np.zeros(grid.GetSize()[::-1], np.uint8)
        array[3:12, 5 + 17 * n : 20 + 17 * n, 30:60] = 1
        masks[name] = _like(grid, array)
    return masks


def test_chain_starts_at_the_middle_vertebra_seen_whole_at_both_visits():
    """The second visit's field of view ends 50 mm lower down the spine: L2 and L3 are off it
    and L4, the middle one, is cut by its edge, so the chain starts at L5; with nothing seen
    whole, at the middle."""
    grid = _grid(SIZE_VOX, SPACING_MM)
    masks = _stacked_vertebrae(grid)
    centre = _centre_mm(grid)
    assert _chain_start(masks, _motion(centre, (0, 0, 0), (0, 0, 0)), grid) == "L4"
    assert _chain_start(masks, _motion(centre, (0, 0, 0), (0, 0, 50.0)), grid) == "L5"
    assert _chain_start(masks, _motion(centre, (0, 0, 0), (0, 0, 500.0)), grid) == "L4"


def test_a_vertebra_on_the_outermost_voxels_of_the_other_image_is_not_in_it():
    """L2 moved 19 rows (20.9 mm) up the second image: only its lowest row lands there, on the
    image's outermost row, where no metric finds a sample; 17 rows up, three rows land."""
    grid = _grid(SIZE_VOX, SPACING_MM)
    l2, centre = _stacked_vertebrae(grid)["L2"], _centre_mm(grid)
    edge_only = mapped_box(l2, _motion(centre, (0, 0, 0), (0, 0, 20.9)), grid)
    assert sitk.GetArrayViewFromImage(edge_only).any() and not _lands_inside(edge_only)
    assert _lands_inside(mapped_box(l2, _motion(centre, (0, 0, 0), (0, 0, 18.7)), grid))
