"""A disc found on the mid-sagittal plane between two labelled bodies: its frame, its endplate
curves, the vertebral walls beside it and its AP ends (its width).

Segmentation checks its labels with it; measurement starts from it.
"""

from __future__ import annotations

import numpy as np

from spineflow.core.anatomy import VERTEBRA_LABELS, disc_label
from spineflow.core.edges import fit_edge, fit_rim, marrow_boundary
from spineflow.core.plane import (
    BODY_LABELS,
    CENTRAL_SHARE,
    EDGE_AVERAGE_MM,
    DiscResult,
    Frame,
    Plane,
)

N_HEIGHT_PROFILES = 25
# how far outwards an endplate is sought past its label: a disc's label may hold as little
# as 3 mm of a 14 mm disc, a body's taking the rest (a nucleus as bright as marrow, seed 3's
# sub-17); a gap's, while the sacrum is sought, not so far (``labelling.find_anchor``: a
# remnant's search must not reach the next sacral segment's end)
GAP_LABEL_SLIP_MM = (0.0, 2.5, 5.0)
DISC_LABEL_SLIP_MM = GAP_LABEL_SLIP_MM + (7.5, 10.0)
PROFILE_STEP_MM = 0.25
# a vertebra's walls are sought on lines parallel to its endplate this far into the bone,
# reaching this far beyond the disc's ends (``vertebra_walls``)
WALL_DEPTHS_MM = (2.0, 3.0, 4.0, 5.0)
WALL_REACH_MM = 12.0
# a disc's AP end (``_disc_end``): first guessed this far beyond the wall's marrow edge (the
# wall's cortex, then the bulge); fitted on the pixels from RIM_PIXELS_MM inside to beyond that
# guess, within RIM_HALF_SHARE of the disc's height of its mid-plane (clipped to RIM_HALF_MM);
# the rim sought within RIM_SEARCH_MM of the guess
RIM_GUESS_MM = 1.0
RIM_PIXELS_MM = (-4.0, 5.0)
RIM_HALF_SHARE = 0.3
RIM_HALF_MM = (0.5, 1.5)
RIM_SEARCH_MM = (-1.5, 3.0)


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


def averaged_noise(plane: Plane) -> float:
    """The noise of a profile averaged over EDGE_AVERAGE_MM either side (``Plane.profile``):
    the image's, over the pixels the average spans."""
    spanned = 1.0 + 2.0 * EDGE_AVERAGE_MM / float(plane.spacing.min())
    return plane.noise_sigma / np.sqrt(spanned)


def _edges_on_side(plane, frame, u_values, guesses, other_side, side, slips_mm):
    edges = np.full(len(u_values), np.nan)
    line_noise = averaged_noise(plane) if plane.noise_sigma > 0 else None
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


def curve_if_enough(u_values: np.ndarray, edges: np.ndarray):
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
            curve_if_enough(u_values, upper),
            curve_if_enough(u_values, lower),
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
    result.height_mm = mean_height(result)
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
    coef = getattr(disc, edge_name(side))
    u = np.arange(disc.u_post - WALL_REACH_MM, disc.u_ant + WALL_REACH_MM, PROFILE_STEP_MM)
    depths_mm = WALL_DEPTHS_MM

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
    guess = wall_u + direction * RIM_GUESS_MM

    def mid(u):
        return (np.polyval(disc.upper_coef, u) + np.polyval(disc.lower_coef, u)) / 2

    height_mm = np.polyval(disc.upper_coef, guess) - np.polyval(disc.lower_coef, guess)
    half_mm = float(np.clip(RIM_HALF_SHARE * height_mm, *RIM_HALF_MM))

    def keep(u, t):
        outward = direction * (u - guess)
        inside, beyond = RIM_PIXELS_MM
        return (outward >= inside) & (outward <= beyond) & (np.abs(t - mid(u)) <= half_mm)

    pixels = plane.pixels(disc.frame, keep)
    widths = np.tile(np.abs(pixels.aperture[:, 0]), (len(pixels.u), 1))  # along the AP axis
    outward = direction * (pixels.u - guess)
    found = fit_rim(outward, widths, pixels.value, pixels.weight, RIM_SEARCH_MM, plane.noise_sigma,
                    pixels.slices)  # fmt: skip
    return guess + direction * found


def mean_height(disc: DiscResult) -> float:
    u = disc.central_u
    return float(np.mean(np.polyval(disc.upper_coef, u) - np.polyval(disc.lower_coef, u)))


def edge_name(side: int) -> str:
    return "upper_coef" if side > 0 else "lower_coef"


# ------------------------------------------------------------------ statuses


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
