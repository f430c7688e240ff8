"""Random participants: anatomy, scene, pose and scan geometry drawn over a wide spread.

Every range is drawn per participant, so a cohort covers body sizes, lordosis, disc heights,
degeneration, SNR, bias strength, poses and fields of view; the pipeline must hold across all.
"""

from __future__ import annotations

import copy

import numpy as np

from spineflow_dev.synth.anatomy import LUMBAR_NAMES, SACRAL_NAMES

LUMBAR_LEVELS = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
THORACIC_LEVELS = ("T10-T11", "T11-T12", "T12-L1")
# share of the lumbar lordosis carried by each disc's wedge, L1-L2 ... L5-S1
LORDOSIS_SHARE = (0.08, 0.12, 0.18, 0.25, 0.37)
# Pfirrmann grade probabilities per level (degeneration is commoner caudally)
GRADE_P = {
    "L1-L2": (0.45, 0.45, 0.08, 0.02, 0.0),
    "L2-L3": (0.4, 0.45, 0.1, 0.05, 0.0),
    "L3-L4": (0.3, 0.4, 0.17, 0.1, 0.03),
    "L4-L5": (0.2, 0.35, 0.22, 0.16, 0.07),
    "L5-S1": (0.2, 0.3, 0.22, 0.18, 0.1),
}
# nominal body sizes (height, depth, width) in mm before the participant's size factor
BODY_SIZE = {
    "T10": (21, 29, 36),
    "T11": (22, 30, 38),
    "T12": (23, 31, 40),
    "L1": (25, 33, 43),
    "L2": (26, 34, 45),
    "L3": (26.5, 35, 47),
    "L4": (27, 36, 49),
    "L5": (27, 37, 51),
    "S1": (28, 37, 50),
    "S2": (22, 30, 40),
    "S3": (16, 23, 30),
    "S4": (12, 17, 22),
}
# lateral (scoliotic) offset of each body per mm of a participant's coronal curve amplitude
SCOLIOSIS_SHAPE = {"L5": 0.35, "L4": 0.75, "L3": 1.0, "L2": 0.9, "L1": 0.6, "T12": 0.3, "T11": 0.1}
FOV_MM = 350.0
MATRIX = 320


def sample_participant(rng: np.random.Generator) -> dict:
    """Anatomy parameters (timepoint 1), scene and demographic-linked sizes of one person."""
    size = rng.uniform(0.8, 1.2)
    scoliosis_mm = rng.uniform(-4, 4)  # a mild coronal curve, largest at L3
    lordosis = rng.uniform(15, 50)
    body = {}
    for name in LUMBAR_NAMES + SACRAL_NAMES:
        h, d, w = BODY_SIZE[name]
        body[name] = {
            "height_mm": h * size * rng.uniform(0.95, 1.05),
            "depth_mm": d * size * rng.uniform(0.95, 1.05),
            "width_mm": w * size * rng.uniform(0.95, 1.05),
            "concavity_cranial_mm": rng.uniform(0.4, 2.0),
            "concavity_caudal_mm": rng.uniform(0.4, 2.0),
        }
    grades = {lvl: int(rng.choice(5, p=GRADE_P[lvl]) + 1) for lvl in LUMBAR_LEVELS}
    heights = {}
    for lvl in LUMBAR_LEVELS:
        nominal = rng.uniform(7.0, 13.0) * size
        heights[lvl] = float(np.clip(nominal * (1 - 0.12 * max(0, grades[lvl] - 3)), 6.0, 14.0))
    for lvl in THORACIC_LEVELS:
        heights[lvl] = rng.uniform(4.5, 6.5) * size
    wedge = {lvl: lordosis * share for lvl, share in zip(LUMBAR_LEVELS, LORDOSIS_SHARE)}
    wedge.update({"T10-T11": -3.0, "T11-T12": -2.0, "T12-L1": 0.0})
    wedge = {lvl: angle + rng.normal(0, 1.0) for lvl, angle in wedge.items()}
    params = {
        "sacral_slope_deg": float(np.clip(lordosis * 0.8 + rng.normal(8, 5), 22, 55)),
        "lordosis_deg": lordosis,
        "disc_height_mm": heights,
        "disc_wedge_deg": wedge,
        "body": body,
        "pfirrmann": grades,
        "bulge_mm": rng.uniform(0.3, 1.5),
        # lumbar cortical endplates: ~0.3-0.9 mm, thinner than a pixel and never told to the
        # pipeline, which must cope with all of them
        "cortex_mm": rng.uniform(0.3, 0.9),
        "lateral_mm": {name: k * scoliosis_mm for name, k in SCOLIOSIS_SHAPE.items()},
        "sacral_curve_deg": rng.uniform(12, 25),
        "sacral_remnant_mm": rng.uniform(1.0, 2.5),
        "canal_ap_mm": rng.uniform(13, 18) * size,
        "canal_lr_mm": rng.uniform(18, 24) * size,
        "ligament_gap_mm": rng.uniform(1.0, 2.5),  # posterior longitudinal ligament
        "all_mm": rng.uniform(1.5, 3.0),  # anterior longitudinal ligament
        "cord_radius_mm": rng.uniform(4.0, 5.0),
    }
    return params


