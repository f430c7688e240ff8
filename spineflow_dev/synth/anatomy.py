"""Continuous lumbar-spine anatomy in millimetres, and its exact geometry (the ground truth).

Coordinates are RAS millimetres of the *anatomy frame*: r to the right, a anterior, s superior,
the spine's midline at r = 0. Each vertebral body is a rigid block with its own sagittal frame
(centre, tilt phi); discs fill the space between two bodies' facing endplates. Timepoint 2 is the
same anatomy with articulated levels, changed disc heights and a different pose in the scanner.

The truth measures follow docs/DESIGN.md's definitions and are computed from these analytic
surfaces, never from a rendered image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

LUMBAR_NAMES = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")
SACRAL_NAMES = ("S1", "S2", "S3", "S4")
CORNER_RADIUS_MM = 2.0


@dataclass(frozen=True)
class Vertebra:
    name: str
    centre_as: tuple[float, float]  # (a, s) of the body centre in the mid-sagittal plane
    tilt_rad: float  # rotation of the body's cranial axis towards anterior
    depth_mm: float  # AP extent
    height_mm: float  # cranio-caudal extent at the rim
    width_mm: float  # LR extent
    concavity_cranial_mm: float  # depth of the cranial endplate's central concavity
    concavity_caudal_mm: float
    cortex_mm: float  # thickness of the dark cortical shell
    centre_r: float = 0.0  # lateral (coronal) offset of the body from the anatomy's midline

    @property
    def up(self) -> np.ndarray:
        return np.array([np.sin(self.tilt_rad), np.cos(self.tilt_rad)])

    @property
    def ap(self) -> np.ndarray:
        return np.array([np.cos(self.tilt_rad), -np.sin(self.tilt_rad)])

    def local(self, r, a, s):
        """(u, v, w): anterior, cranial and right-lateral coordinates in the body's frame."""
        da, ds = a - self.centre_as[0], s - self.centre_as[1]
        c, n = np.cos(self.tilt_rad), np.sin(self.tilt_rad)
        return da * c - ds * n, da * n + ds * c, r - self.centre_r

    def footprint_r2(self, u, w):
        return (2 * u / self.depth_mm) ** 2 + (2 * w / self.width_mm) ** 2

    def _rounding_mm(self, u, w):
        """Drop of the endplate surface near the rim (rounded corners of the body)."""
        rim_distance = (1 - np.sqrt(np.minimum(self.footprint_r2(u, w), 4.0))) * self.depth_mm / 2
        gap = np.clip(CORNER_RADIUS_MM - rim_distance, 0.0, CORNER_RADIUS_MM)
        return CORNER_RADIUS_MM - np.sqrt(CORNER_RADIUS_MM**2 - gap**2)

    def cranial_surface_v(self, u, w):
        dome = np.clip(1 - self.footprint_r2(u, w), 0.0, 1.0)
        return self.height_mm / 2 - self.concavity_cranial_mm * dome - self._rounding_mm(u, w)

    def caudal_surface_v(self, u, w):
        dome = np.clip(1 - self.footprint_r2(u, w), 0.0, 1.0)
        return -self.height_mm / 2 + self.concavity_caudal_mm * dome + self._rounding_mm(u, w)

    def cranial_endplate_centre_as(self) -> np.ndarray:
        return np.asarray(self.centre_as) + self.up * self.cranial_surface_v(0.0, 0.0)

    def caudal_endplate_centre_as(self) -> np.ndarray:
        return np.asarray(self.centre_as) + self.up * self.caudal_surface_v(0.0, 0.0)

    def rim_points_as(self, surface: str, n: int = 41) -> np.ndarray:
        """Points of one endplate surface across its whole AP extent, mid-sagittal plane."""
        u = np.linspace(-self.depth_mm / 2, self.depth_mm / 2, n)
        v = (
            self.cranial_surface_v(u, 0.0)
            if surface == "cranial"
            else self.caudal_surface_v(u, 0.0)
        )
        return np.asarray(self.centre_as) + np.outer(u, self.ap) + np.outer(v, self.up)


