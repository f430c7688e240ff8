"""The canal is the tube with vertebrae in front of it, not the brightest tube in the image."""

import numpy as np
import pytest

from spineflow.core.midsagittal import (
    Canal,
    Volume,
    canal_polarity,
    canal_projection,
    midline_and_scatter,
    symmetric_midline,
    vertebrae_in_front,
)
from spineflow.segment.labelling import _midsagittal
from spineflow.segment.settings import DEFAULTS

SHAPE = (9, 200, 300)  # [x, y (posterior -> anterior), z], 1 mm voxels


def _volume(canal_signal=0.8, fat_signal=1.0, vertebrae=True):
    """A body of soft tissue (0.3) with, in the middle slices: fat under the skin of the back
    (a thin bright stripe 6 mm under the body's surface), the canal (a tube 14 mm deep) and in
    front of it a column of bodies (0.45, 26 mm) and discs (0.9, 10 mm)."""
    rng = np.random.default_rng(0)
    data = np.zeros(SHAPE, np.float32)
    data[:, 14:190, :] = 0.3  # the body; air behind y = 14
    middle = slice(3, 6)
    data[middle, 20:27, 5:295] = fat_signal
    data[middle, 70:84, 20:280] = canal_signal
    if vertebrae:
        for z0 in range(20, 280, 36):
            data[middle, 86:126, z0 : z0 + 26] = 0.45
            data[middle, 86:126, z0 + 26 : z0 + 36] = 0.9
    data += rng.normal(0, 0.02, data.shape).astype(np.float32)
    return Volume(data, np.eye(4), (1.0, 1.0, 1.0))


def _depth(canal) -> float:
    """The canal mask's median depth (posterior -> anterior, mm)."""
    rows = np.flatnonzero(canal.mask.any(axis=0))
    return float(np.median([np.flatnonzero(canal.mask[:, k]).mean() for k in rows]))


def test_the_tube_with_vertebrae_in_front_is_the_canal_not_the_brighter_fat():
    canal = canal_projection(_volume())
    assert 68 <= _depth(canal) <= 86, _depth(canal)  # the canal's place, not the fat's (20-27)
    assert canal.polarity == 1


def test_a_canal_merged_in_the_projection_is_found_in_its_own_slice():
    volume = _volume()
    # nerve roots and fat beside the sac, as bright as it, in the lateral slices: in the
    # projection the canal is a wide band with no vertebrae repeating in front of it
    volume.data[[0, 1, 2, 6, 7, 8], 60:100, 20:280] = 0.8
    assert 68 <= _depth(canal_projection(volume)) <= 86


def test_vertebrae_in_front_tell_the_canal_from_the_fat():
    volume = _volume()
    plane = volume.data.max(axis=0)
    canal, fat = np.zeros(plane.shape, bool), np.zeros(plane.shape, bool)
    canal[70:84, 20:280], fat[20:27, 5:295] = True, True
    spacing = np.ones(2)
    assert vertebrae_in_front(plane, spacing, canal) > 0.5
    assert vertebrae_in_front(plane, spacing, fat) < 0.2


def test_without_vertebrae_in_front_of_any_tube_the_strongest_stays():
    depth = _depth(canal_projection(_volume(vertebrae=False)))
    assert depth < 30, depth  # nothing to tell them apart by: the brightest, as before


@pytest.mark.parametrize(
    "sidecar, polarity",
    [
        ({"RepetitionTime": 0.6, "EchoTime": 0.012}, -1),  # T1 spin echo: dark fluid
        ({"RepetitionTime": 3.5, "EchoTime": 0.1}, 1),  # T2 TSE
        ({"RepetitionTime": 3.0, "EchoTime": 0.03}, 1),  # PD fat-sat
        ({"RepetitionTime": 0.9, "EchoTime": 0.02, "InversionTime": 0.15}, 1),  # STIR-like
        ({}, 1),
        (None, 1),
    ],
)
def test_the_canal_is_dark_only_on_a_t1_weighted_series(sidecar, polarity):
    assert canal_polarity(sidecar) == polarity


