"""Render the continuous anatomy into MR slices: partial volume by supersampling, a smooth
multiplicative bias field and Rician noise.

Intensities are for a sagittal fat-suppressed proton-density TSE (CSF brightest, healthy nucleus
bright, marrow and muscle intermediate-low, fat, cortex, ligaments and flowing blood dark), a T2
TSE without fat suppression (fat and fatty marrow bright as well), a STIR (marrow darker, fluid
bright) or, for the decoy series, a T1-weighted TSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from spineflow_dev.synth.anatomy import Spine

PD_FS = {
    "air": 0.0,
    "fat": 0.07,
    "muscle": 0.27,
    "csf": 1.0,
    "urine": 0.9,
    "cord": 0.55,
    "marrow": 0.36,
    "cortex": 0.0,  # cortical bone: no MR signal (the noise floor shows)
    "annulus": 0.17,
    "remnant": 0.1,
    "vessel": 0.04,
    "ligament": 0.03,
    "posterior_bone": 0.3,
    # nucleus signal by Pfirrmann grade (I bright and homogeneous ... V black)
    "nucleus": {1: 0.95, 2: 0.8, 3: 0.5, 4: 0.3, 5: 0.14},
}
# T2 TSE without fat suppression (the 1.5 T routine): fat and fatty marrow bright, CSF the
# brightest, a healthy nucleus bright, annulus, cortex and ligaments dark
T2 = {
    **PD_FS,
    "fat": 0.85,
    "muscle": 0.22,
    "urine": 0.95,
    "cord": 0.5,
    "marrow": 0.55,
    "annulus": 0.14,
    "posterior_bone": 0.45,
    "nucleus": {1: 0.9, 2: 0.72, 3: 0.42, 4: 0.24, 5: 0.12},
}
# STIR (short-tau inversion recovery, fat nulled by its T1): fat and fatty marrow darker than
# on a fat-suppressed PD, the long-T2 tissues (CSF, a healthy nucleus) bright against them
STIR = {
    **PD_FS,
    "fat": 0.05,
    "muscle": 0.16,
    "marrow": 0.22,
    "annulus": 0.12,
    "posterior_bone": 0.18,
    "nucleus": {1: 0.9, 2: 0.72, 3: 0.4, 4: 0.22, 5: 0.1},
}
T1 = {
    **PD_FS,
    "fat": 0.9,
    "muscle": 0.3,
    "csf": 0.12,
    "urine": 0.1,
    "cord": 0.35,
    "marrow": 0.7,
    "annulus": 0.3,
    "nucleus": {1: 0.35, 2: 0.34, 3: 0.32, 4: 0.3, 5: 0.28},
}


@dataclass(frozen=True)
class SliceGeometry:
    """Image grid in scanner RAS mm: slice k, row i, column j ->
    centre_k + (j - (cols-1)/2) * pixel * row_dir + (i - (rows-1)/2) * pixel * col_dir."""

    rows: int
    cols: int
    pixel_mm: float
    thickness_mm: float
    slice_centres: np.ndarray  # (n_slices, 3)
    row_dir: np.ndarray  # direction of increasing column index
    col_dir: np.ndarray  # direction of increasing row index

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    def points(self, centre, offsets: np.ndarray) -> np.ndarray:
        """Scanner points (n, 3) of in-plane offsets (n, 2, mm) from a slice's centre."""
        return centre + offsets[:, :1] * self.col_dir + offsets[:, 1:] * self.row_dir

    def pixel_offsets(self) -> np.ndarray:
        """In-plane offsets (rows*cols, 2) in mm of the pixel centres from the slice centre."""
        i = (np.arange(self.rows) - (self.rows - 1) / 2) * self.pixel_mm
        j = (np.arange(self.cols) - (self.cols - 1) / 2) * self.pixel_mm
        ii, jj = np.meshgrid(i, j, indexing="ij")
        return np.stack([ii.ravel(), jj.ravel()], axis=1)