def sample_scene(
    rng: np.random.Generator, spine, snr: float, body_rng: np.random.Generator | None = None
) -> dict:
    """Everything around the spine: the body (trunk, psoas, vessels, pelvis, marrow texture),
    drawn from ``body_rng`` so that a participant's visits can share it, placed on this visit's
    spine; and what each visit has of its own (bowel contents, bias field, noise) from ``rng``.
    Without ``body_rng`` both come from ``rng``."""
    return {**_body(body_rng or rng, spine), **_visit(rng, spine, snr)}


def _body(rng: np.random.Generator, spine) -> dict:
    """The participant's anatomy around the spine: the same at every visit (psoas, aorta and
    iliac bones do not move against the spine between visits months apart)."""
    s_of = _heights_mm(spine)
    vessels = [
        {"r_mm": -10 + rng.normal(0, 2), "a_offset_mm": 13, "radius_mm": 9.0, "spread": s}
        for s in (-0.6, 0.6)
    ] + [
        {"r_mm": 15 + rng.normal(0, 2), "a_offset_mm": 10, "radius_mm": 10.0, "spread": s}
        for s in (-0.5, 0.5)
    ]
    for vessel in vessels:
        vessel.update({"split_s_mm": s_of["L4"], "top_s_mm": 1e9})
    return {
        "trunk_centre_offset_mm": rng.uniform(20, 60),
        "trunk_semi_ap_mm": rng.uniform(105, 160),
        "trunk_semi_lr_mm": rng.uniform(150, 190),
        "subcutaneous_fat_mm": rng.uniform(8, 40),
        "canal_ap_mm": spine.canal_ap_mm,
        "psoas_offset_mm": rng.uniform(17, 24),
        "psoas_top_s_mm": s_of["T12"],
        "sacral_tip_s_mm": s_of["S4"],
        "vessels": vessels,
        "marrow_texture": rng.uniform(0.02, 0.08),
        "pelvis": _pelvis(rng, spine),
    }


def _visit(rng: np.random.Generator, spine, snr: float) -> dict:
    """What differs between visits: the bowel's loops and contents, the receive field, noise."""
    s_of = _heights_mm(spine)
    bowel = []
    for _ in range(int(rng.integers(8, 16))):
        bowel.append(
            {
                "centre_ras": (
                    rng.uniform(-90, 90),
                    rng.uniform(25, 120),
                    rng.uniform(s_of["S3"] - 40, s_of["L1"]),
                ),
                "radii_mm": tuple(rng.uniform(10, 28, size=3)),
                "signal": rng.uniform(0.1, 0.8),
            }
        )
    strength = rng.uniform(0.3, 2.0)  # receive-field fall-off: from a body coil to a tight array
    return {
        "bowel": bowel,
        "bias": {
            "ap_gradient": strength * rng.uniform(0.1, 0.9),
            "a0_mm": rng.uniform(-40, 0),
            "si_curvature": strength * rng.uniform(-0.5, 0.0),
            "lr_gradient": strength * rng.uniform(-0.15, 0.15),
            "si_gradient": strength * rng.uniform(-0.3, 0.3),
        },
        "snr": snr,
        "noise_sigma": 0.36 / snr,  # SNR of vertebral marrow
    }


