"""Disc height, disc width and intervertebral distance in millimetres (docs/DESIGN.md definitions).

Everything is measured on the spine's own mid-sagittal surface (``midsagittal.find_midline``).
The label map (built-in or external) only says where each structure is; edges are located in
the image itself:

1. a first guess of each endplate per AP position, from the first step out of the marrow on
   profiles across the disc (``edges.fit_edge``);
2. the endplate curve refined on the raw pixels of the two slices around the mid-sagittal
   surface with a partial-volume model (``edges.fit_endplate``), whose cortical thickness is
   estimated once per participant from all its sessions' endplates, with the signal of its
   band (``pooled_band``),
   unless the configuration fixes it;
3. the disc's AP ends fitted on the raw pixels beyond the vertebral walls, with a dark
   ligament of unknown thickness between the annulus and what lies beyond (``edges.fit_rim``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from functools import cached_property

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from . import LEVELS, VERTEBRAE, pfirrmann
from .edges import (
    RUN_AWAY_MM,
    EdgePixels,
    EndplateFit,
    aperture_cdf,
    fit_edge,
    fit_endplate,
    fit_rim,
    marrow_boundary,
    signed_depth,
)
from .gridsearch import refined_minimum
from .labels import VERTEBRA_LABELS, disc_label, vertebrae_between
from .midsagittal import Volume, find_midline, inside_mm, labels_midline, plane_at, sample

CENTRAL_SHARE = 0.8  # height is averaged over the central 80 % of the disc's AP extent
N_HEIGHT_PROFILES = 25
# how far outwards an endplate is sought past its label: a disc's label may hold as little
# as 3 mm of a 14 mm disc, a body's taking the rest (a nucleus as bright as marrow, seed 3's
# sub-17); a gap's, while the sacrum is sought, not so far (``segment.find_anchor``: a
# remnant's search must not reach the next sacral segment's end)
GAP_LABEL_SLIP_MM = (0.0, 2.5, 5.0)
DISC_LABEL_SLIP_MM = GAP_LABEL_SLIP_MM + (7.5, 10.0)
PROFILE_STEP_MM = 0.25
# an endplate's first guess is read on profiles averaged along it over this half-width: a
# cortex fainter than the noise of one profile (disc SNR 15, an annulus as bright as marrow)
# stands out of the average of eleven
EDGE_AVERAGE_MM = 2.5
BORDER_PX = 1.5  # a structure this close to the image edge is cut by the field of view
CORTEX_GRID_MM = np.round(np.arange(0.0, 1.31, 0.1), 2)  # candidate cortical thicknesses
# candidate signals of the cortex's band, as shares of the marrow's (``edges._model``)
BAND_SHARE_GRID = (0.0, 0.25, 0.5)
# a band with signal is taken only where the endplates reject bone alone, on average each at
# the 1 % level (chi-squared, one degree of freedom): a phantom's blurred black cortex can be
# matched a little better by a grey band, a real T2's dark line by far
BAND_EVIDENCE_PER_ENDPLATE = 6.63
BONE_WINDOW_MM = 3.5  # how far into the vertebra the endplate model looks
# how far into the disc: short of a nucleus brightening inwards, which the model's single disc
# level per AP bin would otherwise take for a cortex
DISC_WINDOW_MM = 1.2
TYPICAL_CORTEX_MM = 0.5
REWINDOWS = 2  # refits of an endplate that left its start (``_refine_side``)
CONVERGED_MM = 0.5  # a refit that moves less: its window no longer moves it
# how far from its start a refit may settle, either way: the first window's reach into the bone
REFIT_REACH_MM = BONE_WINDOW_MM
DISC_LEVELS = LEVELS + ("L2-L3",)  # L2-L3 gives L3's cranial endplate
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


# why an endplate is left at its marrow edge (``refine_disc``), in notes
UNFITTED = (
    f"partial-volume fit ran over {RUN_AWAY_MM:g} mm from the marrow edge and did not settle "
    "where it went"
)


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


def _principal_frame(points: np.ndarray) -> Frame:
    """Centroid and principal axes of a disc's pixels: the long axis is its AP direction."""
    centre = points.mean(axis=0)
    _, _, axes = np.linalg.svd(points - centre, full_matrices=False)
    ap = axes[0] * np.sign(axes[0][0] + 1e-12)  # anterior is +y
    up = np.array([-ap[1], ap[0]])
    up *= np.sign(up[1] + 1e-12)  # cranial is +z
    return Frame(centre, ap, up)


def _extent(points: np.ndarray, frame: Frame, axis: np.ndarray) -> tuple[float, float]:
    projection = (points - frame.origin) @ axis
    return float(projection.min()), float(projection.max())


def _ap_boundary(plane: Plane, frame: Frame, guess_u: float, direction: int) -> float:
    """Sub-pixel AP end of the disc along its mid-plane (direction -1 posterior, +1 anterior).

    The same first-step criterion as for endplates, walking out of the disc's rim: the annulus
    ends where the signal first steps to the ligament, fat or fluid outside. Five parallel lines
    within 1 mm of the mid-plane are averaged against noise.
    """
    u = guess_u + np.arange(-10.0, 10.0 + 1e-9, PROFILE_STEP_MM)
    lines = [plane.profile_along_ap(frame, u, t) for t in np.linspace(-1.0, 1.0, 5)]
    values = np.nanmean(lines, axis=0)
    # the annulus is a few mm wide: a short plateau keeps the nucleus out of its level
    crossing = marrow_boundary(u, values, guess_u, -direction, plateau_mm=(1.0, 4.0))
    return float(crossing) if np.isfinite(crossing) else float(guess_u)