def pose_matrix(rotation_deg, translation_mm) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (about r, a, s in that order) and translation of the anatomy in the scanner."""
    rx, ry, rz = np.radians(rotation_deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x, np.asarray(translation_mm, dtype=float)


def scanner_to_anatomy(points_ras, rotation, translation):
    return (points_ras - translation) @ rotation  # == R^T (p - t) for row vectors


def anatomy_to_scanner(points_ras, rotation, translation):
    return points_ras @ rotation.T + translation


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class _Painter:
    """Paints tissue intensities into a flat array of sample points, structure by structure,
    and beside it their outline: the same without the marrow's texture (where the tissues'
    boundaries are). The points are held sorted by s, so that a structure's painter looks only
    at the points within its extent along the body (``between``)."""

    def __init__(self, r, a, s, contrast):
        self.order = np.argsort(s, kind="stable")
        self.r, self.a, self.s = r[self.order], a[self.order], s[self.order]
        self.value = np.zeros_like(self.r)
        self.outline = np.zeros_like(self.r)
        self.c = contrast

    def between(self, s_low_mm: float, s_high_mm: float) -> slice:
        """The points with s between the two, and those up to 1 mm beyond (for the painter's
        own exact test)."""
        low, high = np.searchsorted(self.s, [s_low_mm - 1.0, s_high_mm + 1.0])
        return slice(int(low), int(high))

    def in_input_order(self, values: np.ndarray) -> np.ndarray:
        unsorted = np.empty_like(values)
        unsorted[self.order] = values
        return unsorted

    def paint(self, mask, value, outline=None):
        self.value[mask] = value
        self.outline[mask] = value if outline is None else outline


def _posterior_wall(spine: Spine):
    """a-coordinate of the posterior wall of the vertebral column as a function of s."""
    points = []
    for v in spine.vertebrae:
        for frac in (-0.45, 0.0, 0.45):
            p = np.asarray(v.centre_as) - v.ap * v.depth_mm / 2 + v.up * frac * v.height_mm
            points.append(p)
    points = np.array(sorted(points, key=lambda p: p[1]))
    return points[:, 1], points[:, 0]


def _anterior_wall(spine: Spine):
    points = []
    for v in spine.vertebrae:
        for frac in (-0.45, 0.0, 0.45):
            points.append(
                np.asarray(v.centre_as) + v.ap * v.depth_mm / 2 + v.up * frac * v.height_mm
            )
    points = np.array(sorted(points, key=lambda p: p[1]))
    return points[:, 1], points[:, 0]


def tissue_intensity(spine: Spine, scene: dict, r, a, s, contrast: dict) -> np.ndarray:
    """Noise-free signal at anatomy-frame points (flat float arrays)."""
    return _paint_tissues(spine, scene, r, a, s, contrast)[0]


def _paint_tissues(spine: Spine, scene: dict, r, a, s, contrast: dict):
    """Noise-free signal and outline at anatomy-frame points."""
    p = _Painter(r, a, s, contrast)
    wall_s, wall_a = _posterior_wall(spine)
    post_wall = np.interp(p.s, wall_s, wall_a)
    front_s, front_a = _anterior_wall(spine)
    front_wall = np.interp(p.s, front_s, front_a)
    _paint_trunk(p, scene, post_wall, contrast)
    _paint_abdomen(p, scene, spine, front_wall, contrast)
    _paint_pelvis(p, scene, contrast)
    _paint_anterior_ligament(p, spine, contrast)
    _paint_canal(p, spine, post_wall, contrast)
    for vertebra in spine.vertebrae:
        _paint_posterior_elements(p, spine, vertebra, contrast)
    for vertebra in spine.vertebrae:
        _paint_body(p, vertebra, scene, contrast)
    for disc in spine.discs:
        _paint_disc(p, disc, contrast)
    return p.in_input_order(p.value), p.in_input_order(p.outline)


def _paint_trunk(p: _Painter, scene, post_wall, contrast):
    """Skin-bounded trunk: fat everywhere, posterior paraspinal muscle, psoas beside bodies."""
    centre_a = post_wall + scene["trunk_centre_offset_mm"]
    semi_ap, semi_lr = scene["trunk_semi_ap_mm"], scene["trunk_semi_lr_mm"]
    rho = np.sqrt(((p.a - centre_a) / semi_ap) ** 2 + (p.r / semi_lr) ** 2)
    inside = rho <= 1.0
    p.paint(inside, contrast["fat"])
    skin = inside & (rho > 1.0 - 1.5 / semi_ap)
    p.paint(skin, contrast["muscle"])
    subcut_rho = 1.0 - scene["subcutaneous_fat_mm"] / semi_ap
    canal_back = post_wall - scene["canal_ap_mm"] - 3.0
    back_muscle = inside & (rho < subcut_rho) & (p.a < canal_back) & (np.abs(p.r) > 3.0)
    back_muscle &= p.s > scene.get("sacral_tip_s_mm", -np.inf)  # below: buttocks (fat)
    p.paint(back_muscle, contrast["muscle"])
    psoas_r = np.abs(p.r) - scene["psoas_offset_mm"]
    psoas = inside & (p.a > post_wall) & (p.a < post_wall + 45) & (psoas_r > 0) & (psoas_r < 35)
    psoas &= p.s < scene["psoas_top_s_mm"]
    p.paint(psoas, contrast["muscle"])


def _paint_abdomen(p: _Painter, scene, spine, front_wall, contrast):
    for loop in scene["bowel"]:
        centre, radii = np.asarray(loop["centre_ras"]), loop["radii_mm"]
        window = p.between(centre[2] - radii[2], centre[2] + radii[2])
        idx = window.start + np.flatnonzero(
            (np.abs(p.s[window] - centre[2]) < radii[2])
            & (np.abs(p.r[window] - centre[0]) < radii[0])
        )
        d2 = (
            ((p.r[idx] - centre[0]) / radii[0]) ** 2
            + ((p.a[idx] - (front_wall[idx] + centre[1])) / radii[1]) ** 2
            + ((p.s[idx] - centre[2]) / radii[2]) ** 2
        )
        p.paint(idx[d2 <= 1.0], contrast["fat"] * 0.5)  # bowel wall: dark rim
        p.paint(idx[d2 <= 0.8], loop["signal"])
    for vessel in scene["vessels"]:
        below = p.between(-np.inf, vessel["top_s_mm"])
        r, a, s = p.r[below], p.a[below], p.s[below]
        lateral = vessel["r_mm"] + vessel["spread"] * np.clip(vessel["split_s_mm"] - s, 0, None)
        d2 = ((r - lateral) ** 2 + (a - (front_wall[below] + vessel["a_offset_mm"])) ** 2) / vessel[
            "radius_mm"
        ] ** 2
        inside = (d2 <= 1.0) & (s < vessel["top_s_mm"])
        p.paint(below.start + np.flatnonzero(inside), contrast["vessel"])


def _wall_curve(spine: Spine, anterior: bool = False, step_mm: float = 0.5):
    """The posterior (or anterior) wall of the bodies as a curve in (a, s), caudal (sacral
    tip) to cranial: points step_mm apart, their arc length and unit normals pointing away
    from the bodies (posterior: into the canal; anterior: into the abdomen)."""
    sign = 1.0 if anterior else -1.0
    points = [
        np.asarray(v.centre_as) + sign * v.ap * v.depth_mm / 2 + v.up * frac * v.height_mm
        for v in sorted(spine.vertebrae, key=_caudal_rank)
        for frac in (-0.45, 0.0, 0.45)
    ]
    points = np.array(points)
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    even = np.arange(0, arc[-1], step_mm)
    curve = np.column_stack([np.interp(even, arc, points[:, k]) for k in (0, 1)])
    curve = ndimage.gaussian_filter1d(curve, 8.0 / step_mm, axis=0, mode="nearest")  # no kinks
    tangent = np.gradient(curve, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    outward = sign * np.column_stack([tangent[:, 1], -tangent[:, 0]])
    return curve, even, outward


_WALL_MAPS: dict = {}  # anterior -> (the spine, gridded distances from its wall curve)
WALL_GRID_MM = 0.25


def _wall_map(spine: Spine, anterior: bool):
    """Distance outwards from the wall curve, arc length of the nearest wall point and distance
    to it, tabulated once per spine (for all its series) on a fine (a, s) grid around the curve
    (a nearest-point search for every rendered sample would dominate the rendering time)."""
    cached = _WALL_MAPS.get(anterior)
    if cached is None or cached[0] is not spine:  # the spine is held: its id cannot be reused
        curve, arc, outward = _wall_curve(spine, anterior)
        low, high = curve.min(axis=0) - 40.0, curve.max(axis=0) + 40.0
        axes = [np.arange(low[k], high[k], WALL_GRID_MM) for k in (0, 1)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
        distance, nearest = cKDTree(curve).query(grid)
        depth = np.einsum("ij,ij->i", grid - curve[nearest], outward[nearest])
        shape = (len(axes[0]), len(axes[1]))
        tables = [v.reshape(shape) for v in (depth, arc[nearest], distance)]
        _WALL_MAPS[anterior] = (spine, (low, tables, (curve, arc)))
    return _WALL_MAPS[anterior][1]


def _depth_from_wall(p: _Painter, spine: Spine, anterior: bool, half_lr_mm: float, reach_mm):
    """Points within half_lr_mm of the midline and reach_mm of the wall curve: their indices,
    offsets from the midline, distance outwards from the wall, arc length of their nearest wall
    point and distance to it; and the curve with its arc lengths."""
    low, (depth_map, along_map, distance_map), curve_arc = _wall_map(spine, anterior)
    r = p.r - spine.midline_r(p.s)
    near = np.flatnonzero(np.abs(r) < half_lr_mm)
    index = np.column_stack([(p.a[near] - low[0]), (p.s[near] - low[1])]) / WALL_GRID_MM
    inside = np.all((index >= 0) & (index <= np.array(depth_map.shape) - 1), axis=1)
    near, index = near[inside], index[inside]
    distance = ndimage.map_coordinates(distance_map, index.T, order=1, mode="nearest")
    close = distance < reach_mm
    near, distance = near[close], distance[close]
    coords = index[close].T
    depth = ndimage.map_coordinates(depth_map, coords, order=1, mode="nearest")
    along = ndimage.map_coordinates(along_map, coords, order=1, mode="nearest")
    return near, r[near], depth, along, distance, curve_arc


def _paint_anterior_ligament(p: _Painter, spine: Spine, contrast):
    """The anterior longitudinal ligament: a dark band on the front of the column (the discs,
    painted later, bulge into it); it outlines the discs' anterior margins."""
    thickness = spine.extras.get("all_mm", 2.5)
    near, _, depth, _, _, _ = _depth_from_wall(p, spine, True, 15.0, thickness + 2.0)
    p.paint(near[(depth > -1.0) & (depth < thickness)], contrast["ligament"])