@dataclass(frozen=True)
class Disc:
    upper: Vertebra
    lower: Vertebra
    bulge_mm: float
    pfirrmann: int
    remnant: bool = False  # the fused S1-S2 disc remnant

    @property
    def level(self) -> str:
        return f"{self.upper.name}-{self.lower.name}"

    @property
    def mid_tilt_rad(self) -> float:
        return (self.upper.tilt_rad + self.lower.tilt_rad) / 2

    @property
    def mid_origin_as(self) -> np.ndarray:
        return (
            self.upper.caudal_endplate_centre_as() + self.lower.cranial_endplate_centre_as()
        ) / 2

    @property
    def depth_mm(self) -> float:
        return (self.upper.depth_mm + self.lower.depth_mm) / 2

    @property
    def width_mm(self) -> float:
        return (self.upper.width_mm + self.lower.width_mm) / 2

    @property
    def centre_r(self) -> float:
        return (self.upper.centre_r + self.lower.centre_r) / 2

    def mid_local(self, r, a, s):
        origin = self.mid_origin_as
        da, ds = a - origin[0], s - origin[1]
        c, n = np.cos(self.mid_tilt_rad), np.sin(self.mid_tilt_rad)
        return da * c - ds * n, da * n + ds * c, r - self.centre_r

    @property
    def half_extent_mm(self) -> float:
        """Half the AP extent of the disc along its mid-plane (the true disc width / 2)."""
        return self.depth_mm / 2 + self.bulge_mm

    def footprint_r2(self, u, w):
        return (u / self.half_extent_mm) ** 2 + (2 * w / (self.width_mm + 2 * self.bulge_mm)) ** 2


@dataclass(frozen=True)
class Spine:
    vertebrae: tuple[Vertebra, ...]
    discs: tuple[Disc, ...]
    canal_ap_mm: float
    canal_lr_mm: float
    ligament_gap_mm: float
    extras: dict = field(default_factory=dict, compare=False)

    def vertebra(self, name: str) -> Vertebra:
        return next(v for v in self.vertebrae if v.name == name)

    def disc(self, level: str) -> Disc:
        return next(d for d in self.discs if d.level == level)

    def midline_r(self, s) -> np.ndarray:
        """Lateral position of the spine's midline at height s (a scoliotic curve, if any)."""
        order = np.argsort([v.centre_as[1] for v in self.vertebrae])
        heights = np.array([self.vertebrae[i].centre_as[1] for i in order])
        return np.interp(s, heights, [self.vertebrae[i].centre_r for i in order])


def _unit(angle_rad: float) -> np.ndarray:
    return np.array([np.sin(angle_rad), np.cos(angle_rad)])


def build_spine(params: dict) -> Spine:
    """Stack bodies upwards from S1 (the anchor) and downwards into the sacrum.

    params: sacral_slope_deg, lordosis_deg, disc_height_mm {level: mm at the disc centre},
    disc_wedge_share {level: share of lordosis}, body sizes, pfirrmann {level: grade}, ...
    """
    names_up = list(reversed(LUMBAR_NAMES))  # L5, L4, ..., T10
    s1 = _make_body("S1", np.zeros(2), np.radians(params["sacral_slope_deg"]), params, anchor=True)
    bodies = {"S1": s1}
    discs = []
    lower = s1
    for name in names_up:
        level = f"{name}-{lower.name}"
        wedge_rad = np.radians(params["disc_wedge_deg"][level])
        tilt = lower.tilt_rad - wedge_rad
        height_mm = params["disc_height_mm"][level]
        mid_tilt = (tilt + lower.tilt_rad) / 2
        caudal_centre = lower.cranial_endplate_centre_as() + _unit(mid_tilt) * height_mm
        upper = _make_body(name, caudal_centre, tilt, params)
        # place the body so that its caudal endplate centre lands on caudal_centre
        offset = caudal_centre - upper.caudal_endplate_centre_as()
        upper = replace(upper, centre_as=tuple(np.asarray(upper.centre_as) + offset))
        bodies[name] = upper
        discs.append(Disc(upper, lower, params["bulge_mm"], int(params["pfirrmann"].get(level, 2))))
        lower = upper
    upper = s1
    for name in SACRAL_NAMES[1:]:
        tilt = upper.tilt_rad + np.radians(params["sacral_curve_deg"])
        remnant_mm = params["sacral_remnant_mm"]
        mid_tilt = (tilt + upper.tilt_rad) / 2
        cranial_centre = upper.caudal_endplate_centre_as() - _unit(mid_tilt) * remnant_mm
        body = _make_body(name, cranial_centre, tilt, params)
        offset = cranial_centre - body.cranial_endplate_centre_as()
        body = replace(body, centre_as=tuple(np.asarray(body.centre_as) + offset))
        bodies[name] = body
        discs.append(Disc(upper, body, 0.0, 5, remnant=True))
        upper = body
    order = list(LUMBAR_NAMES) + list(SACRAL_NAMES)
    return Spine(
        vertebrae=tuple(bodies[n] for n in order),
        discs=tuple(sorted(discs, key=lambda d: order.index(d.upper.name))),
        canal_ap_mm=params["canal_ap_mm"],
        canal_lr_mm=params["canal_lr_mm"],
        ligament_gap_mm=params["ligament_gap_mm"],
        extras=params,
    )