def _label_guesses(points: np.ndarray, frame: Frame, u_values) -> tuple[np.ndarray, np.ndarray]:
    """Per AP position, the label's cranial and caudal limits (first guesses of the edges)."""
    u_of, t_of = frame.coordinates(points)
    up, down = [], []
    for u in u_values:
        near = np.abs(u_of - u) <= 1.5
        if near.sum() == 0:
            near = np.abs(u_of - u) <= np.abs(u_of - u).min() + 0.5
        up.append(t_of[near].max())
        down.append(t_of[near].min())
    return np.array(up), np.array(down)


def _edges_across(plane: Plane, frame: Frame, u_values, guesses_up, guesses_down, slips_mm):
    """Marrow edges (t along frame.up) at each AP position u: upper and lower vertebra.

    A side found in too few profiles is searched again from guesses moved outwards by
    ``slips_mm`` in turn: a label map may end short of an endplate (a bright nucleus next to
    bright marrow taken for bone), and the search reaches only a few mm past its guess."""
    upper = _edges_on_side(plane, frame, u_values, guesses_up, guesses_down, +1, slips_mm)
    lower = _edges_on_side(plane, frame, u_values, guesses_down, guesses_up, -1, slips_mm)
    return upper, lower


def _averaged_noise(plane: Plane) -> float:
    """The noise of a profile averaged over EDGE_AVERAGE_MM either side (``Plane.profile``):
    the image's, over the pixels the average spans."""
    spanned = 1.0 + 2.0 * EDGE_AVERAGE_MM / float(plane.spacing.min())
    return plane.noise_sigma / np.sqrt(spanned)


def _edges_on_side(plane, frame, u_values, guesses, other_side, side, slips_mm):
    edges = np.full(len(u_values), np.nan)
    line_noise = _averaged_noise(plane) if plane.noise_sigma > 0 else None
    for slip in slips_mm:
        for k, u in enumerate(u_values):
            guess = guesses[k] + side * slip
            mid = (guesses[k] + other_side[k]) / 2
            t = np.arange(mid, guess + side * 9.0, side * PROFILE_STEP_MM)
            profile = plane.profile(frame, u, t, EDGE_AVERAGE_MM)
            edges[k] = fit_edge(t, profile, guess, side, 0.0, line_noise=line_noise)
        if _found_in_most(edges):
            break
    return edges


def _robust_curve(u: np.ndarray, t: np.ndarray, degree: int = 2):
    """Quadratic through the edge points, dropping points > 3 robust SDs off (twice)."""
    keep = np.isfinite(t)
    for _ in range(2):
        if keep.sum() < degree + 3:
            return None
        coef = np.polyfit(u[keep], t[keep], degree)
        residual = t - np.polyval(coef, u)
        spread = 1.4826 * np.median(np.abs(residual[keep])) + 0.05
        keep &= np.abs(residual) < 3 * spread
    return np.polyfit(u[keep], t[keep], degree) if keep.sum() >= degree + 3 else None


def _curve_if_enough(u_values: np.ndarray, edges: np.ndarray):
    """The endplate curve, when most profiles found the edge (``_found_in_most``)."""
    return _robust_curve(u_values, edges) if _found_in_most(edges) else None


def _found_in_most(edges: np.ndarray) -> bool:
    """Whether at least 60 % of the profiles found the edge."""
    return bool(np.isfinite(edges).sum() >= 0.6 * len(edges))


def _reframe(frame: Frame, coefs: list[np.ndarray], centre_u: float) -> tuple[Frame, list]:
    """The frame re-aligned with the bisector of the two endplates' tangents at the centre,
    and the curves expressed in it (refitted through points sampled on them)."""
    slope = np.mean([np.polyval(np.polyder(c), centre_u) for c in coefs])
    offset = np.mean([np.polyval(c, centre_u) for c in coefs])
    angle = np.arctan(slope)
    ap = np.cos(angle) * frame.ap + np.sin(angle) * frame.up
    up = -np.sin(angle) * frame.ap + np.cos(angle) * frame.up
    new = Frame(frame.origin + centre_u * frame.ap + offset * frame.up, ap, up)
    u = np.linspace(-25.0, 25.0, 101) + centre_u
    moved = []
    for coef in coefs:
        new_u, new_t = new.coordinates(frame.point(u, np.polyval(coef, u)))
        moved.append(np.polyfit(new_u, new_t, len(coef) - 1))
    return new, moved


def locate_disc(plane: Plane, level: str) -> DiscResult:
    """Status, frame, AP ends and first-guess marrow edges of one disc (no cortex yet)."""
    upper = level.split("-")[0]
    return _locate(plane, level, disc_label(upper), VERTEBRA_LABELS[upper], DISC_LABEL_SLIP_MM)


def locate_gap(plane: Plane, gap_label: int, upper_label: int) -> DiscResult:
    """Any labelled gap between two bodies located like a disc: its height between the marrow
    edges (NaN if it cannot be measured: what tells a disc from a fused sacral remnant), its
    frame (the tilt of its mid-plane), and the status of the measurement (ok, not_in_fov: cut
    by the image, failed: no endplates seen)."""
    return _locate(plane, "gap", gap_label, upper_label, GAP_LABEL_SLIP_MM)


