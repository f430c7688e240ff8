"""Built-in segmentation: vertebral bodies and discs in the mid-sagittal plane, labelled from
the sacrum upwards.

No trained weights: the vertebral column is straightened along the anterior wall of the spinal
canal; in the straightened image vertebral bodies are runs of homogeneous marrow and discs are
the runs between them. The lowest real disc (a fused S1-S2 remnant is thin) is L5-S1, so labels
come from anatomy, not from position in the image. Labels follow SPINEPS: vertebra L1=20 ...
L5=24, S1=26, disc below vertebra X = 100 + X.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .midsagittal import Volume, find_canal, find_midline_x, plane_at, sample

VERTEBRA_LABELS = {
    "T10": 17,
    "T11": 18,
    "T12": 19,
    "L1": 20,
    "L2": 21,
    "L3": 22,
    "L4": 23,
    "L5": 24,
    "S1": 26,
    "S2": 27,
}
NAMES_CAUDAL_TO_CRANIAL = ("S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10")
MIN_DISC_MM = 3.5  # thinner gaps between bodies are the fused sacral remnants
MIN_BODY_MM = 12.0
COLUMN_DEPTH_MM = 60.0
STEP_MM = 0.5


def disc_label(upper: str) -> int:
    return 100 + VERTEBRA_LABELS[upper]


def lookup_table() -> list[tuple[int, str]]:
    rows = [(label, name) for name, label in VERTEBRA_LABELS.items()]
    names = list(VERTEBRA_LABELS)
    for upper, lower in zip(names[:-1], names[1:]):
        rows.append((disc_label(upper), f"{upper}-{lower}"))
    return sorted(rows)


@dataclass
class Column:
    """The vertebral column straightened along the canal's anterior wall."""

    points_mm: np.ndarray  # (n, 2) curve points (y, z), 1 mm apart, caudal to cranial
    normals: np.ndarray  # (n, 2) unit vectors pointing anterior
    depth_mm: np.ndarray  # sample depths along the normal
    image: np.ndarray  # (n, len(depth_mm)) straightened intensities

    @cached_property
    def marrow(self) -> tuple[np.ndarray, np.ndarray, float]:
        """marrow_rows of this column, computed once (every level and body asks for it)."""
        return marrow_rows(self)