def _caudal_rank(vertebra) -> int:
    names = ("S4", "S3", "S2", "S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10")
    return names.index(vertebra.name)


def _paint_canal(p: _Painter, spine: Spine, post_wall, contrast):
    """Posterior longitudinal ligament, thecal sac (CSF) and cord, following the posterior wall
    of the bodies and measured perpendicular to it; the sac tapers to its blind end at S2, below
    which the sacral canal holds fat."""
    extras = spine.extras
    half_ap, half_lr = spine.canal_ap_mm / 2, spine.canal_lr_mm / 2
    centre = spine.ligament_gap_mm + half_ap
    near, r_near, depth, along, distance, (curve, arc) = _depth_from_wall(
        p, spine, False, half_lr + 1, centre + half_ap + 2
    )
    ligament = (depth > -1.0) & (depth < spine.ligament_gap_mm) & (np.abs(r_near) < 6.0)
    p.paint(near[ligament], contrast["ligament"])
    s2 = spine.vertebra("S2")
    sac_end = arc[np.argmin(np.linalg.norm(curve - np.asarray(s2.centre_as), axis=1))]
    taper = np.sqrt(np.clip((along - sac_end) / 30.0, 0.0, 1.0))
    in_canal = ((depth - centre) / half_ap) ** 2 + (r_near / half_lr) ** 2 <= 1.0
    p.paint(near[in_canal & (along <= sac_end)], contrast["fat"])
    sac = ((depth - centre) / (half_ap * np.maximum(taper, 1e-3))) ** 2
    sac += (r_near / (half_lr * np.maximum(taper, 1e-3))) ** 2
    p.paint(near[in_canal & (sac <= 1.0) & (along > sac_end)], contrast["csf"])
    l1 = spine.vertebra("L1")
    conus = arc[np.argmin(np.linalg.norm(curve - np.asarray(l1.centre_as), axis=1))]
    cord = ((depth - centre) ** 2 + r_near**2) <= extras["cord_radius_mm"] ** 2
    p.paint(near[cord & (along > conus)], contrast["cord"])