def _locate(plane: Plane, level: str, label: int, upper_label: int, slips_mm) -> DiscResult:
    result = DiscResult(level)
    points = plane.points_of(label)
    if plane.touches_border(label):
        result.status, result.note = "not_in_fov", "cut by the edge of the field of view"
        return result
    if len(points) < 10 or upper_label not in plane.labels:
        result.status, result.note = _missing_status(plane, label, len(points) >= 10)
        return result
    frame = _principal_frame(points)
    for _ in range(2):
        u_lo, u_hi = _extent(points, frame, frame.ap)
        result.u_post = _ap_boundary(plane, frame, u_lo, -1)
        result.u_ant = _ap_boundary(plane, frame, u_hi, +1)
        half = CENTRAL_SHARE * (result.u_ant - result.u_post) / 2
        centre_u = (result.u_ant + result.u_post) / 2
        u_values = np.linspace(centre_u - half, centre_u + half, N_HEIGHT_PROFILES)
        guesses = _label_guesses(points, frame, u_values)
        upper, lower = _edges_across(plane, frame, u_values, *guesses, slips_mm)
        upper_coef, lower_coef = (
            _curve_if_enough(u_values, upper),
            _curve_if_enough(u_values, lower),
        )
        if upper_coef is None or lower_coef is None:
            result.status, result.note = "failed", "endplates not found in most profiles"
            return result
        frame, (upper_coef, lower_coef) = _reframe(frame, [upper_coef, lower_coef], centre_u)
        result.u_post, result.u_ant = result.u_post - centre_u, result.u_ant - centre_u
        result.frame, result.upper_coef, result.lower_coef = frame, upper_coef, lower_coef
    dropped = int(np.sum(~(np.isfinite(upper) & np.isfinite(lower))))
    if dropped:
        result.note = f"{dropped} of {N_HEIGHT_PROFILES} profiles without a clear edge"
    result.upper_walls = vertebra_walls(plane, result, +1)
    result.lower_walls = vertebra_walls(plane, result, -1)
    _walls_from_body_labels(plane, result)
    walls = np.array([result.upper_walls, result.lower_walls])
    unseen = []
    for end, direction in ((0, -1), (1, +1)):  # the ends once more, from the walls outwards
        side = ("posterior", "anterior")[end]
        found_walls = walls[:, end][np.isfinite(walls[:, end])]
        if not found_walls.size:  # no wall confirms the end the labels suggest
            unseen.append(f"{side} wall not found")
            result.walls_unseen += (side,)
            continue
        found = _disc_end(plane, result, float(found_walls.mean()), direction)
        if not np.isfinite(found):  # tissue as bright as the disc against it
            unseen.append(f"{side} rim not seen")
        elif end == 0:
            result.u_post = found
        else:
            result.u_ant = found
    result.height_mm = _mean_height(result)
    result.width_mm = float("nan") if unseen else float(result.u_ant - result.u_post)
    if unseen:
        result.note = "; ".join(filter(None, [result.note, " and ".join(unseen) + ": no width"]))
    return result


def vertebra_walls(plane: Plane, disc: DiscResult, side: int, from_body_label: bool = False):
    """Posterior and anterior marrow edges (frame u) of the vertebra above (side +1) or below
    (side -1) the disc, where its walls meet its endplate: found on lines parallel to the
    endplate 2-5 mm into the bone (the first step out of the marrow towards each wall, sought
    from the disc's own ends, or with ``from_body_label`` from the ends of the body's label on
    those lines; NaN where not found), then followed along the walls, which stand square to the
    endplate, back to it. On a wedged disc the endplate is tilted in the disc's frame, and the
    walls' places 2-5 mm into the bone lie off their feet by that depth times the tilt: enough
    to move the disc's middle, and so its mean height, on a lordotic L5-S1."""
    coef = getattr(disc, _edge_name(side))
    u = np.arange(disc.u_post - 12.0, disc.u_ant + 12.0, PROFILE_STEP_MM)
    depths_mm = (2.0, 3.0, 4.0, 5.0)

    def line(depth_mm):
        return disc.frame.point(u, np.polyval(coef, u) + side * depth_mm)

    values = np.nanmean([plane.sample_mm(line(depth)) for depth in depths_mm], axis=0)
    # the endplate's tilt where the body's axis stands: at the disc's middle (a concave
    # endplate slopes more at its rim than the body leans)
    tilt = np.polyval(np.polyder(coef), (disc.u_post + disc.u_ant) / 2)
    to_foot = side * tilt * float(np.mean(depths_mm))
    if from_body_label:
        middle = line(float(np.mean(depths_mm)))
        guesses = _body_label_run(plane, middle, u, (disc.u_post + disc.u_ant) / 2)
    else:
        guesses = (disc.u_post, disc.u_ant)
    posterior = marrow_boundary(u, values, guesses[0], +1)
    anterior = marrow_boundary(u, values, guesses[1], -1)
    return posterior + to_foot, anterior + to_foot


def _walls_from_body_labels(plane: Plane, disc: DiscResult) -> None:
    """Where neither vertebra's wall was found at an AP end of the disc, both sought again from
    their bodies' labels (``vertebra_walls``): a T2's dark outer annulus and ligament can end
    the disc's first extent at its nucleus, millimetres short of the walls."""
    walls = np.array([disc.upper_walls, disc.lower_walls])
    missing = ~np.isfinite(walls).any(axis=0)
    if missing.any():
        from_labels = np.array([vertebra_walls(plane, disc, vertebra, from_body_label=True)
                                for vertebra in (+1, -1)])  # fmt: skip
        walls[:, missing] = from_labels[:, missing]
        disc.upper_walls, disc.lower_walls = tuple(walls[0]), tuple(walls[1])


def _body_label_run(plane: Plane, points: np.ndarray, u: np.ndarray, centre_u: float):
    """AP ends (u) of the vertebral body's label that holds the point at ``centre_u`` of a line
    into the bone: NaN where no body's label lies there or the run reaches the line's end."""
    labels = plane.label_at(points)
    centre = int(np.argmin(np.abs(u - centre_u)))
    if labels[centre] not in BODY_LABELS:
        return float("nan"), float("nan")
    other = np.flatnonzero(labels != labels[centre])
    before, after = other[other < centre], other[other > centre]
    if not (before.size and after.size):
        return float("nan"), float("nan")
    return float(u[before.max() + 1]), float(u[after.min() - 1])


