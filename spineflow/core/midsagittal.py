"""The spine's own mid-sagittal plane, and the 2D image and profiles sampled in it.

Images are handled in nibabel's closest canonical (RAS) orientation: axis 0 runs left to right
across the sagittal slices, axis 1 posterior to anterior, axis 2 inferior to superior. In-plane
positions are millimetres (y_mm, z_mm) = (j * dy, k * dz): distances in them are physical.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.stats import median_abs_deviation

# a thecal sac is ~10-25 mm deep: wider bright blobs (bowel, bladder) and thin lines (skin,
# vessel walls) are not canal
CANAL_MAX_WIDTH_MM = 35.0
CANAL_MIN_WIDTH_MM = 4.0
LOCAL_CONTRAST = 1.3  # CSF over the mean of its 15 mm neighbourhood


@dataclass(frozen=True)
class Volume:
    data: np.ndarray  # [x, y, z] float32, canonical RAS axes
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]

    @property
    def plane_spacing_mm(self) -> np.ndarray:
        return np.array(self.spacing_mm[1:])


def load_canonical(path) -> Volume:
    return canonical_volume(nib.load(str(path)), path)


def canonical_volume(image: nib.Nifti1Image, source) -> Volume:
    """``image`` in canonical RAS axes; ``source`` names it in the error for a non-3D image."""
    image = nib.as_closest_canonical(image)
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"{source}: expected a 3D image, got shape {data.shape}")
    return Volume(data, image.affine, tuple(float(z) for z in image.header.get_zooms()[:3]))


def _tubes(plane: np.ndarray, spacing_mm, polarity: int = 1):
    """Components of the image that stand out from the tissue around them, brighter (polarity
    +1) or darker (-1): the image over the 15 mm Gaussian mean of the body's pixels, air left
    out (a bias field that N4 left behind brightens whole regions, not a narrow band within
    them). Returns the component labels, each pixel's local contrast (inverted for dark) and
    its brightness relative to the image's brightest (its darkness for dark), and the body."""
    smooth = ndimage.gaussian_filter(plane, 1.0)
    top = np.percentile(smooth, 99.5)
    body = (smooth > 0.1 * top).astype(float)
    sigma = 15.0 / np.asarray(spacing_mm)
    background = ndimage.gaussian_filter(smooth * body, sigma) / np.maximum(
        ndimage.gaussian_filter(body, sigma), 1e-6
    )
    contrast = smooth / np.maximum(background, 1e-6)
    level = smooth / top
    if polarity < 0:
        contrast, level = 1.0 / np.maximum(contrast, 1e-6), 1.0 - level
        inside = body > 0
    else:
        inside = smooth > 0.2 * top
    labels, _ = ndimage.label((contrast > LOCAL_CONTRAST) & inside)
    return labels, contrast, level, body > 0


def _across_slices(volume: Volume, mask: np.ndarray, polarity: int) -> np.ndarray:
    """Per slice, the mean of a [y, z] mask's pixels, signed so the canal's brightness is up."""
    return polarity * volume.data[:, mask].mean(axis=1)


def _lr_narrowness(volume: Volume, mask: np.ndarray, polarity: int = 1) -> float:
    """1 minus the share of the slices where the structure stands out by more than half its
    peak: a tube (the thecal sac, ~20 mm wide) is narrow across the slices, a sheet (skin, a
    band of residual bias) is bright in all of them."""
    profile = _across_slices(volume, mask, polarity)
    profile = profile - profile.min()
    if profile.max() <= 0:
        return 0.0
    return float(1.0 - np.mean(profile >= 0.5 * profile.max()))


@dataclass(frozen=True)
class Canal:
    """The thecal sac in a sagittal plane ([y, z] mask) and its brightness: +1 bright (T2, PD,
    STIR: CSF), -1 dark (T1)."""

    mask: np.ndarray
    polarity: int = 1