def _heights_mm(spine) -> dict[str, float]:
    """Each vertebra's centre along the body's axis (anatomy frame s)."""
    return {v.name: v.centre_as[1] for v in spine.vertebrae}


def _pelvis(rng: np.random.Generator, spine) -> list[dict]:
    """Bladder (urine: bright), pubic symphysis and posterior iliac bones (marrow), placed
    around the sacrum in the anatomy frame."""
    tip = spine.vertebra("S4")
    front_a = tip.centre_as[0] + tip.depth_mm / 2
    bladder = {
        "tissue": "urine",
        "centre_ras": (rng.normal(0, 5), front_a + rng.uniform(45, 80), tip.centre_as[1]
                       - rng.uniform(-10, 30)),
        "radii_mm": (rng.uniform(35, 55), rng.uniform(20, 40), rng.uniform(20, 40)),
    }  # fmt: skip
    pubis = {
        "tissue": "marrow",
        "centre_ras": (0.0, bladder["centre_ras"][1] + bladder["radii_mm"][1] + 12,
                       bladder["centre_ras"][2] - bladder["radii_mm"][2] - 5),
        "radii_mm": (18.0, 9.0, 22.0),
    }  # fmt: skip
    s1 = spine.vertebra("S1")
    ilia = [
        {
            "tissue": "marrow",
            "centre_ras": (side * rng.uniform(55, 70), s1.centre_as[0] - 20, s1.centre_as[1] - 15),
            "radii_mm": (12.0, 30.0, 45.0),
        }
        for side in (-1, 1)
    ]
    return [bladder, pubis, *ilia]


def sample_contrast(
    rng: np.random.Generator, base: dict, spread: float = 0.2, fat_range=None
) -> dict:
    """Tissue signals jittered independently by up to +-spread (scanners, coils, sequences);
    fat_range draws the fat signal itself (how well fat suppression worked)."""
    contrast = copy.deepcopy(base)
    for key, value in base.items():
        if isinstance(value, dict):
            factor = rng.uniform(1 - spread / 2, 1 + spread / 2)
            contrast[key] = {g: v * factor for g, v in value.items()}
        else:
            contrast[key] = value * rng.uniform(1 - spread, 1 + spread)
    if fat_range is not None:
        contrast["fat"] = rng.uniform(*fat_range)
    return contrast


def timepoint2_params(rng: np.random.Generator, params: dict, change_mm: dict) -> dict:
    """Same person 16-20 weeks later: articulated levels and the planted disc-height changes."""
    later = copy.deepcopy(params)
    for lvl in LUMBAR_LEVELS:
        later["disc_height_mm"][lvl] = params["disc_height_mm"][lvl] + change_mm.get(lvl, 0.0)
        later["disc_wedge_deg"][lvl] = params["disc_wedge_deg"][lvl] + rng.normal(0, 1.5)
    later["sacral_slope_deg"] = params["sacral_slope_deg"] + rng.normal(0, 3.0)
    return later


def sample_pose(rng: np.random.Generator, max_rotation_deg, max_shift_mm: float):
    """Rotation (deg about r, a, s: pitch in the sagittal plane, roll, yaw) and shift (mm)."""
    rotation = rng.uniform(-1, 1, size=3) * np.asarray(max_rotation_deg, dtype=float)
    shift = rng.normal(0, 1, size=3)
    shift *= rng.uniform(0, max_shift_mm) / max(np.linalg.norm(shift), 1e-9)
    return rotation, shift