def _disc_end(plane: Plane, disc: DiscResult, wall_u: float, direction: int) -> float:
    """AP end of the disc along its mid-plane (direction -1 posterior, +1 anterior), from the
    vertebral walls' marrow edges: the rim of a partial-volume fit (``edges.fit_rim``) to the
    raw pixels within 1.5 mm of the mid-plane (less where the disc is thin), sought between
    0.5 mm inside the walls and 4 mm beyond them (cortex, then the bulge)."""
    guess = wall_u + direction * 1.0  # the wall's cortex, then the bulge

    def mid(u):
        return (np.polyval(disc.upper_coef, u) + np.polyval(disc.lower_coef, u)) / 2

    height_mm = np.polyval(disc.upper_coef, guess) - np.polyval(disc.lower_coef, guess)
    half_mm = float(np.clip(0.3 * height_mm, 0.5, 1.5))

    def keep(u, t):
        outward = direction * (u - guess)
        return (outward >= -4.0) & (outward <= 5.0) & (np.abs(t - mid(u)) <= half_mm)

    pixels = plane.pixels(disc.frame, keep)
    widths = np.tile(np.abs(pixels.aperture[:, 0]), (len(pixels.u), 1))  # along the AP axis
    outward = direction * (pixels.u - guess)
    found = fit_rim(outward, widths, pixels.value, pixels.weight, (-1.5, 3.0), plane.noise_sigma,
                    pixels.slices)  # fmt: skip
    return guess + direction * found


def geometry_record(plane: Plane, disc: DiscResult) -> dict:
    """What the longitudinal step needs of a measured disc, in scanner RAS mm: the frame's
    origin and axes (linearised at the origin), the endplate curves and AP positions in it."""
    record = {"level": disc.level, "status": disc.status}
    if disc.status != "ok":
        return record
    frame = disc.frame
    origin, ap_end, up_end = plane.to_world(
        np.array([frame.origin, frame.origin + frame.ap, frame.origin + frame.up])
    )
    ap, up = ap_end - origin, up_end - origin
    record.update(
        origin_ras=origin.tolist(),
        ap_ras=(ap / np.linalg.norm(ap)).tolist(),
        up_ras=(up / np.linalg.norm(up)).tolist(),
        upper_coef=np.asarray(disc.upper_coef).tolist(),
        lower_coef=np.asarray(disc.lower_coef).tolist(),
        **{k: float(getattr(disc, k)) for k in ("u_post", "u_ant", "upper_mid_u", "lower_mid_u")},
        height_mm=float(disc.height_mm),
    )
    return record


def _mean_height(disc: DiscResult) -> float:
    u = disc.central_u
    return float(np.mean(np.polyval(disc.upper_coef, u) - np.polyval(disc.lower_coef, u)))


# ------------------------------------------------------------------ endplate refinement


def _endplate_pixels(plane: Plane, disc: DiscResult, side: int) -> EdgePixels:
    """Pixels around one endplate over the disc's central AP extent, the same for every
    candidate cortex (their residuals are compared): from the surface a typical cortex would
    give, into the bone up to BONE_WINDOW_MM, into the disc up to DISC_WINDOW_MM (and 40 % of
    its height), or a pixel further where that holds no pixel wholly in the disc to set the
    disc's level (an endplate along the pixel grid puts a whole row just short). Only then:
    reaching further wherever few pixels lay wholly in the disc let 1.2 mm pixels see the
    nucleus brighten (their cortex came out 0.1 mm thick, their heights 0.3-0.5 mm low)."""
    coef = _surface_guess(disc, side, TYPICAL_CORTEX_MM)
    u = disc.central_u
    height = disc.height_mm if np.isfinite(disc.height_mm) else 0.0  # a remnant: thin
    into_disc = float(np.clip(0.4 * height, 1.0, DISC_WINDOW_MM))

    def window(reach_mm):
        def keep(pixel_u, pixel_t):
            depth = side * (pixel_t - np.polyval(coef, pixel_u))
            inside = (pixel_u >= u[0]) & (pixel_u <= u[-1])
            return inside & (depth > -reach_mm) & (depth < BONE_WINDOW_MM)

        pixels = plane.pixels(disc.frame, keep)
        return pixels.select(np.isfinite(pixels.value))

    pixels = window(into_disc)
    depth, widths = signed_depth(pixels, coef, side)
    if not np.any(aperture_cdf(-depth, widths) > 0.99):
        pixels = window(into_disc + plane.spacing.max())
    return pixels


def _fit_side(disc: DiscResult, pixels: EdgePixels, side: int, band: Band, noise_sd: float):
    """Surface curve of one endplate for a given cortex band, from ``_surface_guess``."""
    start = _surface_guess(disc, side, band.thickness_mm)
    return fit_endplate(pixels, start, side, band.thickness_mm, noise_sd,
                        band_share=band.share)  # fmt: skip


def _surface_guess(disc: DiscResult, side: int, cortex_mm: float) -> np.ndarray:
    """The endplate's marrow edge moved towards the disc by the cortex: where its surface lies
    for that cortex (side +1: the upper vertebra's)."""
    coef = np.array(getattr(disc, _edge_name(side)), dtype=float)
    coef[-1] -= side * cortex_mm
    return coef


