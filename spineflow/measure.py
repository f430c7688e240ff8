"""Disc height, disc width and intervertebral distance in millimetres (DESIGN.md definitions).

Everything is measured in the spine's own mid-sagittal plane, interpolated between the two
nearest slices. The label map (built-in or external) only says where each structure is; edges
are then located in the image itself with the partial-volume model of ``edges.fit_edge``.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd

from . import LEVELS, VERTEBRAE
from .edges import fit_edge, marrow_boundary
from .midsagittal import Volume, find_midline_x, inside_mm, plane_at, sample
from .segment import VERTEBRA_LABELS, disc_label

CENTRAL_SHARE = 0.8  # height is averaged over the central 80 % of the disc's AP extent
N_HEIGHT_PROFILES = 25
PROFILE_STEP_MM = 0.25
BORDER_PX = 1.5  # a structure this close to the image edge is cut by the field of view
DEFAULT_CORTEX_MM = 0.5  # lumbar cortical endplates are ~0.4-0.6 mm thick


@dataclass
class Frame:
    """A disc's frame in the mid-sagittal plane: origin and unit axes (mm, (y, z))."""

    origin: np.ndarray
    ap: np.ndarray  # along the mid-plane, pointing anterior
    up: np.ndarray  # perpendicular to it, pointing cranial

    def point(self, u, t):
        return self.origin + np.multiply.outer(u, self.ap) + np.multiply.outer(t, self.up)


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


class Plane:
    """The mid-sagittal image and labels with mm-based sampling helpers."""

    def __init__(self, volume: Volume, labels: np.ndarray):
        self.x_mid = find_midline_x(volume)
        self.image = plane_at(volume, self.x_mid)
        self.labels = labels[int(np.clip(round(self.x_mid), 0, labels.shape[0] - 1))]
        self.spacing = volume.plane_spacing_mm
        yy, zz = np.meshgrid(
            np.arange(self.image.shape[0]) * self.spacing[0],
            np.arange(self.image.shape[1]) * self.spacing[1],
            indexing="ij",
        )
        self.coords = np.stack([yy, zz], axis=-1)

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
        return self._sample(frame.point(u, np.full_like(u, t)))

    def _sample(self, points: np.ndarray) -> np.ndarray:
        values = sample(self.image, self.spacing, points)
        values[~inside_mm(self.image.shape, self.spacing, points)] = np.nan
        return values

    def profile(self, frame: Frame, u: float, t: np.ndarray) -> np.ndarray:
        """Samples along frame.up at AP position u (NaN outside the image)."""
        return self._sample(frame.point(np.full_like(t, u), t))


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
    u_of = (points - frame.origin) @ frame.ap
    t_of = (points - frame.origin) @ frame.up
    up, down = [], []
    for u in u_values:
        near = np.abs(u_of - u) <= 1.5
        if near.sum() == 0:
            near = np.abs(u_of - u) <= np.abs(u_of - u).min() + 0.5
        up.append(t_of[near].max())
        down.append(t_of[near].min())
    return np.array(up), np.array(down)


def _edges_across(plane: Plane, frame: Frame, u_values, guesses_up, guesses_down, cortex_mm):
    """Endplate surfaces (t along frame.up) at each AP position u: upper and lower vertebra."""
    upper, lower = np.full(len(u_values), np.nan), np.full(len(u_values), np.nan)
    for k, u in enumerate(u_values):
        t = np.arange(guesses_down[k] - 9.0, guesses_up[k] + 9.0, PROFILE_STEP_MM)
        values = plane.profile(frame, u, t)
        mid = (guesses_up[k] + guesses_down[k]) / 2
        up_side, down_side = t >= mid, t <= mid
        upper[k] = fit_edge(t[up_side], values[up_side], guesses_up[k], +1, cortex_mm)
        lower[k] = fit_edge(t[down_side], values[down_side], guesses_down[k], -1, cortex_mm)
    return upper, lower


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


def _refine_frame(frame: Frame, upper_coef, lower_coef, centre_u: float) -> Frame:
    """Re-align the frame with the bisector of the two endplates' tangents at the centre."""
    slope = (
        np.polyval(np.polyder(upper_coef), centre_u) + np.polyval(np.polyder(lower_coef), centre_u)
    ) / 2
    offset = (np.polyval(upper_coef, centre_u) + np.polyval(lower_coef, centre_u)) / 2
    angle = np.arctan(slope)
    ap = np.cos(angle) * frame.ap + np.sin(angle) * frame.up
    up = -np.sin(angle) * frame.ap + np.cos(angle) * frame.up
    return Frame(frame.origin + centre_u * frame.ap + offset * frame.up, ap, up)


def measure_disc(plane: Plane, level: str, cortex_mm: float = DEFAULT_CORTEX_MM) -> DiscResult:
    upper_name, lower_name = level.split("-")
    result = DiscResult(level)
    label = disc_label(upper_name)
    points = plane.points_of(label)
    if plane.touches_border(label):
        result.status, result.note = "not_in_fov", "cut by the edge of the field of view"
        return result
    if len(points) < 10 or VERTEBRA_LABELS[upper_name] not in plane.labels:
        result.status, result.note = _missing_status(plane, label)
        return result
    frame = _principal_frame(points)
    for _ in range(2):
        u_lo, u_hi = _extent(points, frame, frame.ap)
        u_post = _ap_boundary(plane, frame, u_lo, -1)
        u_ant = _ap_boundary(plane, frame, u_hi, +1)
        half = CENTRAL_SHARE * (u_ant - u_post) / 2
        centre_u = (u_ant + u_post) / 2
        u_values = np.linspace(centre_u - half, centre_u + half, N_HEIGHT_PROFILES)
        guesses = _label_guesses(points, frame, u_values)
        upper, lower = _edges_across(plane, frame, u_values, *guesses, cortex_mm)
        result.frame = frame
        result.upper_coef = _curve_if_enough(u_values, upper)
        result.lower_coef = _curve_if_enough(u_values, lower)
        if result.upper_coef is None or result.lower_coef is None:
            result.status, result.note = "failed", "endplates not found in most profiles"
            return result
        frame = _refine_frame(frame, result.upper_coef, result.lower_coef, centre_u)
    dense_u = np.linspace(centre_u - half, centre_u + half, 201)
    heights = np.polyval(result.upper_coef, dense_u) - np.polyval(result.lower_coef, dense_u)
    result.height_mm = float(np.mean(heights))
    result.width_mm = float(u_ant - u_post)
    dropped = int(np.sum(~(np.isfinite(upper) & np.isfinite(lower))))
    if dropped:
        result.note = f"{dropped} of {N_HEIGHT_PROFILES} profiles without a clear edge"
    return result