def _paint_posterior_elements(p: _Painter, spine: Spine, v, contrast):
    """Pedicles, lamina and spinous process, rigidly attached to their body."""
    if v.name.startswith("S"):
        return
    reach = v.depth_mm + 60
    window = p.between(v.centre_as[1] - reach, v.centre_as[1] + reach)
    idx = window.start + np.flatnonzero(
        (np.abs(p.s[window] - v.centre_as[1]) < reach) & (np.abs(p.r[window]) < 40)
    )
    u, w_v, w = v.local(p.r[idx], p.a[idx], p.s[idx])
    behind = -(v.depth_mm / 2 + spine.ligament_gap_mm + spine.canal_ap_mm)
    half_lr = spine.canal_lr_mm / 2
    near = (np.abs(w_v) < v.height_mm) & (u < 0)
    pedicle = near & (u > behind) & (u < -v.depth_mm / 2) & (np.abs(w) > half_lr)
    pedicle &= (np.abs(w) < half_lr + 8) & (w_v > -0.1 * v.height_mm) & (w_v < 0.4 * v.height_mm)
    lamina = near & (u > behind - 6) & (u <= behind) & (np.abs(w) < half_lr + 8)
    lamina &= (w_v > -0.45 * v.height_mm) & (w_v < 0.3 * v.height_mm)
    spinous = near & (u > behind - 6 - 30) & (u <= behind - 6) & (np.abs(w) < 4)
    spinous &= (w_v > -0.4 * v.height_mm) & (w_v < 0.25 * v.height_mm)
    p.paint(idx[pedicle | lamina | spinous], contrast["posterior_bone"])