def cortex_misfits(plane: Plane, discs: list[DiscResult]) -> list[np.ndarray]:
    """How badly each candidate cortex band (``BAND_SHARE_GRID`` x ``CORTEX_GRID_MM``) explains
    each of the discs' endplates: one array per endplate (a row per band share), its squared
    residuals scaled by its own residual variance under the best band of bone alone (noisy
    and clean endplates count alike; differences are chi-squared), inf where the fit ran
    away. Only endplates fitted with bone alone at every thickness."""
    candidates = [Band(c, share) for share in BAND_SHARE_GRID for c in CORTEX_GRID_MM]
    shape = (len(BAND_SHARE_GRID), len(CORTEX_GRID_MM))
    curves = []
    for disc in discs:
        for side in (+1, -1):
            pixels = _endplate_pixels(plane, disc, side)
            fits = [_fit_side(disc, pixels, side, band, plane.noise_sigma) for band in candidates]
            sse = np.array([f.sse if f and f.held else np.inf for f in fits]).reshape(shape)
            if np.isfinite(sse[0]).all():
                curves.append(sse / (sse[0].min() / max(fits[0].dof, 1)))
    return curves


def pooled_band(fits: list[dict]) -> tuple[Band, int, int]:
    """The cortex band that best explains every endplate of the given cortex fits (a
    participant's sessions: the endplates do not change between them, their estimate's noise
    would) at once. Bone alone unless a band with signal beats it, on the endplates fitted
    with both, by BAND_EVIDENCE_PER_ENDPLATE per endplate (the share that beats it by most);
    the thickness is the minimum of the chosen share's summed misfits, refined by the parabola
    through the best grid point. Returns the band (NaN thickness when no endplate was fitted)
    and the endplates and sessions it rests on. ``fits``: records of ``cortex_fit``."""
    fits = [f for f in fits if f["Endplates"] > 0]
    if not fits:
        return Band(float("nan"), 0.0), 0, 0
    for fit in fits:
        grid = np.asarray(fit["GridMillimetres"], float)
        shares = np.asarray(fit.get("BandShares", ()), float)
        if (grid.shape != CORTEX_GRID_MM.shape or not np.allclose(grid, CORTEX_GRID_MM)
                or shares.shape != np.shape(BAND_SHARE_GRID)
                or not np.allclose(shares, BAND_SHARE_GRID)):  # fmt: skip
            raise ValueError("cortex fit made on another candidate grid: re-run its session")
    # null: the band's fit ran away
    curves = np.array([c for f in fits for c in f["EndplateMisfits"]], dtype=float)
    gains = [0.0]  # per endplate fitted with both, over bone alone
    for share_row in range(1, len(BAND_SHARE_GRID)):
        both = curves[np.isfinite(curves[:, share_row]).all(axis=1)]
        gain = (
            both[:, 0].sum(axis=0).min() - both[:, share_row].sum(axis=0).min() if len(both) else 0
        )
        gains.append(gain / max(len(both), 1))
    row = int(np.argmax(gains)) if max(gains) >= BAND_EVIDENCE_PER_ENDPLATE else 0
    used = curves[np.isfinite(curves[:, row]).all(axis=1)]
    total = used[:, row].sum(axis=0)
    best = refined_minimum(CORTEX_GRID_MM, total)
    if best is None:  # the thinnest or thickest candidate
        best = float(CORTEX_GRID_MM[int(np.argmin(total))])
    return Band(best, BAND_SHARE_GRID[row]), len(used), len(fits)


def _located_discs(plane: Plane) -> dict[str, DiscResult]:
    """Every level's disc located on the plane, with the far endplate below S1 and, for each
    vertebra whose disc above was not located, its cranial endplate found from its disc below
    (``locate_far_endplate``; under ``cranial_key``: the field of view may cut a disc and leave
    the endplate below it in view)."""
    located = {level: locate_disc(plane, level) for level in DISC_LEVELS}
    located["S1-S2"] = locate_far_endplate(plane, located["L5-S1"], -1)
    for above, below in zip(DISC_ORDER[:-1], DISC_ORDER[1:]):
        if located[above].status != "ok":
            far = locate_far_endplate(plane, located[below], +1)
            if far.status == "ok" or located[above].status == "failed":
                located[cranial_key(above)] = far
    return located


DISC_ORDER = ("L2-L3", *LEVELS)  # cranial to caudal


def cranial_key(level: str) -> str:
    """Key of the vertebra below a disc's cranial endplate found without the disc."""
    return f"{level} from below"


def _whole_discs(located: dict[str, DiscResult]) -> list[DiscResult]:
    return [d for d in located.values() if d.status == "ok" and d.has_both_endplates]


def cortex_fit(volume: Volume, labels: np.ndarray, thickness_mm: float | None = None,
               midline: np.ndarray | None = None) -> dict:  # fmt: skip
    """One session's cortex misfit as a record for ``pooled_band``."""
    plane = Plane(volume, labels, midline, thickness_mm)
    return _cortex_record(plane, _located_discs(plane))


def _cortex_record(plane: Plane, located: dict[str, DiscResult]) -> dict:
    curves = cortex_misfits(plane, _whole_discs(located))
    return {"GridMillimetres": CORTEX_GRID_MM.tolist(), "BandShares": list(BAND_SHARE_GRID),
            "EndplateMisfits": [np.where(np.isfinite(c), c, None).tolist() for c in curves],
            "Endplates": len(curves)}  # fmt: skip