def _canal_volume(lateral_blob_rows=()):
    """Nine 3.3 mm slices; a canal of CSF 20 mm across centred on slice 4 in every row; in the
    given rows a structure brighter still two slices off the canal's centre (fat beside it)."""
    data = np.full((9, 40, 60), 100.0, np.float32)
    lr_profile = np.array([0, 0, 0.6, 1, 1, 1, 0.6, 0, 0]) * 900 + 100
    data[:, 15:25, :] = lr_profile[:, None, None]
    for k in lateral_blob_rows:
        data[1:3, 15:25, k] = 1500.0
    canal = Canal(np.zeros((40, 60), bool))
    canal.mask[15:25, :] = True
    return Volume(data, np.diag([3.3, 1.0, 1.0, 1.0]), (3.3, 1.0, 1.0)), canal


@pytest.mark.parametrize("blob_rows, uncertain", [((), False), (range(0, 60, 2), True)])
def test_the_midline_scatters_where_bright_tissue_lies_beside_the_canal(blob_rows, uncertain):
    """Fat as bright as the CSF beside the canal in every other row moves those rows' centres
    by two slices: the surface through them can no longer be told (over 2.5 mm)."""
    volume, canal = _canal_volume(blob_rows)
    midline, scatter_mm = midline_and_scatter(volume, canal)
    assert (scatter_mm > DEFAULTS.max_midline_scatter_mm) == uncertain, scatter_mm
    if not uncertain:
        assert midline == pytest.approx(4.0, abs=0.01)


SPINE_CENTRE = 6.3  # the spine's midline (slice index) in ``_spine_volume``


def _spine_volume(fat_beside_canal=True, symmetric=True, centre=SPINE_CENTRE):
    """Thirteen 3.3 mm slices: a canal 20 mm across and the bodies in front of it 44 mm across,
    both centred on slice ``centre`` (partial volume at their sides); fat brighter than the CSF
    in slice 1, 17 mm beside the canal's centre, in every other row. Without ``symmetric`` the
    canal and bodies are noise and a bright spot lies at a random slice in every row."""
    rng = np.random.default_rng(1)
    x_mm = (np.arange(13) - centre) * 3.3

    def across(half_mm):
        return np.clip((half_mm - np.abs(x_mm)) / 3.3 + 0.5, 0, 1)[:, None, None]

    data = np.full((13, 80, 80), 100.0)
    if symmetric:
        data[:, 20:34, :] += across(10.0) * 900  # the canal, 14 mm deep
        data[:, 36:70, :] += across(22.0) * 350  # the bodies in front of it
    else:
        data[rng.integers(0, 13, 80), 20:34, np.arange(80)] = 1500.0
    if fat_beside_canal:
        data[1, 20:34, ::2] = 1500.0
    data += rng.normal(0, 20, data.shape)
    canal = Canal(np.zeros((80, 80), bool))
    canal.mask[20:34, :] = True
    return Volume(data.astype(np.float32), np.diag([3.3, 1.0, 1.0, 1.0]), (3.3, 1.0, 1.0)), canal


def test_where_the_canal_scatters_the_spine_s_symmetry_gives_the_midline():
    """Fat brighter than the CSF 17 mm beside the canal in every other row pulls those rows'
    canal centres to it; mirrored within 12 mm either side, the band from the canal to the
    bodies never sees that fat and lies on the midline (within 0.3 mm)."""
    volume, canal = _spine_volume()
    assert midline_and_scatter(volume, canal)[1] > DEFAULTS.max_midline_scatter_mm
    midline, scatter_mm = symmetric_midline(volume, canal)
    assert scatter_mm < 0.5
    assert np.abs(midline - SPINE_CENTRE).max() * 3.3 < 0.3
    assert _midsagittal(volume, canal)[2] == "symmetry"
    clean, canal = _spine_volume(fat_beside_canal=False)
    assert _midsagittal(clean, canal)[2] == "canal"


def test_without_the_spine_s_symmetry_the_plane_cannot_be_told():
    volume, canal = _spine_volume(fat_beside_canal=False, symmetric=False)
    with pytest.raises(ValueError, match="the spine's symmetry by"):
        _midsagittal(volume, canal)


def test_a_symmetry_found_only_at_the_side_of_the_slices_searched_is_not_taken():
    """The spine 4 mm inside the field of view's side: every row's mirror peaks at the first
    candidate (with no scatter); that is no midline, and the session fails."""
    volume, canal = _spine_volume(centre=1.2)
    with pytest.raises(ValueError, match="peaks at the side of the slices searched"):
        symmetric_midline(volume, canal)