def _near(p: _Painter, centre_as, reach_mm: float) -> np.ndarray:
    window = p.between(centre_as[1] - reach_mm, centre_as[1] + reach_mm)
    return window.start + np.flatnonzero(
        (np.abs(p.s[window] - centre_as[1]) < reach_mm)
        & (np.abs(p.a[window] - centre_as[0]) < reach_mm)
    )


def _body_inside(p: _Painter, v):
    """Indices near body v, the body's local coordinates there and which of them are inside."""
    idx = _near(p, v.centre_as, max(v.depth_mm, v.height_mm) * 0.8)
    u, w_v, w = v.local(p.r[idx], p.a[idx], p.s[idx])
    r2 = v.footprint_r2(u, w)
    top, bottom = v.cranial_surface_v(u, w), v.caudal_surface_v(u, w)
    inside = (r2 <= 1.0) & (w_v <= top) & (w_v >= bottom)
    return idx, inside, (u, w_v, w, r2, top, bottom)


def _disc_inside(p: _Painter, disc):
    """Indices near the disc, its mid-plane coordinates there and which of them are inside."""
    idx = _near(p, disc.mid_origin_as, disc.half_extent_mm + 12)
    r, a, s = p.r[idx], p.a[idx], p.s[idx]
    u_l, v_l, w_l = disc.lower.local(r, a, s)
    u_u, v_u, w_u = disc.upper.local(r, a, s)
    u_m, v_m, w = disc.mid_local(r, a, s)
    inside = (v_l > disc.lower.cranial_surface_v(u_l, w_l)) & (
        v_u < disc.upper.caudal_surface_v(u_u, w_u)
    )
    inside &= (disc.footprint_r2(u_m, w) <= 1.0) & (np.abs(v_m) < 20)
    return idx, inside, (u_m, v_m, w)


def _paint_body(p: _Painter, v, scene, contrast):
    idx, inside, (u, w_v, w, r2, top, bottom) = _body_inside(p, v)
    rim_mm = (1 - np.sqrt(np.clip(r2, 0, 1))) * min(v.depth_mm, v.width_mm) / 2
    cortex = inside & ((top - w_v < v.cortex_mm) | (w_v - bottom < v.cortex_mm) | (rim_mm < 0.8))
    texture = 1 + scene["marrow_texture"] * np.sin(u / 3.1 + w_v / 4.7) * np.cos(w / 5.3)
    p.paint(idx[inside], contrast["marrow"] * texture[inside], contrast["marrow"])
    p.paint(idx[cortex], contrast["cortex"])