def refine_disc(plane: Plane, disc: DiscResult, band: Band) -> DiscResult:
    """The disc's endplates refined on the raw pixels (``_refine_side``), those whose fit ran
    away named in ``unfitted``; a far endplate (``locate_far_endplate``) has one side only."""
    refined = replace(disc)
    for side, name in ((+1, "upper"), (-1, "lower")):
        if getattr(disc, f"{name}_coef") is None:
            continue
        coef, fitted = _refine_side(plane, disc, side, band)
        setattr(refined, f"{name}_coef", coef)
        refined.unfitted += () if fitted else (name,)
    if refined.has_both_endplates:
        refined.height_mm = _mean_height(refined)
    return refined


# ------------------------------------------------------------------ a vertebra's far endplate

# a vertebral body's far endplate lies this far from its endplate at the disc (S1 to the S1-S2
# remnant, L3 to L2-L3: lumbar bodies are 20-35 mm tall, S1 a little less)
BODY_SEARCH_MM = (10.0, 45.0)
TREND_WINDOW_MM = 15.0  # the marrow's running level along a body (``_detrended``)


def _far_endplate_names(level: str, side: int) -> tuple[str, str]:
    """The level a far endplate found from a disc stands for, and its name in notes: below
    L5-S1 (side -1), S1's caudal endplate (the S1-S2 remnant); above a disc X-Y (+1), X's
    cranial endplate (the disc above X)."""
    if side < 0:
        return "S1-S2", "S1's caudal"
    vertebra = level.split("-")[0]
    return _neighbour_discs(vertebra)[0], f"{vertebra}'s cranial"


def _detrended(profile: np.ndarray) -> np.ndarray:
    """A profile over its running median (TREND_WINDOW_MM): a body's marrow drifts over its
    height (residual bias field, texture) by more than the step tolerance, an endplate is a
    step within a few millimetres."""
    finite = np.isfinite(profile)
    if not finite.any():
        return profile
    window = int(round(TREND_WINDOW_MM / PROFILE_STEP_MM)) | 1
    filled = np.where(finite, profile, np.nanmedian(profile))
    trend = ndimage.median_filter(filled, window, mode="nearest")
    return np.where(finite, profile / np.maximum(trend, 1e-6), np.nan)


def locate_far_endplate(plane: Plane, disc: DiscResult, side: int) -> DiscResult:
    """The other endplate of the vertebra on one side of a measured disc (side -1: S1 below
    L5-S1, its caudal endplate, the S1-S2 remnant's cranial side; +1: e.g. L3 above L3-L4, its
    cranial endplate, L2-L3's caudal side): along the body's axis, the first step out of its
    marrow BODY_SEARCH_MM from the disc, on profiles averaged over EDGE_AVERAGE_MM along it
    (the sacral junction may be a thin dark line fainter than one profile's noise).

    Segmentations rarely give the sacral remnant (SPINEPS and TotalSpineSeg label the sacrum as
    one), and in a curved sacrum it is too thin to trace along the column; and where the field
    of view ends inside the disc above a vertebra, its cranial endplate is in view without a
    disc to locate it by. Either way the body is one block of marrow with the endplate at its
    far end. The result is a ``DiscResult`` of that level with only the body's surface."""
    level, name = _far_endplate_names(disc.level, side)
    result = DiscResult(level)
    if disc.status != "ok":
        result.status, result.note = disc.status, f"{disc.level} {disc.note}".strip()
        return result
    coef = disc.lower_coef if side < 0 else disc.upper_coef
    u0 = disc.lower_mid_u if side < 0 else disc.upper_mid_u
    u0 = u0 if np.isfinite(u0) else disc.centre_u
    base = disc.frame
    angle = np.arctan(np.polyval(np.polyder(coef), u0))
    ap = np.cos(angle) * base.ap + np.sin(angle) * base.up
    up = -np.sin(angle) * base.ap + np.cos(angle) * base.up
    frame = Frame(base.point(u0, np.polyval(coef, u0)), ap, up)
    half = 0.3 * (disc.u_ant - disc.u_post)
    u_values = np.linspace(-half, half, N_HEIGHT_PROFILES)
    t = side * np.arange(BODY_SEARCH_MM[0] - 8.0, BODY_SEARCH_MM[1] + 8.0, PROFILE_STEP_MM)
    profiles = [plane.profile(frame, u, t, EDGE_AVERAGE_MM) for u in u_values]
    noise = _averaged_noise(plane)
    edges = np.array([
        marrow_boundary(t, _detrended(values), side * BODY_SEARCH_MM[0], -side,
                        plateau_mm=(2.0, 6.0), reach_mm=BODY_SEARCH_MM[1] - BODY_SEARCH_MM[0],
                        noise_sd=noise / max(np.nanmedian(values), 1e-6))
        for values in profiles
    ])  # fmt: skip
    found = _curve_if_enough(u_values, edges)
    if found is None:
        cut = np.mean([np.isnan(values).any() for values in profiles]) > 0.4
        result.status, result.note = (
            ("not_in_fov", f"{name} endplate outside the field of view")
            if cut
            else ("failed", f"{name} endplate not found")
        )
        return result
    result.frame = frame
    result.u_post, result.u_ant = disc.u_post - u0, disc.u_ant - u0
    if side < 0:
        result.upper_coef = found
        result.upper_walls = vertebra_walls(plane, result, +1)
    else:
        result.lower_coef = found
        result.lower_walls = vertebra_walls(plane, result, -1)
    return result


