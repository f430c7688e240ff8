"""N4 on a synthetic sagittal-like volume with a known smooth multiplicative bias field."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from spineflow.core.io import write_sidecar
from spineflow.core.itk import shrink_factors_for_spacing
from spineflow.preprocess.n4 import n4_bias_correct

SHAPE_VOX = (96, 96, 12)
SPACING_MM = (1.1, 1.1, 3.3)


def _affine() -> np.ndarray:
    """Sagittal-like RAS affine: i -> anterior, j -> superior, k (thick slices) -> right."""
    affine = np.zeros((4, 4))
    affine[1, 0] = SPACING_MM[0]
    affine[2, 1] = SPACING_MM[1]
    affine[0, 2] = SPACING_MM[2]
    affine[:3, 3] = (-20.0, -50.0, -60.0)
    affine[3, 3] = 1.0
    return affine


def _tissues() -> dict[str, np.ndarray]:
    """Piecewise-constant 'tissues' as boolean masks on the voxel grid (mm coordinates)."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in SHAPE_VOX), indexing="ij")
    x_mm, y_mm, z_mm = (i - 47.5) * 1.1, (j - 47.5) * 1.1, (k - 5.5) * 3.3
    body = (x_mm / 45) ** 2 + (y_mm / 48) ** 2 + (z_mm / 22) ** 2 <= 1
    vertebra = body & (np.abs(x_mm - 8) < 12) & (np.abs(y_mm) < 30) & (np.abs(z_mm) < 12)
    disc = body & (((x_mm + 18) / 10) ** 2 + (y_mm / 14) ** 2 <= 1)
    muscle = body & ~vertebra & ~disc
    return {"muscle": muscle, "vertebra": vertebra, "disc": disc}


def _bias_field() -> np.ndarray:
    """exp of a low-order polynomial in normalised coordinates, roughly +/-30 %."""
    u, v, w = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE_VOX), indexing="ij")
    log_field = 0.18 * u - 0.12 * v + 0.08 * u * v + 0.06 * w - 0.1 * v**2
    return np.exp(log_field)


def _cov(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


@pytest.fixture(scope="module")
def biased(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("n4")
    tissues = _tissues()
    truth = np.zeros(SHAPE_VOX, np.float32)
    for name, intensity in {"muscle": 100.0, "vertebra": 180.0, "disc": 60.0}.items():
        truth[tissues[name]] = intensity
    rng = np.random.default_rng(0)
    image = truth * _bias_field() + rng.normal(0, 1.0, SHAPE_VOX) + 2.0  # dark, noisy air
    image = np.clip(image, 0, None).astype(np.float32)
    in_path = tmp / "sub-01_ses-1_T2w.nii.gz"
    nib.save(nib.Nifti1Image(image, _affine()), in_path)
    out = {"in": in_path, "out": tmp / "out.nii.gz", "field": tmp / "field.nii.gz"}
    out["mask"] = tmp / "mask.nii.gz"
    out["facts"] = n4_bias_correct(
        in_path, out["out"], field_path=out["field"], mask_path=out["mask"], threads=1
    )
    out["tissues"] = tissues
    out["image"] = image
    return out


def test_shrink_factors_spare_thick_slices():
    assert shrink_factors_for_spacing((1.1, 1.1, 3.3), 3) == [3, 3, 1]
    assert shrink_factors_for_spacing((3.3, 1.1, 1.1), 4) == [1, 4, 4]


def test_n4_flattens_each_tissue(biased):
    corrected = nib.load(biased["out"]).get_fdata()
    for name, inside in biased["tissues"].items():
        before, after = _cov(biased["image"][inside]), _cov(corrected[inside])
        assert after < 0.5 * before, f"{name}: CoV {before:.3f} -> {after:.3f}"


def test_n4_keeps_geometry_and_writes_float32(biased):
    original, corrected = nib.load(biased["in"]), nib.load(biased["out"])
    assert corrected.shape == original.shape
    assert np.array_equal(corrected.affine, original.affine)
    assert np.array_equal(corrected.header.get_qform(), original.header.get_qform())
    assert corrected.get_data_dtype() == np.float32


def test_bias_field_is_smooth_and_positive(biased):
    field = nib.load(biased["field"]).get_fdata()
    mask = nib.load(biased["mask"]).get_fdata() > 0
    assert np.all(field > 0)
    # Smooth: neighbouring in-plane voxels differ by well under 1 %.
    assert np.abs(np.diff(np.log(field), axis=0)).max() < 0.01
    assert np.abs(np.diff(np.log(field), axis=1)).max() < 0.01
    # The body, not the air, is the mask.
    assert mask[biased["tissues"]["vertebra"]].all()
    assert 0.2 < biased["facts"]["MaskVoxelFraction"] < 0.8


def test_facts_go_into_a_sidecar(biased, tmp_path):
    facts = biased["facts"]
    assert len(facts["IterationsPerLevel"]) == 3
    assert facts["ShrinkFactorsPerAxis"] == [3, 3, 1]
    write_sidecar(tmp_path / "x.json", facts)
    assert json.loads((tmp_path / "x.json").read_text())["MaskVoxelFraction"] == pytest.approx(
        facts["MaskVoxelFraction"]
    )