def canal_front_curve(plane: np.ndarray, spacing_mm) -> tuple[np.ndarray, np.ndarray]:
    """Anterior wall of the canal as a smooth curve (points 1 mm apart) with anterior normals."""
    canal = find_canal(plane, spacing_mm)
    rows = np.flatnonzero(canal.any(axis=0))
    front_y = np.array([np.flatnonzero(canal[:, k]).max() for k in rows]) * spacing_mm[0]
    z = rows * spacing_mm[1]
    window = max(3, int(round(12.0 / spacing_mm[1])) | 1)
    front_y = ndimage.gaussian_filter1d(ndimage.median_filter(front_y, window), 4.0)
    points = np.column_stack([front_y, z])
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    even = np.arange(0, arc[-1], 1.0)
    points = np.column_stack(
        [np.interp(even, arc, points[:, 0]), np.interp(even, arc, points[:, 1])]
    )
    tangent = np.gradient(points, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normals = np.column_stack([tangent[:, 1], -tangent[:, 0]])  # tangent rotated towards +y
    normals *= np.sign(normals[:, :1] + 1e-12)
    return points, normals


def straighten(plane: np.ndarray, spacing_mm) -> Column:
    points, normals = canal_front_curve(plane, spacing_mm)
    depth = np.arange(0.0, COLUMN_DEPTH_MM, STEP_MM)
    grid = points[:, None, :] + depth[None, :, None] * normals[:, None, :]
    image = sample(plane, spacing_mm, grid.reshape(-1, 2)).reshape(len(points), len(depth))
    return Column(points, normals, depth, image)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    labels, n = ndimage.label(mask)
    return [(s.start, s.stop) for (s,) in ndimage.find_objects(labels)]


def marrow_rows(column: Column) -> tuple[np.ndarray, np.ndarray, float]:
    """Per row: the share of the body band that looks like marrow, the local marrow level, and
    the tolerance used. The level is a running median along the column (bodies are the majority
    of any 60 mm stretch), so a residual bias field does not matter."""
    band = column.image[:, (column.depth_mm >= 4) & (column.depth_mm <= 24)]
    row_level = np.nanmedian(band, axis=1)
    level = ndimage.median_filter(np.nan_to_num(row_level, nan=np.nanmedian(row_level)), 61)
    residual = band - level[:, None]
    finite = residual[np.isfinite(residual)]
    spread = float(1.4826 * np.median(np.abs(finite - np.median(finite))))
    tolerance = max(2.0 * spread, 0.12 * float(np.median(level)))
    likeness = np.nanmean(np.abs(residual) < tolerance, axis=1)
    return ndimage.uniform_filter1d(likeness, 3), level, tolerance


@dataclass
class Level:
    name: str  # vertebra name, or "UPPER-LOWER" for a disc
    rows: tuple[int, int]  # row range in the straightened column


def find_levels(column: Column) -> list[Level]:
    """Bodies and discs along the column, labelled from the sacrum upwards."""
    likeness, _, _ = column.marrow
    n_rows = len(likeness)
    # a body cut by the end of the field of view is kept (shorter), so the disc below it counts
    body_runs = [
        r
        for r in _runs(likeness >= 0.5)
        if (r[1] - r[0]) >= MIN_BODY_MM or (r[0] == 0 or r[1] == n_rows)
    ]
    if len(body_runs) < 2:
        raise ValueError("fewer than two vertebral bodies found along the canal")
    gaps = [(a[1], b[0]) for a, b in zip(body_runs[:-1], body_runs[1:])]
    # merge bodies separated by a thin (fused) remnant: the sacrum counts as one block from S1 down
    blocks = [list(body_runs[0])]
    for gap, body in zip(gaps, body_runs[1:]):
        if gap[1] - gap[0] < MIN_DISC_MM and len(blocks) == 1:
            blocks[-1][1] = body[1]
        else:
            blocks.append(list(body))
    if len(blocks) < 2:
        raise ValueError("no disc above the sacrum found")
    levels: list[Level] = []
    names = NAMES_CAUDAL_TO_CRANIAL
    for index, block in enumerate(blocks[: len(names)]):
        levels.append(Level(names[index], (block[0], block[1])))
        if index + 1 < len(blocks) and index + 1 < len(names):
            upper = names[index + 1]
            levels.append(Level(f"{upper}-{names[index]}", (block[1], blocks[index + 1][0])))
    return levels


def split_sacrum(column: Column, block_rows: tuple[int, int]):
    """S1 rows, S1-S2 remnant rows and S2 rows of the sacral block (the block may hold S1 alone).

    Walking down from the block's top (the L5-S1 disc), past the first 12 mm of S1, the first
    dip of marrow-likeness is the fused S1-S2 remnant; further dips (S2-S3) are not."""
    likeness, _, _ = column.marrow
    start, stop = block_rows
    below_top = np.arange(stop - 12, max(start + 2, stop - 45), -1)
    dipping = [row for row in below_top if likeness[row] < 0.85]
    if not dipping:
        return (start, stop), None, None
    run = [dipping[0]]
    for row in dipping[1:]:
        if row != run[-1] - 1:
            break
        run.append(row)
    weakest = int(min(run, key=lambda row: likeness[row]))
    remnant = (weakest - 1, weakest + 2)
    return (remnant[1], stop), remnant, (start, remnant[0])


def body_extent_mm(column: Column, rows: tuple[int, int]) -> tuple[float, float]:
    """Posterior and anterior depth of the body (marrow-like run from the canal forwards)."""
    _, level, tolerance = column.marrow
    block = column.image[rows[0] : rows[1]]
    marrow = np.nanmedian(block, axis=0)
    looks = np.abs(marrow - np.median(level[rows[0] : rows[1]])) < tolerance * 1.5
    runs = [r for r in _runs(looks) if (r[1] - r[0]) * STEP_MM >= 5.0]  # at least 5 mm deep
    if not runs:
        return 2.0, 35.0
    start, stop = max(runs, key=lambda r: r[1] - r[0])
    return column.depth_mm[start], column.depth_mm[stop - 1]


def column_labels(column: Column, levels: list[Level]) -> np.ndarray:
    """Label image of the straightened column: bodies and discs between their AP limits."""
    labels = np.zeros(column.image.shape, np.int16)
    extents = {}
    bodies = [level for level in levels if "-" not in level.name]
    discs = [level for level in levels if "-" in level.name]
    if bodies and bodies[0].name == "S1":
        s1_rows, remnant, s2_rows = split_sacrum(column, bodies[0].rows)
        bodies[0] = Level("S1", s1_rows)
        if remnant is not None:
            bodies.append(Level("S2", s2_rows))
            discs.append(Level("S1-S2", remnant))
    for level in bodies:
        extents[level.name] = body_extent_mm(column, level.rows)
        band = (column.depth_mm >= extents[level.name][0]) & (
            column.depth_mm <= extents[level.name][1]
        )
        labels[level.rows[0] : level.rows[1], band] = VERTEBRA_LABELS[level.name]
    for level in discs:
        upper, lower = level.name.split("-")
        post = min(extents[upper][0], extents[lower][0])
        front = (extents[upper][1] + extents[lower][1]) / 2
        band = (column.depth_mm >= post) & (column.depth_mm <= front)
        labels[level.rows[0] : level.rows[1], band] = disc_label(upper)
    return labels


def plane_labels(plane_shape, spacing_mm, column: Column, labels: np.ndarray) -> np.ndarray:
    """Map the straightened labels back onto the 2D image by nearest curve point."""
    yy, zz = np.meshgrid(
        np.arange(plane_shape[0]) * spacing_mm[0],
        np.arange(plane_shape[1]) * spacing_mm[1],
        indexing="ij",
    )
    pixels = np.column_stack([yy.ravel(), zz.ravel()])
    _, nearest = cKDTree(column.points_mm).query(pixels)
    depth = np.einsum("ij,ij->i", pixels - column.points_mm[nearest], column.normals[nearest])
    depth_index = np.rint(depth / STEP_MM).astype(int)
    valid = (depth_index >= 0) & (depth_index < labels.shape[1])
    out = np.zeros(len(pixels), np.int16)
    out[valid] = labels[nearest[valid], depth_index[valid]]
    # the curve's end rows extend sideways forever; keep only pixels that project inside it
    along = np.einsum(
        "ij,ij->i",
        pixels - column.points_mm[nearest],
        np.column_stack([-column.normals[nearest][:, 1], column.normals[nearest][:, 0]]),
    )
    out[np.abs(along) > 1.0] = 0
    return out.reshape(plane_shape)


def segment_volume(volume: Volume, half_width_slices: int = 1) -> tuple[np.ndarray, dict]:
    """3D label map (labels in the slices around the mid-sagittal plane) and facts about it."""
    x_mid = find_midline_x(volume)
    plane = plane_at(volume, x_mid)
    spacing = volume.plane_spacing_mm
    column = straighten(plane, spacing)
    levels = find_levels(column)
    labels2d = plane_labels(plane.shape, spacing, column, column_labels(column, levels))
    seg = np.zeros(volume.data.shape, np.int16)
    centre = int(round(x_mid))
    for x in range(centre - half_width_slices, centre + half_width_slices + 1):
        if 0 <= x < seg.shape[0]:
            seg[x] = labels2d
    facts = {
        "MidsagittalSliceIndex": x_mid,
        "LevelsFound": [level.name for level in levels],
    }
    return seg, facts


def write_dseg(seg: np.ndarray, volume: Volume, reference_path, out_path) -> None:
    """Write labels on the reference image's grid (undo the canonical reorientation)."""
    reference = nib.load(str(reference_path))
    canonical = nib.Nifti1Image(seg, volume.affine)
    ornt = nib.orientations.io_orientation(reference.affine)
    canonical_ornt = nib.orientations.io_orientation(volume.affine)
    transform = nib.orientations.ornt_transform(canonical_ornt, ornt)
    data = nib.orientations.apply_orientation(np.asarray(canonical.dataobj), transform)
    image = nib.Nifti1Image(data.astype(np.int16), reference.affine, reference.header)
    image.set_data_dtype(np.int16)
    image.header["descrip"] = b"spineflow dseg"
    nib.save(image, str(out_path))
