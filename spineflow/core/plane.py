"""The mid-sagittal plane a disc is measured on: its image and labels sampled in mm, and a
disc's frame and result."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property

import nibabel as nib
import numpy as np
from scipy import ndimage

from spineflow.core.anatomy import VERTEBRA_LABELS
from spineflow.core.edges import EdgePixels
from spineflow.core.midsagittal import (
    Volume,
    find_midline,
    inside_mm,
    labels_midline,
    plane_at,
    sample,
)

CENTRAL_SHARE = 0.8  # height is averaged over the central 80 % of the disc's AP extent
# an endplate's first guess is read on profiles averaged along it over this half-width: a
# cortex fainter than the noise of one profile (disc SNR 15, an annulus as bright as marrow)
# stands out of the average of eleven
EDGE_AVERAGE_MM = 2.5
BORDER_PX = 1.5  # a structure this close to the image edge is cut by the field of view
BODY_LABELS = frozenset(VERTEBRA_LABELS.values())


@dataclass
class Frame:
    """A disc's frame in the mid-sagittal plane: origin and unit axes (mm, (y, z))."""

    origin: np.ndarray
    ap: np.ndarray  # along the mid-plane, pointing anterior
    up: np.ndarray  # perpendicular to it, pointing cranial

    def point(self, u, t):
        return self.origin + np.multiply.outer(u, self.ap) + np.multiply.outer(t, self.up)

    def coordinates(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        relative = points - self.origin
        return relative @ self.ap, relative @ self.up


@dataclass(frozen=True)
class Band:
    """The dark band an endplate shows between marrow and disc: the cortex's thickness and its
    signal as a share of the marrow's (0: bone alone)."""

    thickness_mm: float
    share: float = 0.0


@dataclass
class DiscResult:
    level: str
    status: str = "ok"
    note: str = ""
    height_mm: float = np.nan
    width_mm: float = np.nan
    frame: Frame | None = None
    upper_coef: np.ndarray | None = None  # t(u) polynomial of the upper vertebra's surface
    lower_coef: np.ndarray | None = None
    u_post: float = np.nan  # AP ends of the disc along its mid-plane (frame u, mm)
    u_ant: float = np.nan
    # posterior and anterior walls (frame u, mm) of the vertebrae above and below, by the disc
    upper_walls: tuple[float, float] = (np.nan, np.nan)
    lower_walls: tuple[float, float] = (np.nan, np.nan)
    walls_unseen: tuple[str, ...] = ()  # the sides (posterior, anterior) no wall confirmed
    # the surfaces (upper, lower) whose partial-volume fit ran away and did not settle when
    # refitted (``_refine_side``): left at the marrow edge
    unfitted: tuple[str, ...] = ()
    features: dict = field(default_factory=dict)

    @property
    def has_both_endplates(self) -> bool:
        """Whether both surfaces are located (not a far endplate, ``locate_far_endplate``)."""
        return self.upper_coef is not None and self.lower_coef is not None

    @property
    def upper_mid_u(self) -> float:
        """Middle of the upper vertebra's caudal endplate: between its walls, or between the
        disc's own ends where a wall was not found (the disc lies centred on its vertebrae)."""
        return self._middle(self.upper_walls)

    @property
    def lower_mid_u(self) -> float:
        return self._middle(self.lower_walls)

    def _middle(self, walls) -> float:
        return float(np.mean(walls)) if np.isfinite(walls).all() else (self.u_post + self.u_ant) / 2

    @property
    def centre_u(self) -> float:
        """Middle of the disc: half-way between its endplates' midpoints (the vertebrae's walls
        show more clearly than the disc's own ends)."""
        return (self.upper_mid_u + self.lower_mid_u) / 2

    @property
    def central_u(self) -> np.ndarray:
        return central_u(self.u_post, self.u_ant, self.centre_u)


def central_u(u_post: float, u_ant: float, centre_u: float) -> np.ndarray:
    """AP positions of the central 80 % of a disc, where its height is averaged."""
    half = CENTRAL_SHARE * (u_ant - u_post) / 2
    return np.linspace(centre_u - half, centre_u + half, 201)


class Plane:
    """The mid-sagittal surface: its image and labels, mm-based sampling, and raw pixels."""

    def __init__(
        self,
        volume: Volume,
        labels: np.ndarray,
        midline: np.ndarray | None = None,
        thickness_mm: float | None = None,
    ):
        self.volume = volume
        # the slices' own thickness (the spacing less any gap), when the sidecar tells it
        self.thickness_mm = float(thickness_mm or volume.spacing_mm[0])
        if midline is None:  # a map of whole bodies gives it; else the canal
            midline = labels_midline(labels, volume.spacing_mm)
        self.midline = find_midline(volume) if midline is None else np.asarray(midline)
        self.image = plane_at(volume, self.midline)
        nearest = np.clip(np.rint(self.midline).astype(int), 0, labels.shape[0] - 1)
        z = np.arange(labels.shape[2])
        self.labels = labels[nearest, :, z].T
        self.spacing = volume.plane_spacing_mm
        yy, zz = np.meshgrid(
            np.arange(self.image.shape[0]) * self.spacing[0],
            np.arange(self.image.shape[1]) * self.spacing[1],
            indexing="ij",
        )
        self.coords = np.stack([yy, zz], axis=-1)

    def beside(self, slices: int) -> Plane | None:
        """The surface ``slices`` slices to the side, with this one's labels (a disc lies at the
        same place there); None where it would leave the image's slices."""
        midline = self.midline + slices
        if midline.min() < 0 or midline.max() > self.volume.data.shape[0] - 1:
            return None
        other = copy.copy(self)
        other.midline = midline
        other.image = plane_at(self.volume, midline)
        other.__dict__.pop("noise_sigma", None)  # cached for the other surface
        return other

    def to_world(self, points_mm: np.ndarray) -> np.ndarray:
        """Scanner RAS mm of (y, z) mm points of the mid-sagittal surface."""
        points_mm = np.atleast_2d(points_mm)
        j, k = points_mm[:, 0] / self.spacing[0], points_mm[:, 1] / self.spacing[1]
        x = np.interp(k, np.arange(len(self.midline)), self.midline)
        return nib.affines.apply_affine(self.volume.affine, np.column_stack([x, j, k]))

    @cached_property
    def noise_sigma(self) -> float:
        """Image noise (SD) inside the vertebral bodies, from each pixel's difference to the
        mean of its four neighbours in its own slice (texture and edges excluded by eroding the
        bodies and by a robust spread)."""
        bodies = (self.labels > 0) & (self.labels < 100)
        inner = ndimage.binary_erosion(bodies, iterations=2)
        nearest = np.clip(np.rint(self.midline).astype(int), 0, self.volume.data.shape[0] - 1)
        image = self.volume.data[nearest, :, np.arange(self.labels.shape[1])].T.astype(float)
        neighbours = ndimage.convolve(image, np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]) / 4.0)
        residual = (image - neighbours)[inner]
        if residual.size < 50:
            return 0.0
        spread = 1.4826 * np.median(np.abs(residual - np.median(residual)))
        return float(spread / np.sqrt(1.25))

    def label_at(self, points: np.ndarray) -> np.ndarray:
        """The label of the pixel nearest each (y, z) mm point (0 outside the image)."""
        index = np.rint(np.atleast_2d(points) / self.spacing).astype(int)
        inside = ((index >= 0) & (index < self.labels.shape)).all(axis=1)
        found = np.zeros(len(index), dtype=self.labels.dtype)
        found[inside] = self.labels[index[inside, 0], index[inside, 1]]
        return found

    def points_of(self, label: int) -> np.ndarray:
        return self.coords[self.labels == label]

    def touches_border(self, label: int) -> bool:
        idx = np.argwhere(self.labels == label)
        if len(idx) == 0:
            return False
        upper = np.array(self.labels.shape) - 1 - BORDER_PX
        return bool((idx < BORDER_PX).any() or (idx > upper).any())

    def profile_along_ap(self, frame: Frame, u: np.ndarray, t: float) -> np.ndarray:
        """Samples along frame.ap at height t (NaN outside the image)."""
        return self.sample_mm(frame.point(u, np.full_like(u, t)))

    def profile(self, frame: Frame, u: float, t: np.ndarray, half_width_mm: float = 0.0):
        """Samples along frame.up at AP position u (NaN outside the image), averaged over
        AP positions within ``half_width_mm`` of u (every 0.5 mm)."""
        offsets = np.arange(-half_width_mm, half_width_mm + 1e-9, 0.5)
        with np.errstate(invalid="ignore"):
            return np.mean([self.sample_mm(frame.point(np.full_like(t, u + o), t))
                            for o in offsets], axis=0)  # fmt: skip

    def sample_mm(self, points: np.ndarray) -> np.ndarray:
        """Bilinear samples of the mid-sagittal image at (y, z) mm points (NaN outside)."""
        values = sample(self.image, self.spacing, points)
        values[~inside_mm(self.image.shape, self.spacing, points)] = np.nan
        return values

    def pixels(self, frame: Frame, keep) -> EdgePixels:
        """Raw pixels of the two slices on either side of the mid-sagittal surface, in the
        frame, where ``keep(u, t)`` holds; each weighted by its slice's nearness to the
        surface (the weights of a linear interpolation between the two)."""
        u, t = frame.coordinates(self.coords)
        inside = keep(u, t)
        inside[:1] = inside[-1:] = False
        inside[:, :1] = inside[:, -1:] = False
        j, k = np.nonzero(inside)
        x = self.midline[k]
        lower = np.clip(np.floor(x).astype(int), 0, self.volume.data.shape[0] - 1)
        upper = np.minimum(lower + 1, self.volume.data.shape[0] - 1)
        w_upper = np.clip(x - lower, 0.0, 1.0)
        values = np.concatenate([self.volume.data[lower, j, k], self.volume.data[upper, j, k]])
        weights = np.concatenate([1 - w_upper, w_upper])
        both = np.concatenate
        keep_rows = weights > 1e-3
        # the pixel's sides (along image y and z) in the frame's (u, t) coordinates
        aperture = np.array([[frame.ap[0], frame.up[0]], [frame.ap[1], frame.up[1]]])
        return EdgePixels(
            both([u[j, k], u[j, k]])[keep_rows],
            both([t[j, k], t[j, k]])[keep_rows],
            values[keep_rows].astype(float),
            weights[keep_rows],
            aperture * self.spacing[:, None],
            self.slab_mm(frame),
            both([lower, upper])[keep_rows],
        )

    def slab_mm(self, frame: Frame) -> float:
        """The slice thickness seen along the frame's cranial axis where that axis leaves the
        sagittal plane: the midline's lateral slope along the spine (a coronal tilt or curve)."""
        z_index = frame.origin[1] / self.spacing[1]
        slope = np.gradient(self.midline)[int(np.clip(round(z_index), 0, len(self.midline) - 1))]
        lateral_per_mm = slope * self.volume.spacing_mm[0] / self.spacing[1]
        return float(self.thickness_mm * abs(lateral_per_mm * frame.up[1]))


def load_labels(path, volume: Volume) -> np.ndarray:
    """Label map in the same canonical orientation as the image; grids must match."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    labels = np.asarray(image.dataobj).astype(np.int32)
    if labels.shape != volume.data.shape or not np.allclose(image.affine, volume.affine, atol=1e-3):
        raise ValueError(f"{path}: label map grid differs from the image it labels")
    return labels