def _candidates(plane: np.ndarray, spacing_mm, volume: Volume | None, polarity: int):
    """(score, mask) of the tubes 4-35 mm wide: long ones that stand out most, bright (dark)
    ones, with no air around them; with the volume, narrow across the slices."""
    labels, contrast, level, body = _tubes(plane, spacing_mm, polarity)
    ring = ndimage.generate_binary_structure(2, 1)
    found = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels[region] == index
        extent_mm = mask.shape[1] * spacing_mm[1]  # cranio-caudal extent
        width_mm = mask.sum() * spacing_mm[0] * spacing_mm[1] / max(extent_mm, 1e-6)
        if not CANAL_MIN_WIDTH_MM < width_mm < CANAL_MAX_WIDTH_MM:
            continue
        # CSF is the brightest tissue of a fluid-sensitive image, in the image as a whole too
        score = extent_mm * (float(np.mean(contrast[region][mask])) - 1.0)
        score *= float(np.mean(level[region][mask]))
        # the canal lies deep in the body; the skin, bright near a surface coil, borders air
        whole = labels == index
        around = ndimage.binary_dilation(whole, ring, iterations=int(10 / spacing_mm[0]))
        score *= float(np.mean(body[around & ~whole]))
        if volume is not None:
            score *= _lr_narrowness(volume, whole, polarity) ** 2
        if score > 0:
            found.append((score, whole))
    return sorted(found, key=lambda c: -c[0])


def find_canal(plane: np.ndarray, spacing_mm, canal: Canal) -> np.ndarray:
    """Mask of the thecal sac in a plane: the tube of the canal's brightness that overlaps the
    canal found across the slices (``canal_projection``) most."""
    overlaps = [(float(np.sum(canal.mask & mask)), mask)
                for _, mask in _candidates(plane, spacing_mm, None, canal.polarity)]  # fmt: skip
    overlaps = [o for o in overlaps if o[0] > 0]
    if not overlaps:
        raise ValueError("no spinal canal found in the mid-sagittal plane")
    return max(overlaps, key=lambda o: o[0])[1]


# the strongest tubes are judged by what lies in front of them (in the slice each stands out
# most): one whose band repeats one vertebral period further by this much more than the
# strongest's, and at least this much, is the canal instead (the strongest being fat under
# the skin of a T2 image)
JUDGED = 5
REPEAT_MARGIN = 0.15
REPEAT_MIN = 0.3
REPEAT_SOME = 0.1


def canal_projection(volume: Volume, polarity: int = 1) -> Canal:
    """The thecal sac, bright (``polarity`` +1: fluid-sensitive images) in the maximum-intensity
    projection across the slices, or dark (-1: T1) in the minimum-intensity one.

    A long, narrow tube of the canal's brightness deep in the body is the thecal sac on most
    images (``_candidates``), but the fat under the skin of a T2 image without fat suppression
    is one as well: among the strongest candidates, the one with vertebral bodies and discs in
    front of it, repeating every vertebra (``vertebrae_in_front``), is taken where that repeat
    is clearly stronger than the strongest candidate's. Where the strongest has a faint repeat
    (REPEAT_SOME) and no candidate a clear one, the strongest; where none has any (the canal
    merged in the projection with the fat and nerve roots beside it), the slices are searched
    one by one (``_canal_in_a_slice``); failing that, the strongest candidate."""
    spacing = volume.plane_spacing_mm
    projection = volume.data.max(axis=0) if polarity > 0 else volume.data.min(axis=0)
    candidates = _candidates(projection, spacing, volume, polarity)[:JUDGED]
    repeats = [vertebrae_in_front(_peak_slice(volume, mask, polarity), spacing, mask)
               for _, mask in candidates]  # fmt: skip
    if candidates and max(repeats) >= REPEAT_MIN:
        best = int(np.argmax(repeats))
        chosen = best if repeats[best] >= repeats[0] + REPEAT_MARGIN else 0
        return Canal(candidates[chosen][1], polarity)
    if candidates and repeats[0] >= REPEAT_SOME:  # faint in the projection's clutter
        return Canal(candidates[0][1], polarity)
    in_a_slice = _canal_in_a_slice(volume, polarity)
    if in_a_slice is not None:
        return in_a_slice
    if not candidates:
        raise ValueError("no spinal canal found (no long, narrow tube)")
    return Canal(candidates[0][1], polarity)


