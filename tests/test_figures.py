"""The QC figure's geometry: scanner coordinates land on the pixel that holds them, and the
sagittal panels show anterior on the left."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from spineflow.core.midsagittal import load_canonical  # noqa: E402
from spineflow.report.figures import PlaneView, _show_around, plane_view  # noqa: E402


def _oblique_lps_image(tmp_path, bright_voxel):
    """A sagittal stack stored as DICOM exports often are (LPS-ish axes, tilted by 10 degrees,
    anisotropic voxels) with one bright voxel."""
    data = np.zeros((40, 30, 9), np.float32)
    data[bright_voxel] = 100.0
    angle = np.deg2rad(10)
    rotation = np.array([[0, 0, -1], [np.cos(angle), np.sin(angle), 0],
                         [-np.sin(angle), np.cos(angle), 0]])  # fmt: skip
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 3.3])
    affine[:3, 3] = (12.0, -40.0, 25.0)
    path = tmp_path / "stack.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path, nib.affines.apply_affine(affine, bright_voxel)


def test_a_scanner_point_lands_on_the_pixel_that_holds_it(tmp_path):
    path, world = _oblique_lps_image(tmp_path, (17, 11, 4))
    volume = load_canonical(path)
    slice_index = np.argwhere(volume.data == 100.0)[0][0]
    view = plane_view(volume, np.zeros(volume.data.shape, int), float(slice_index))
    pixel = np.rint(view.to_plane_mm(world)[0] / view.spacing_mm).astype(int)
    assert view.image[tuple(pixel)] == 100.0
    assert np.count_nonzero(view.image) == 1


def test_the_sagittal_panels_show_anterior_on_the_left():
    view = PlaneView(np.zeros((50, 80)), np.zeros((50, 80), int), np.array([1.0, 1.0]), np.eye(4))
    figure, axis = plt.subplots()
    _show_around(axis, view, [np.array([[10.0, 20.0], [30.0, 60.0]])], margin_mm=5.0)
    left, right = axis.get_xlim()
    assert left > right  # AP (RAS y) grows to the left
    assert (left, right) == (35.0, 5.0)
    _show_around(axis, view, [], margin_mm=5.0)  # nothing drawn: the whole plane
    assert axis.get_xlim() == (49.5, -0.5)
    plt.close(figure)


def test_timepoint_2_resampled_by_the_transform_lands_on_timepoint_1(tmp_path):
    """A second scan shifted 5 mm forward in the scanner, brought back by the ITK transform that
    maps timepoint 1's points (LPS) to it: the registration figure's plane is timepoint 1's."""
    import SimpleITK as sitk

    from spineflow.report.figures import _Resampler

    fixed_path, _ = _oblique_lps_image(tmp_path, (17, 11, 4))
    fixed_image = nib.load(fixed_path)
    data = np.asarray(fixed_image.dataobj)
    data[5:35, 5:25, 2:7] += np.random.default_rng(0).uniform(10, 50, (30, 20, 5))
    nib.save(nib.Nifti1Image(data, fixed_image.affine), fixed_path)
    shifted = fixed_image.affine.copy()
    shifted[1, 3] += 5.0  # the same anatomy 5 mm anterior (RAS y) in the second scan
    moving_path = tmp_path / "moving.nii.gz"
    nib.save(nib.Nifti1Image(data, shifted), moving_path)
    transform_path = tmp_path / "xfm.tfm"
    sitk.WriteTransform(sitk.TranslationTransform(3, (0.0, -5.0, 0.0)), str(transform_path))
    moved = _Resampler(fixed_path, moving_path).moved(transform_path)
    fixed = load_canonical(fixed_path)
    assert np.allclose(moved.affine, fixed.affine)
    assert np.allclose(moved.data, fixed.data, atol=1e-3)