def _paint_disc(p: _Painter, disc, contrast):
    idx, inside, (u_m, v_m, w) = _disc_inside(p, disc)
    if disc.remnant:
        p.paint(idx[inside], contrast["remnant"])
        return
    height_mm = disc.upper.caudal_endplate_centre_as() - disc.lower.cranial_endplate_centre_as()
    half_height = np.linalg.norm(height_mm) / 2
    nucleus_rho = np.sqrt(
        ((u_m + 0.06 * disc.depth_mm) / (0.3 * disc.depth_mm)) ** 2
        + (w / (0.3 * disc.width_mm)) ** 2
        + (v_m / (0.62 * half_height)) ** 2
    )
    grade = disc.pfirrmann
    share = 1 - _smoothstep((nucleus_rho - 0.55) / (0.45 + 0.1 * grade))
    if grade >= 2:  # intranuclear cleft: horizontal dark band of grade II and worse
        share *= 1 - 0.45 * np.exp(-((v_m / 0.7) ** 2))
    signal = contrast["annulus"] + (contrast["nucleus"][grade] - contrast["annulus"]) * share
    p.paint(idx[inside], signal[inside])


def _paint_pelvis(p: _Painter, scene, contrast):
    """Below and beside the sacrum: bladder (fluid, bright), pubic symphysis and iliac bones
    (marrow): midline structures a careless canal or body finder would take for spine."""
    pelvis = scene.get("pelvis")
    if not pelvis:
        return
    for blob in pelvis:
        centre, radii = np.asarray(blob["centre_ras"]), np.asarray(blob["radii_mm"])
        window = p.between(centre[2] - radii[2], centre[2] + radii[2])
        points = np.column_stack([p.r[window], p.a[window], p.s[window]])
        idx = window.start + np.flatnonzero(np.all(np.abs(points - centre) < radii, 1))
        d2 = (((np.column_stack([p.r[idx], p.a[idx], p.s[idx]]) - centre) / radii) ** 2).sum(1)
        tissue = blob["tissue"]
        p.paint(idx[d2 <= 1.0], contrast["cortex"] if tissue == "marrow" else contrast["fat"])
        p.paint(idx[d2 <= 0.85], contrast[tissue])


# SPINEPS label values (vertebra L1=20 ... L5=24, sacrum 26, disc below vertebra X = 100 + X),
# written here independently of the pipeline's own tables: the truth must not borrow from it
TRUTH_LABELS = {
    "T10": 17, "T11": 18, "T12": 19, "L1": 20, "L2": 21, "L3": 22, "L4": 23, "L5": 24,
    "S1": 26, "S2": 26, "S3": 26, "S4": 26,
}  # fmt: skip


def structure_labels(spine: Spine, r, a, s) -> np.ndarray:
    """SPINEPS-convention labels at anatomy-frame points: bodies (cortex included) and discs;
    the fused sacral segments and their remnants are one sacrum label, as SPINEPS writes it."""
    p = _Painter(r, a, s, {})
    labels = np.zeros(r.shape, np.int16)  # in the painter's order
    for vertebra in spine.vertebrae:
        idx, inside, _ = _body_inside(p, vertebra)
        labels[idx[inside]] = TRUTH_LABELS[vertebra.name]
    for disc in spine.discs:
        idx, inside, _ = _disc_inside(p, disc)
        upper = TRUTH_LABELS[disc.upper.name]
        labels[idx[inside]] = TRUTH_LABELS["S1"] if disc.remnant else 100 + upper
    return p.in_input_order(labels)


def bias_field(points_ras, scene) -> np.ndarray:
    """Smooth multiplicative receive field of a posterior spine coil (scanner frame): falling
    off anteriorly, saturating towards the coil (tanh) rather than growing without bound."""
    r, a, s = points_ras[:, 0], points_ras[:, 1], points_ras[:, 2]
    g = scene["bias"]
    log_field = (
        -g["ap_gradient"] * 1.2 * np.tanh((a - g["a0_mm"]) / 120)
        + g["si_curvature"] * (s / 150) ** 2
        + g["lr_gradient"] * r / 100
        + g["si_gradient"] * s / 150
    )
    return np.exp(log_field)


def _slice_signal(spine, scene, contrast, geometry, centre, offsets, depth_mm, pose):
    """Mean noise-free signal and outline over the through-plane samples at in-plane offsets of
    one slice."""
    in_plane = geometry.points(centre, offsets)
    value, outline = np.zeros(len(offsets)), np.zeros(len(offsets))
    for dz in depth_mm:
        anat = scanner_to_anatomy(in_plane + dz * geometry.normal, *pose)
        value_dz, outline_dz = _paint_tissues(spine, scene, *anat.T, contrast)
        value += value_dz
        outline += outline_dz
    return value / len(depth_mm), outline / len(depth_mm)