T1_MAX_TR_S, T1_MAX_TE_S = 1.2, 0.03  # a T1-weighted spin echo's timing (BIDS: seconds)


def canal_polarity(sidecar: dict | None) -> int:
    """The canal's brightness from the series' timing (a BIDS sidecar): dark (-1) on a
    T1-weighted spin echo (short TR and TE), bright (+1) otherwise and without timing."""
    sidecar = sidecar or {}
    repetition, echo = sidecar.get("RepetitionTime"), sidecar.get("EchoTime")
    if repetition is None or echo is None or sidecar.get("InversionTime"):
        return 1
    return -1 if repetition < T1_MAX_TR_S and echo < T1_MAX_TE_S else 1


SLICE_STEP_MM = 2.0  # the slices searched one by one


def _canal_in_a_slice(volume: Volume, polarity: int) -> Canal | None:
    """The tube of any single slice (every SLICE_STEP_MM) with the most vertebra-like band in
    front of it, if that repeats by REPEAT_MIN; None otherwise."""
    spacing = volume.plane_spacing_mm
    stride = max(1, int(round(SLICE_STEP_MM / volume.spacing_mm[0])))
    best = None
    for x in range(0, volume.data.shape[0], stride):
        plane = volume.data[x].astype(float)
        for _, mask in _candidates(plane, spacing, volume, polarity)[:JUDGED]:
            repeat = vertebrae_in_front(plane, spacing, mask)
            if repeat >= REPEAT_MIN and (best is None or repeat > best[0]):
                best = (repeat, mask)
    return None if best is None else Canal(best[1], polarity)


def _peak_slice(volume: Volume, mask: np.ndarray, polarity: int) -> np.ndarray:
    """The slice in which a projection's tube stands out most (the fat and vessels beside the
    canal fill the projection's band in front of it; one slice shows the vertebrae)."""
    return volume.data[int(np.argmax(_across_slices(volume, mask, polarity)))].astype(float)


def front_curve(mask: np.ndarray, spacing_mm) -> tuple[np.ndarray, np.ndarray]:
    """Anterior wall of a canal mask as a smooth curve (points 1 mm apart, caudal to cranial)
    with anterior normals. Rows where the sac is much narrower than usual are dropped at both
    ends: at its blind end (near S2) and where it leaves the image the front wall turns away
    from the vertebrae."""
    rows = np.flatnonzero(mask.any(axis=0))
    width = mask[:, rows].sum(axis=0)
    wide = np.flatnonzero(width >= 0.35 * np.median(width))
    rows = rows[wide[0] : wide[-1] + 1]
    front_y = np.array([np.flatnonzero(mask[:, k]).max() for k in rows]) * spacing_mm[0]
    z = rows * spacing_mm[1]
    window = max(3, int(round(12.0 / spacing_mm[1])) | 1)
    front_y = ndimage.gaussian_filter1d(ndimage.median_filter(front_y, window), 4.0)
    return resample_curve(np.column_stack([front_y, z]))