def _refine_side(plane: Plane, disc: DiscResult, side: int, band: Band):
    """One endplate's surface and whether it was fitted: the partial-volume fit, else the marrow
    edge moved by the cortex. A fit that leaves its start (``EndplateFit.held``) is fitted again
    in a window around where it went, at most REWINDOWS times (the marrow edge's quadratic can
    bend into a body's rounded corners, a millimetre or two off the endplate): kept once a refit
    stays where the one before it went (``_settled``)."""
    start = _surface_guess(disc, side, band.thickness_mm)
    recentred = disc
    for attempt in range(REWINDOWS + 1):
        pixels = _endplate_pixels(plane, recentred, side)
        fit = _fit_side(recentred, pixels, side, band, plane.noise_sigma)
        if fit is None:
            break
        if fit.held if attempt == 0 else _settled(fit, start, disc.central_u):
            return fit.coef, True
        recentred = replace(disc, **{_edge_name(side): _marrow_edge(fit.coef, side, band)})
    return start, False


def _settled(fit: EndplateFit, start: np.ndarray, u: np.ndarray) -> bool:
    """A refit that its window no longer moves (CONVERGED_MM), within REFIT_REACH_MM of the
    start over the AP positions ``u``."""
    from_start = np.abs(np.polyval(fit.coef, u) - np.polyval(start, u)).max()
    return fit.moved_mm <= CONVERGED_MM and from_start <= REFIT_REACH_MM


def _edge_name(side: int) -> str:
    return "upper_coef" if side > 0 else "lower_coef"


def _marrow_edge(surface: np.ndarray, side: int, band: Band) -> np.ndarray:
    """The marrow edge behind an endplate surface: ``_surface_guess`` undone."""
    coef = np.array(surface, dtype=float)
    coef[-1] += side * band.thickness_mm
    return coef


# ------------------------------------------------------------------ statuses and distances


def _missing_status(plane: Plane, label: int, disc_labelled: bool) -> tuple[str, str]:
    """A disc without its labels (``disc_labelled``: its own label is there, the vertebra
    above it is not): above the highest labelled structure means out of view."""
    present = [lab for lab in np.unique(plane.labels) if lab > 0]
    if not present:
        return "failed", "no structures segmented"
    vertebra_of = {100 + v: v for v in VERTEBRA_LABELS.values()}
    rank = vertebra_of.get(label, label)
    highest = min(vertebra_of.get(lab, lab) for lab in present)  # lower label = more cranial
    top_structure = min(present, key=lambda lab: vertebra_of.get(lab, lab))
    if rank < highest or (rank == highest and plane.touches_border(top_structure)):
        return "not_in_fov", "above the field of view"
    if disc_labelled:
        return "failed", "the label map has no label for the vertebra above the disc"
    return "failed", "not in the label map: neither the disc nor both its vertebrae"


def endplate_midpoint(disc: DiscResult, side: str):
    """Point on one endplate surface at the middle of that endplate's AP extent (None if the
    vertebra's walls were not found). side: "upper" for the vertebra above the disc (its caudal
    endplate), "lower" for the one below."""
    coef, u_mid = (
        (disc.upper_coef, disc.upper_mid_u)
        if side == "upper"
        else (disc.lower_coef, disc.lower_mid_u)
    )
    if coef is None or not np.isfinite(u_mid):
        return None
    return disc.frame.point(u_mid, np.polyval(coef, u_mid))


def _neighbour_discs(name: str) -> tuple[str, str]:
    order = vertebrae_between("L2", "S2")
    i = order.index(name)
    return f"{order[i - 1]}-{name}", f"{name}-{order[i + 1]}"


def _intervertebral_distance(plane: Plane, discs: dict, name: str) -> dict:
    above, below = _neighbour_discs(name)
    row = {"vertebra": name, "intervertebral_distance_mm": np.nan, "status": "ok", "note": ""}
    over = discs.get(cranial_key(above), discs[above])  # the cranial endplate's carrier
    # the endplates' own discs tell whether they lie in view (the body's label may touch the
    # image edge elsewhere: a sacrum running out of a small field of view)
    if "not_in_fov" in (over.status, discs[below].status):
        row["status"], row["note"] = "not_in_fov", "an endplate is outside the field of view"
        return row
    carriers = {above: (over, "lower"), below: (discs[below], "upper")}
    failed = [f"{d} {result.note}" for d, (result, surface) in carriers.items()
              if getattr(result, f"{surface}_coef") is None]  # fmt: skip
    failed += [f"{d}: the endplate's {UNFITTED}" for d, (result, surface) in carriers.items()
               if surface in result.unfitted]  # fmt: skip
    if failed:
        row["status"], row["note"] = "failed", "endplate not measured: " + "; ".join(failed)
        return row
    cranial = endplate_midpoint(over, "lower")
    caudal = endplate_midpoint(discs[below], "upper")
    if cranial is None or caudal is None:
        row["status"], row["note"] = "failed", "endplate midpoint not found"
        return row
    row["intervertebral_distance_mm"] = float(np.linalg.norm(cranial - caudal))
    return row


# ------------------------------------------------------------------ one session


def _csf_level(plane: Plane, disc: DiscResult) -> float:
    """CSF signal beside the disc: the brightest tenth of the canal band behind it."""
    u, t = np.meshgrid(disc.u_post - np.arange(2.0, 16.0, 0.5), [-2.0, 0.0, 2.0])
    values = plane.sample_mm(disc.frame.point(u.ravel(), t.ravel()))
    values = values[np.isfinite(values)]
    return float(np.percentile(values, 90)) if values.size else float("nan")


def _grade(plane: Plane, disc: DiscResult, neighbours: list[DiscResult]) -> dict:
    """Pfirrmann features and automatic grade of a measured disc (``pfirrmann``)."""

    def inside(u, t):
        return (
            (u > disc.u_post)
            & (u < disc.u_ant)
            & (t < np.polyval(disc.upper_coef, u))
            & (t > np.polyval(disc.lower_coef, u))
        )

    features = pfirrmann.disc_features(plane.pixels(disc.frame, inside), disc,
                                       _csf_level(plane, disc))  # fmt: skip
    heights = [d.height_mm for d in neighbours
               if d.status == "ok" and np.isfinite(d.height_mm) and d is not disc]  # fmt: skip
    features["height_ratio"] = disc.height_mm / np.mean(heights) if heights else np.nan
    return {**features, "pfirrmann_auto": pfirrmann.grade(features)}


