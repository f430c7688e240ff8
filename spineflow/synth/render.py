"""Render the continuous anatomy into MR slices: partial volume by supersampling, a smooth
multiplicative bias field and Rician noise.

Intensities are for a sagittal fat-suppressed proton-density TSE (CSF brightest, healthy nucleus
bright, marrow and muscle intermediate-low, fat, cortex, ligaments and flowing blood dark) or,
for the decoy series, a T1-weighted TSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import Spine

PD_FS = {
    "air": 0.0,
    "fat": 0.07,
    "muscle": 0.27,
    "csf": 1.0,
    "cord": 0.55,
    "marrow": 0.36,
    "cortex": 0.04,
    "annulus": 0.17,
    "remnant": 0.1,
    "vessel": 0.04,
    "posterior_bone": 0.3,
    # nucleus signal by Pfirrmann grade (I bright and homogeneous ... V black)
    "nucleus": {1: 0.95, 2: 0.8, 3: 0.5, 4: 0.3, 5: 0.14},
}
T1 = {
    **PD_FS,
    "fat": 0.9,
    "muscle": 0.3,
    "csf": 0.12,
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

    def pixel_offsets(self, supersample: int) -> np.ndarray:
        """In-plane sample offsets (rows*cols*supersample^2, 2) in mm from the slice centre."""
        sub = (np.arange(supersample) + 0.5) / supersample - 0.5
        i = (np.arange(self.rows)[:, None] + sub[None, :]).ravel() - (self.rows - 1) / 2
        j = (np.arange(self.cols)[:, None] + sub[None, :]).ravel() - (self.cols - 1) / 2
        ii, jj = np.meshgrid(i * self.pixel_mm, j * self.pixel_mm, indexing="ij")
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
    """Paints tissue intensities into a flat array of sample points, structure by structure."""

    def __init__(self, r, a, s, contrast):
        self.r, self.a, self.s = r, a, s
        self.value = np.zeros_like(r)
        self.c = contrast

    def paint(self, mask, value):
        self.value[mask] = value


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
    p = _Painter(r, a, s, contrast)
    wall_s, wall_a = _posterior_wall(spine)
    post_wall = np.interp(s, wall_s, wall_a)
    front_s, front_a = _anterior_wall(spine)
    front_wall = np.interp(s, front_s, front_a)
    _paint_trunk(p, scene, post_wall, contrast)
    _paint_abdomen(p, scene, spine, front_wall, contrast)
    _paint_canal(p, spine, post_wall, contrast)
    for vertebra in spine.vertebrae:
        _paint_posterior_elements(p, spine, vertebra, contrast)
    for vertebra in spine.vertebrae:
        _paint_body(p, vertebra, scene, contrast)
    for disc in spine.discs:
        _paint_disc(p, disc, contrast)
    return p.value


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
    p.paint(back_muscle, contrast["muscle"])
    psoas_r = np.abs(p.r) - scene["psoas_offset_mm"]
    psoas = inside & (p.a > post_wall) & (p.a < post_wall + 45) & (psoas_r > 0) & (psoas_r < 35)
    psoas &= p.s < scene["psoas_top_s_mm"]
    p.paint(psoas, contrast["muscle"])


def _paint_abdomen(p: _Painter, scene, spine, front_wall, contrast):
    for loop in scene["bowel"]:
        centre, radii = np.asarray(loop["centre_ras"]), loop["radii_mm"]
        idx = np.flatnonzero(
            (np.abs(p.s - centre[2]) < radii[2]) & (np.abs(p.r - centre[0]) < radii[0])
        )
        d2 = (
            ((p.r[idx] - centre[0]) / radii[0]) ** 2
            + ((p.a[idx] - (front_wall[idx] + centre[1])) / radii[1]) ** 2
            + ((p.s[idx] - centre[2]) / radii[2]) ** 2
        )
        p.paint(idx[d2 <= 1.0], contrast["fat"] * 0.5)  # bowel wall: dark rim
        p.paint(idx[d2 <= 0.8], loop["signal"])
    for vessel in scene["vessels"]:
        lateral = vessel["r_mm"] + vessel["spread"] * np.clip(vessel["split_s_mm"] - p.s, 0, None)
        d2 = ((p.r - lateral) ** 2 + (p.a - (front_wall + vessel["a_offset_mm"])) ** 2) / vessel[
            "radius_mm"
        ] ** 2
        p.paint((d2 <= 1.0) & (p.s < vessel["top_s_mm"]), contrast["vessel"])


def _paint_canal(p: _Painter, spine: Spine, post_wall, contrast):
    extras = spine.extras
    centre_a = post_wall - spine.ligament_gap_mm - spine.canal_ap_mm / 2
    d2 = ((p.a - centre_a) / (spine.canal_ap_mm / 2)) ** 2 + (p.r / (spine.canal_lr_mm / 2)) ** 2
    thecal_end = spine.vertebra("S2").centre_as[1]
    p.paint((d2 <= 1.0) & (p.s > thecal_end), contrast["csf"])
    cord_d2 = ((p.a - centre_a) ** 2 + p.r**2) / extras["cord_radius_mm"] ** 2
    conus_s = spine.vertebra("L1").centre_as[1]
    p.paint((cord_d2 <= 1.0) & (p.s > conus_s), contrast["cord"])


def _paint_posterior_elements(p: _Painter, spine: Spine, v, contrast):
    """Pedicles, lamina and spinous process, rigidly attached to their body."""
    if v.name.startswith("S"):
        return
    reach = v.depth_mm + 60
    idx = np.flatnonzero((np.abs(p.s - v.centre_as[1]) < reach) & (np.abs(p.r) < 40))
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


def _paint_body(p: _Painter, v, scene, contrast):
    reach = max(v.depth_mm, v.height_mm) * 0.8
    near = (np.abs(p.s - v.centre_as[1]) < reach) & (np.abs(p.a - v.centre_as[0]) < reach)
    idx = np.flatnonzero(near)
    u, w_v, w = v.local(p.r[idx], p.a[idx], p.s[idx])
    r2 = v.footprint_r2(u, w)
    top, bottom = v.cranial_surface_v(u, w), v.caudal_surface_v(u, w)
    inside = (r2 <= 1.0) & (w_v <= top) & (w_v >= bottom)
    rim_mm = (1 - np.sqrt(np.clip(r2, 0, 1))) * min(v.depth_mm, v.width_mm) / 2
    cortex = inside & ((top - w_v < v.cortex_mm) | (w_v - bottom < v.cortex_mm) | (rim_mm < 0.8))
    texture = 1 + scene["marrow_texture"] * np.sin(u / 3.1 + w_v / 4.7) * np.cos(w / 5.3)
    p.value[idx[inside]] = contrast["marrow"] * texture[inside]
    p.value[idx[cortex]] = contrast["cortex"]


def _paint_disc(p: _Painter, disc, contrast):
    origin = disc.mid_origin_as
    reach = disc.half_extent_mm + 12
    near = (np.abs(p.s - origin[1]) < reach) & (np.abs(p.a - origin[0]) < reach)
    idx = np.flatnonzero(near)
    r, a, s = p.r[idx], p.a[idx], p.s[idx]
    u_l, v_l, _ = disc.lower.local(r, a, s)
    u_u, v_u, _ = disc.upper.local(r, a, s)
    u_m, v_m, w = disc.mid_local(r, a, s)
    inside = (v_l > disc.lower.cranial_surface_v(u_l, w)) & (
        v_u < disc.upper.caudal_surface_v(u_u, w)
    )
    inside &= (disc.footprint_r2(u_m, w) <= 1.0) & (np.abs(v_m) < 20)
    if disc.remnant:
        p.value[idx[inside]] = contrast["remnant"]
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
    p.value[idx[inside]] = signal[inside]


def bias_field(points_ras, scene) -> np.ndarray:
    """Smooth multiplicative receive field of a posterior spine coil (scanner frame)."""
    r, a, s = points_ras[:, 0], points_ras[:, 1], points_ras[:, 2]
    g = scene["bias"]
    log_field = (
        -g["ap_gradient"] * (a - g["a0_mm"]) / 100
        + g["si_curvature"] * (s / 150) ** 2
        + g["lr_gradient"] * r / 100
        + g["si_gradient"] * s / 150
    )
    return np.exp(log_field)


def render_volume(
    spine: Spine,
    scene: dict,
    geometry: SliceGeometry,
    rotation,
    translation,
    contrast: dict,
    rng: np.random.Generator,
    supersample: int = 2,
    through_plane_samples: int = 3,
) -> np.ndarray:
    """(n_slices, rows, cols) magnitude image: partial volume, bias field, Rician noise."""
    offsets = geometry.pixel_offsets(supersample)
    n_sub = supersample * supersample
    depth = (np.arange(through_plane_samples) + 0.5) / through_plane_samples - 0.5
    depth_mm = depth * geometry.thickness_mm
    volume = np.empty((len(geometry.slice_centres), geometry.rows, geometry.cols), np.float32)
    for k, centre in enumerate(geometry.slice_centres):
        accum = np.zeros(len(offsets), np.float64)
        in_plane = centre + offsets[:, :1] * geometry.col_dir + offsets[:, 1:] * geometry.row_dir
        for dz in depth_mm:
            points = in_plane + dz * geometry.normal
            anat = scanner_to_anatomy(points, rotation, translation)
            accum += tissue_intensity(spine, scene, anat[:, 0], anat[:, 1], anat[:, 2], contrast)
        pixel_points = (
            centre + offsets[:, :1] * geometry.col_dir + offsets[:, 1:] * geometry.row_dir
        )
        signal = accum / len(depth_mm) * bias_field(pixel_points, scene)
        signal = signal.reshape(geometry.rows, supersample, geometry.cols, supersample)
        volume[k] = signal.mean(axis=(1, 3)) if n_sub > 1 else signal[:, 0, :, 0]
    sigma = scene["noise_sigma"]
    real = volume + rng.normal(0, sigma, volume.shape)
    imag = rng.normal(0, sigma, volume.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)