def resample_curve(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points 1 mm apart along a polyline, and unit normals pointing anterior (+y)."""
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    even = np.arange(0, arc[-1], 1.0)
    points = np.column_stack(
        [np.interp(even, arc, points[:, 0]), np.interp(even, arc, points[:, 1])]
    )
    tangent = np.gradient(points, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    # the curve runs caudal -> cranial, so this rotation points anterior all along it, also
    # where the sacrum turns backwards
    normals = np.column_stack([tangent[:, 1], -tangent[:, 0]])
    return points, normals


BAND_MM = (3.0, 25.0)  # the vertebral bodies in front of the canal's front wall
PERIOD_MM = (22, 55)  # a vertebra and its disc


def vertebrae_in_front(plane: np.ndarray, spacing_mm, mask: np.ndarray) -> float:
    """How alike the band in front of a tube is to itself one vertebral period further along
    (the best normalised correlation over lags of PERIOD_MM, up to half the band's length):
    bodies and discs repeat as whole rows across it; skin, fat planes, bowel and bladder have
    no vertebrae in front of them."""
    try:
        points, normals = front_curve(mask, spacing_mm)
    except (ValueError, IndexError):
        return 0.0
    depth = np.arange(BAND_MM[0], BAND_MM[1], 0.5)
    grid = points[:, None, :] + depth[None, :, None] * normals[:, None, :]
    band = sample(plane, spacing_mm, grid.reshape(-1, 2)).reshape(len(points), len(depth))
    band = band[np.isfinite(band).all(axis=1)]
    lags = np.arange(PERIOD_MM[0], min(PERIOD_MM[1], len(band) // 2))
    if not len(lags):
        return 0.0
    trend = ndimage.median_filter(band, (61, 1), mode="nearest")
    band = ndimage.gaussian_filter(band / np.maximum(trend, 1e-6), (1.0, 2.0))
    band -= band.mean(axis=0)
    return max(
        float((band[:-lag] * band[lag:]).sum()
              / np.sqrt((band[:-lag] ** 2).sum() * (band[lag:] ** 2).sum() + 1e-12))
        for lag in lags
    )  # fmt: skip


def _lr_centre(profile: np.ndarray) -> float:
    """Centroid of the central run of an LR profile above half its range (NaN if flat)."""
    profile = profile - profile.min()
    if not np.isfinite(profile).all() or profile.max() <= 0:
        return float("nan")
    runs, _ = ndimage.label(profile >= 0.5 * profile.max())
    weights = np.where(runs == runs[int(np.argmax(profile))], profile, 0.0)
    return float(np.sum(weights * np.arange(len(profile))) / np.sum(weights))


def find_midline(volume: Volume, canal: Canal | None = None) -> np.ndarray:
    """Fractional slice index of the spine's mid-sagittal surface for every row z.

    The canal is found in a projection across the slices (``canal_projection``); in each row
    the CSF signal across the slices is symmetric about the midline, so its centroid (above
    half maximum; of the inverted signal for a dark canal) locates it to a fraction of the
    slice spacing. A coronal curve or a tilted
    patient moves the midline from slice to slice along the spine, so it is followed row by
    row (``smooth_midline``).
    """
    return midline_and_scatter(volume, canal)[0]


def midline_and_scatter(volume: Volume, canal: Canal | None = None) -> tuple[np.ndarray, float]:
    """The mid-sagittal surface (``find_midline``) and how far the canal's centre, row by row,
    scatters about it (robust SD, mm across the slices). Where tissue as bright as the CSF lies
    beside the canal (fat on a T2 without fat suppression) a row's centre jumps to it, and the
    surface fitted through them may lie anywhere within that scatter."""
    canal = canal_projection(volume) if canal is None else canal
    return _surface_and_scatter(volume, *_canal_centres(volume, canal))


def _surface_and_scatter(volume: Volume, rows: np.ndarray, centres: np.ndarray):
    """The smooth surface through the rows' centres (``smooth_midline``) and their scatter
    about it (robust SD, mm across the slices)."""
    midline = smooth_midline(rows, centres, volume.data.shape, volume.spacing_mm)
    residual_mm = (centres - midline[rows]) * volume.spacing_mm[0]
    return midline, float(median_abs_deviation(residual_mm, scale="normal"))


# the band across which the spine's left-right symmetry is sought, row by row: from behind
# the canal to the vertebral bodies in front of it (mm along y), and the reach either side
SYMMETRY_BAND_MM = (10.0, 35.0)
SYMMETRY_REACH_MM = 12.0
SYMMETRY_STEP_SLICES = 0.1


def symmetric_midline(volume: Volume, canal: Canal) -> tuple[np.ndarray, float]:
    """The mid-sagittal surface from the spine's own left-right symmetry, and its scatter (as
    ``midline_and_scatter``): in each row where the canal lies, the slice position (every
    SYMMETRY_STEP_SLICES, at least the reach from the outer slices) about which the band from
    behind the canal to the bodies in front of it correlates best with its mirror image, over
    the whole slices within SYMMETRY_REACH_MM either side. Fat as bright as the CSF further
    than that from the midline, which pulls the canal's centroid, never enters it. A row whose
    best position is the first
    or last candidate is not found (the midline may lie nearer the side of the field of view);
    ValueError where too few sagittal slices or too few rows hold it."""
    n_slices = volume.data.shape[0]
    reach = int(SYMMETRY_REACH_MM // volume.spacing_mm[0])
    if reach < 1 or n_slices < 2 * reach + 3:
        raise ValueError("too few sagittal slices to tell the spine's symmetry")
    rows = _canal_rows(canal)
    stacked = _bands(volume.data, canal, rows, volume.spacing_mm[1])
    centres = np.arange(reach, n_slices - 1 - reach + 1e-9, SYMMETRY_STEP_SLICES)
    offsets = np.arange(0.5, reach + 1e-9, 0.5)
    scores = np.array([_mirror_correlation(stacked, c, offsets) for c in centres])
    found, inside = _parabola_peaks(centres, scores)
    if inside.sum() < 0.5 * len(rows):
        raise ValueError(
            "the spine's symmetry peaks at the side of the slices searched in most rows"
        )
    return _surface_and_scatter(volume, rows[inside], found[inside])


def _bands(data: np.ndarray, canal: Canal, rows: np.ndarray, dy_mm: float) -> np.ndarray:
    """Per row, the slices' signal from behind the canal to the bodies in front of it
    (SYMMETRY_BAND_MM), less its mean across the slices: slices x rows x band, a row cut by
    the image's edge padded with zeros (which add nothing to a correlation)."""
    behind, ahead = (np.asarray(SYMMETRY_BAND_MM) / dy_mm).astype(int)
    bands = []
    for k in rows:
        ys = np.flatnonzero(canal.mask[:, k])
        band = data[:, max(ys.min() - behind, 0) : ys.max() + ahead, k].astype(float)
        bands.append(band - band.mean(axis=0))
    stacked = np.zeros((data.shape[0], len(rows), max(b.shape[1] for b in bands)))
    for row, band in enumerate(bands):
        stacked[:, row, : band.shape[1]] = band
    return stacked


def _parabola_peaks(grid: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``scores`` (rows: the evenly spaced ``grid``), the peak refined by the
    parabola through the best point and its neighbours, and whether the best point lies inside
    the grid (not at its first or last point)."""
    best = np.argmax(scores, axis=0)
    inside = (best > 0) & (best < len(grid) - 1)
    best = np.clip(best, 1, len(grid) - 2)
    columns = np.arange(scores.shape[1])
    before, at, after = (scores[best + k, columns] for k in (-1, 0, 1))
    curvature = before - 2 * at + after
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curvature < 0, 0.5 * (before - after) / curvature, 0.0)
    return grid[best] + np.clip(shift, -1, 1) * (grid[1] - grid[0]), inside


def _mirror_correlation(stacked: np.ndarray, centre: float, offsets: np.ndarray) -> np.ndarray:
    """Per row, the correlation of the band's slices at centre - offsets with those at
    centre + offsets (linear interpolation across the slices)."""
    left, right = (_across(stacked, centre + sign * offsets) for sign in (-1, +1))
    products = (left * right).sum(axis=(0, 2))
    norms = np.sqrt((left**2).sum(axis=(0, 2)) * (right**2).sum(axis=(0, 2)))
    return products / np.maximum(norms, 1e-12)


def _across(stacked: np.ndarray, positions: np.ndarray) -> np.ndarray:
    below = np.clip(np.floor(positions).astype(int), 0, stacked.shape[0] - 2)
    frac = (positions - below)[:, None, None]
    return (1 - frac) * stacked[below] + frac * stacked[below + 1]


def _canal_rows(canal: Canal) -> np.ndarray:
    """The rows z where the canal is found (two pixels or more)."""
    return np.flatnonzero(canal.mask.sum(axis=0) >= 2)


def _canal_centres(volume: Volume, canal: Canal) -> tuple[np.ndarray, np.ndarray]:
    """The rows z where the canal is found and its LR centre in each (fractional slice)."""
    mask = canal.mask
    rows = _canal_rows(canal)
    centres = np.array([_lr_centre(canal.polarity * volume.data[:, mask[:, k], k].mean(axis=1))
                        for k in rows])  # fmt: skip
    keep = np.isfinite(centres)
    if not keep.any():
        raise ValueError("no spinal canal found across the slices")
    return rows[keep], centres[keep]


def smooth_midline(rows: np.ndarray, centres: np.ndarray, shape, spacing_mm) -> np.ndarray:
    """The midline of every row z from its centres in some rows: a robust quadratic in z over
    those rows (rows a stray bright slice pulled off the curve dropped), held constant beyond
    them."""
    z_mm = rows * spacing_mm[2]
    coef = np.array([np.median(centres)])
    inlier = np.ones(len(rows), bool)
    if len(rows) >= 20:
        for _ in range(3):
            coef = np.polyfit(z_mm[inlier], centres[inlier], 2)
            residual = centres - np.polyval(coef, z_mm)
            inlier = np.abs(residual) <= max(3 * 1.4826 * np.median(np.abs(residual)), 0.1)
    all_z = np.clip(np.arange(shape[2]) * spacing_mm[2], z_mm.min(), z_mm.max())
    return np.clip(np.polyval(coef, all_z), 0, shape[0] - 1)


# a label map whose bodies are this wide across the slices holds the whole bodies (another
# tool's map, a manual tracing), not the few slices around a midline the built-in one labels
WHOLE_BODY_LABELS_MM = 15.0


def labels_midline(labels: np.ndarray, spacing_mm) -> np.ndarray | None:
    """The mid-sagittal surface from a label map of whole vertebral bodies: per row z the
    centroid of its body voxels across the slices (``smooth_midline``); None when the bodies
    are labelled only near a midline (narrower than WHOLE_BODY_LABELS_MM)."""
    bodies = (labels > 0) & (labels < 100)
    per_row = bodies.sum(axis=1)  # [x, z]: voxels per slice and row
    rows = np.flatnonzero(per_row.sum(axis=0) > 0)
    if not len(rows):
        return None
    width_slices = np.median([np.ptp(np.flatnonzero(per_row[:, k])) + 1 for k in rows])
    if width_slices * spacing_mm[0] < WHOLE_BODY_LABELS_MM:
        return None
    x = np.arange(labels.shape[0])
    centres = (per_row[:, rows] * x[:, None]).sum(axis=0) / per_row[:, rows].sum(axis=0)
    return smooth_midline(rows, centres, labels.shape, spacing_mm)


def find_midline_x(volume: Volume) -> float:
    """The mid-sagittal surface's slice position averaged over the rows (a single number)."""
    return float(np.mean(find_midline(volume)))


def plane_at(volume: Volume, x_index) -> np.ndarray:
    """2D [y, z] image on a sagittal surface at fractional slice position(s), one per row z or
    one for all (linear between neighbouring slices)."""
    x = np.broadcast_to(np.asarray(x_index, dtype=float), (volume.data.shape[2],))
    lower = np.clip(np.floor(x).astype(int), 0, volume.data.shape[0] - 1)
    upper = np.minimum(lower + 1, volume.data.shape[0] - 1)
    weight = np.clip(x - lower, 0.0, 1.0)
    z = np.arange(volume.data.shape[2])
    return (1 - weight) * volume.data[lower, :, z].T + weight * volume.data[upper, :, z].T


def sample(plane: np.ndarray, spacing_mm, points_mm: np.ndarray) -> np.ndarray:
    """Bilinear samples of a 2D [y, z] image at (y_mm, z_mm) points; NaN outside the image."""
    coords = (np.asarray(points_mm, dtype=float) / np.asarray(spacing_mm)).T
    values = ndimage.map_coordinates(plane, coords, order=1, mode="constant", cval=np.nan)
    return values


def inside_mm(plane_shape, spacing_mm, points_mm, margin_px: float = 0.5) -> np.ndarray:
    coords = np.asarray(points_mm) / np.asarray(spacing_mm)
    upper = np.asarray(plane_shape) - 1 - margin_px
    return np.all((coords >= margin_px) & (coords <= upper), axis=-1)