def _make_body(name, centre_as, tilt_rad, params, anchor=False) -> Vertebra:
    size = params["body"][name]
    return Vertebra(
        name=name,
        # the anchor (S1) is placed by its cranial rim; the others are moved by the caller
        centre_as=tuple(
            np.asarray(centre_as) - (_unit(tilt_rad) * size["height_mm"] / 2 if anchor else 0)
        ),
        tilt_rad=float(tilt_rad),
        depth_mm=size["depth_mm"],
        height_mm=size["height_mm"],
        width_mm=size["width_mm"],
        concavity_cranial_mm=size["concavity_cranial_mm"],
        concavity_caudal_mm=size["concavity_caudal_mm"],
        cortex_mm=params["cortex_mm"],
        centre_r=float(params.get("lateral_mm", {}).get(name, 0.0)),
    )


# ---------------------------------------------------------------------------------------------
# Exact geometry (ground truth)
# ---------------------------------------------------------------------------------------------


def _surface_crossing(vertebra: Vertebra, surface: str, origins_as, direction_as) -> np.ndarray:
    """Parameters t where origins + t*direction meet the given endplate surface (bisection)."""
    surface_v = vertebra.cranial_surface_v if surface == "cranial" else vertebra.caudal_surface_v

    def gap(t):
        points = origins_as + t[:, None] * direction_as
        u, v, _ = vertebra.local(0.0, points[:, 0], points[:, 1])
        return v - surface_v(u, 0.0)

    lo = np.full(len(origins_as), -40.0)
    hi = np.full(len(origins_as), 40.0)
    sign_lo = np.sign(gap(lo))
    for _ in range(60):
        mid = (lo + hi) / 2
        same = np.sign(gap(mid)) == sign_lo
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    return (lo + hi) / 2


def true_disc_height_mm(disc: Disc, central_share: float = 0.8, n_samples: int = 161) -> float:
    """Mean endplate-to-endplate distance perpendicular to the mid-plane, central 80 % of AP."""
    half = disc.half_extent_mm * central_share
    c, n = np.cos(disc.mid_tilt_rad), np.sin(disc.mid_tilt_rad)
    ap, up = np.array([c, -n]), np.array([n, c])
    origins = disc.mid_origin_as + np.outer(np.linspace(-half, half, n_samples), ap)
    t_top = _surface_crossing(disc.upper, "caudal", origins, up)
    t_bottom = _surface_crossing(disc.lower, "cranial", origins, up)
    return float(np.mean(t_top - t_bottom))


def true_disc_width_mm(disc: Disc) -> float:
    return 2 * disc.half_extent_mm


def true_intervertebral_distance_mm(vertebra: Vertebra) -> float:
    return float(
        np.linalg.norm(vertebra.cranial_endplate_centre_as() - vertebra.caudal_endplate_centre_as())
    )