def measure_session(
    volume: Volume,
    labels: np.ndarray,
    cortex_mm: float | str = "auto",
    thickness_mm: float | None = None,
    cortex_fits: list[dict] | None = None,
    midline: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per-level disc and vertebra tables of one session, and facts for its sidecar (with each
    study disc's geometry, ``geometry_record``).

    cortex_mm: thickness of the cortical endplate, thinner than a pixel; "auto" estimates it
    (``pooled_band``) from ``cortex_fits`` (the participant's sessions' ``cortex_fit``
    records, this one's included) or, without them, from this session's endplates alone; a
    number fixes it.
    thickness_mm: the slices' thickness (the DICOM SliceThickness), when not their spacing.
    midline: the mid-sagittal surface (fractional slice index per row), where the segmentation
    found it; None: from the labels or the canal (``Plane``).
    """
    plane = Plane(volume, labels, midline, thickness_mm)
    located = _located_discs(plane)
    facts = {"MidsagittalSliceIndex": float(np.mean(plane.midline))}
    if cortex_mm == "auto":
        if cortex_fits is None:
            cortex_fits = [_cortex_record(plane, located)]
        band, n_endplates, n_sessions = pooled_band(cortex_fits)
        facts.update(CortexEstimated=True, EndplatesForCortex=n_endplates,
                     SessionsForCortex=n_sessions)  # fmt: skip
        if not np.isfinite(band.thickness_mm):
            band = Band(TYPICAL_CORTEX_MM, 0.0)
            facts["CortexNote"] = f"no endplate fitted: {TYPICAL_CORTEX_MM} mm assumed"
    else:
        band = Band(float(cortex_mm), 0.0)
        facts["CortexEstimated"] = False
    facts["CortexMillimetres"] = band.thickness_mm
    facts["CortexBandShareOfMarrow"] = band.share
    discs = {
        level: _height_placed(refine_disc(plane, d, band)) if d.status == "ok" else d
        for level, d in located.items()
    }
    disc_rows = []
    for level in LEVELS:
        disc = discs[level]
        row = {"level": level, "height_mm": disc.height_mm, "width_mm": disc.width_mm,
               "pfirrmann_auto": np.nan, "status": disc.status, "note": disc.note,
               LATERAL_DIFFERENCE: np.nan}  # fmt: skip
        if disc.status == "ok":
            row[LATERAL_DIFFERENCE] = _lateral_difference_mm(plane, disc, band)
            row.update(_grade(plane, disc, [discs[lvl] for lvl in DISC_LEVELS]))
        disc_rows.append(row)
    vertebra_rows = [_intervertebral_distance(plane, discs, name) for name in VERTEBRAE]
    facts["Discs"] = [geometry_record(plane, discs[level]) for level in LEVELS]
    return pd.DataFrame(disc_rows), pd.DataFrame(vertebra_rows), facts


# the discs table's check of each height against its neighbouring slices (``qc``)
LATERAL_DIFFERENCE = "height_lateral_difference_mm"


def _lateral_difference_mm(plane: Plane, disc: DiscResult, band: Band) -> float:
    """The disc's mean height on the slices either side of the mid-sagittal surface, each
    located and fitted afresh, minus its height on it; NaN unless both sides give one.

    Near the midline a disc's height changes by a tenth of a millimetre over a slice (the
    endplates' coronal concavity), and a fit's noise is about 0.2 mm: a larger difference says
    the fit on the mid-sagittal surface took another edge (a nucleus's, a vein's), which its
    neighbours, seeing the same anatomy through other pixels, did not."""
    heights = []
    for slices in (-1, +1):
        beside = plane.beside(slices)
        located = locate_disc(beside, disc.level) if beside is not None else None
        if located is None or located.status != "ok":
            return float("nan")
        heights.append(_height_placed(refine_disc(beside, located, band)).height_mm)
    return float(np.mean(heights) - disc.height_mm)


def _height_placed(disc: DiscResult) -> DiscResult:
    """The disc, failed where its height cannot be placed: an AP end no vertebral wall
    confirmed (that end is then only the label's, and so is the central 80 % of the AP extent
    the height is averaged over: a label ending short of the front puts it off the middle), or
    an endplate whose fit ran away and did not settle (its surface is then the marrow edge,
    millimetres into the bone on real T2 exams, where the cortex and the cartilage make one
    dark band)."""
    if not disc.has_both_endplates:
        return disc
    reasons = []
    if disc.walls_unseen:
        sides = " and ".join(disc.walls_unseen)
        reasons.append(f"the {sides} end is not confirmed by a vertebral wall")
    if disc.unfitted:
        reasons.append(f"the {' and '.join(disc.unfitted)} endplate's {UNFITTED}")
    if reasons:
        disc.status, disc.height_mm, disc.width_mm = "failed", np.nan, np.nan  # one status per row
        disc.note = "; ".join(filter(None, [disc.note, "no height: " + "; ".join(reasons)]))
    return disc


def load_labels(path, volume: Volume) -> np.ndarray:
    """Label map in the same canonical orientation as the image; grids must match."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    labels = np.asarray(image.dataobj).astype(np.int32)
    if labels.shape != volume.data.shape or not np.allclose(image.affine, volume.affine, atol=1e-3):
        raise ValueError(f"{path}: label map grid differs from the image it labels")
    return labels