# the bodies' and discs' edges, measured to hundredths of a millimetre, are sampled finer (on a
# 4 x 4 grid the pipeline found the cortex 0.015 mm too thick, and the discs 0.03-0.05 mm low)
COLUMN_SUPERSAMPLE = 8
COLUMN_MARGIN_MM = 6.0


def _sub_pixel(n: int, pixel_mm: float) -> np.ndarray:
    """Offsets (n * n, 2) in mm of an n x n grid of points over a pixel, from its centre."""
    sub = ((np.arange(n) + 0.5) / n - 0.5) * pixel_mm
    return np.stack(np.meshgrid(sub, sub, indexing="ij"), axis=-1).reshape(-1, 2)


def _pixel_means(spine, scene, contrast, geometry, centre, pixels, n, depth_mm, pose):
    """Mean signal over each pixel (centres ``pixels``, mm from the slice centre), sampled on
    an n x n grid."""
    fine = (pixels[:, None, :] + _sub_pixel(n, geometry.pixel_mm)).reshape(-1, 2)
    values, _ = _slice_signal(spine, scene, contrast, geometry, centre, fine, depth_mm, pose)
    return values.reshape(len(pixels), n * n).mean(axis=1)


def _near_column(spine: Spine, geometry, centre, offsets, pose) -> np.ndarray:
    """Which in-plane points of a slice lie within COLUMN_MARGIN_MM of a vertebral body's box
    (the discs between them included: a body's box reaches half a disc past its endplates)."""
    in_plane = geometry.points(centre, offsets)
    anat = scanner_to_anatomy(in_plane, *pose)
    near = np.zeros(len(offsets), bool)
    for v in spine.vertebrae:
        u, w_v, w = v.local(anat[:, 0], anat[:, 1], anat[:, 2])
        near |= (
            (np.abs(u) < v.depth_mm / 2 + COLUMN_MARGIN_MM)
            & (np.abs(w_v) < v.height_mm / 2 + COLUMN_MARGIN_MM + geometry.thickness_mm)
            & (np.abs(w) < v.width_mm / 2 + COLUMN_MARGIN_MM + geometry.thickness_mm)
        )
    return near


def _edge_pixels(image: np.ndarray, step: float = 0.03) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood holds a step: where a boundary may cross them."""
    return ndimage.maximum_filter(image, 3) - ndimage.minimum_filter(image, 3) > step


def render_volume(
    spine: Spine,
    scene: dict,
    geometry: SliceGeometry,
    rotation,
    translation,
    contrast: dict,
    rng: np.random.Generator,
    supersample: int = 4,
    through_plane_samples: int = 5,
    column_supersample: int = COLUMN_SUPERSAMPLE,
) -> np.ndarray:
    """(n_slices, rows, cols) magnitude image: partial volume, bias field, Rician noise.

    Partial volume: each pixel is the mean over its area (supersample x supersample points,
    column_supersample x column_supersample within COLUMN_MARGIN_MM of a vertebral body or
    disc) and the slice thickness (through_plane_samples); the area is sampled only where a
    boundary crosses the pixel's neighbourhood (elsewhere the pixel centre is the pixel's
    value)."""
    centres = geometry.pixel_offsets()
    depth = (np.arange(through_plane_samples) + 0.5) / through_plane_samples - 0.5
    depth_mm = depth * geometry.thickness_mm
    pose = (rotation, translation)
    shape = (geometry.rows, geometry.cols)
    volume = np.empty((len(geometry.slice_centres), *shape), np.float32)
    for k, centre in enumerate(geometry.slice_centres):
        signal, outline = _slice_signal(
            spine, scene, contrast, geometry, centre, centres, depth_mm, pose
        )
        if supersample > 1:
            edges = _edge_pixels(outline.reshape(shape)).ravel()
            column = edges & _near_column(spine, geometry, centre, centres, pose)
            for chosen, n in ((edges & ~column, supersample), (column, column_supersample)):
                signal[chosen] = _pixel_means(
                    spine, scene, contrast, geometry, centre, centres[chosen], n, depth_mm, pose
                )
        volume[k] = (signal * bias_field(geometry.points(centre, centres), scene)).reshape(shape)
    sigma = scene["noise_sigma"]
    real = volume + rng.normal(0, sigma, volume.shape)
    imag = rng.normal(0, sigma, volume.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)