def _curve_if_enough(u_values: np.ndarray, edges: np.ndarray):
    """The endplate curve, when at least 60 % of the profiles found the edge."""
    if np.isfinite(edges).sum() < 0.6 * len(edges):
        return None
    return _robust_curve(u_values, edges)


def _missing_status(plane: Plane, label: int) -> tuple[str, str]:
    """A structure without labels: above the highest labelled structure means out of view."""
    present = [lab for lab in np.unique(plane.labels) if lab > 0]
    if not present:
        return "failed", "no structures segmented"
    vertebra_of = {100 + v: v for v in VERTEBRA_LABELS.values()}
    rank = vertebra_of.get(label, label)
    highest = min(vertebra_of.get(lab, lab) for lab in present)  # lower label = more cranial
    top_structure = min(present, key=lambda lab: vertebra_of.get(lab, lab))
    if rank < highest or (rank == highest and plane.touches_border(top_structure)):
        return "not_in_fov", "above the field of view"
    return "failed", "not found by the segmentation"


def endplate_midpoint(plane: Plane, disc: DiscResult, vertebra_label: int, side: str):
    """Point on one endplate surface at the middle of that endplate's AP extent.

    side: "upper" for the vertebra above the disc (its caudal endplate), "lower" for the one
    below. The AP extent is the vertebra's own, taken from its label next to the endplate; the
    surface there comes from the disc's fitted endplate curve.
    """
    frame = disc.frame
    coef = disc.upper_coef if side == "upper" else disc.lower_coef
    points = plane.points_of(vertebra_label)
    u_of = (points - frame.origin) @ frame.ap
    t_of = (points - frame.origin) @ frame.up
    near = np.abs(t_of - np.polyval(coef, u_of)) < 4.0
    if near.sum() < 5:
        return None
    u_mid = (u_of[near].min() + u_of[near].max()) / 2
    return frame.point(u_mid, np.polyval(coef, u_mid))


def measure_session(
    volume: Volume, labels: np.ndarray, cortex_mm: float = DEFAULT_CORTEX_MM
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-level disc and vertebra tables of one session.

    cortex_mm: thickness of the cortical endplate, which is thinner than a pixel and invisible
    against a dark disc; the endplate surface is placed that far in front of the marrow edge.
    """
    plane = Plane(volume, labels)
    discs = {lvl: measure_disc(plane, lvl, cortex_mm) for lvl in LEVELS + ("L2-L3", "S1-S2")}
    disc_rows = [
        {
            "level": lvl,
            "height_mm": discs[lvl].height_mm,
            "width_mm": discs[lvl].width_mm,
            "pfirrmann_auto": np.nan,
            "status": discs[lvl].status,
            "note": discs[lvl].note,
        }
        for lvl in LEVELS
    ]
    vertebra_rows = [_intervertebral_distance(plane, discs, name) for name in VERTEBRAE]
    return pd.DataFrame(disc_rows), pd.DataFrame(vertebra_rows)


def _neighbour_discs(name: str) -> tuple[str, str]:
    order = ["L2", "L3", "L4", "L5", "S1", "S2"]
    i = order.index(name)
    return f"{order[i - 1]}-{name}", f"{name}-{order[i + 1]}"


def _intervertebral_distance(plane: Plane, discs: dict, name: str) -> dict:
    above, below = _neighbour_discs(name)
    row = {"vertebra": name, "intervertebral_distance_mm": np.nan, "status": "ok", "note": ""}
    label = VERTEBRA_LABELS[name]
    if plane.touches_border(label) or any(discs[d].status == "not_in_fov" for d in (above,)):
        row["status"], row["note"] = "not_in_fov", "an endplate is outside the field of view"
        return row
    needed = {above: discs[above].lower_coef, below: discs[below].upper_coef}
    failed = [d for d, coef in needed.items() if coef is None]
    if failed:
        row["status"] = "failed"
        row["note"] = "endplate not measured: " + "; ".join(f"{d} {discs[d].note}" for d in failed)
        return row
    cranial = endplate_midpoint(plane, discs[above], label, "lower")
    caudal = endplate_midpoint(plane, discs[below], label, "upper")
    if cranial is None or caudal is None:
        row["status"], row["note"] = "failed", "endplate midpoint not found"
        return row
    row["intervertebral_distance_mm"] = float(np.linalg.norm(cranial - caudal))
    return row


def load_labels(path, volume: Volume) -> np.ndarray:
    """Label map in the same canonical orientation as the image; grids must match."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    labels = np.asarray(image.dataobj).astype(np.int32)
    if labels.shape != volume.data.shape or not np.allclose(image.affine, volume.affine, atol=1e-3):
        raise ValueError(f"{path}: label map grid differs from the image it labels")
    return labels
