"""One session's discs and vertebrae measured (docs/DESIGN.md definitions; docs/methods/)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spineflow.core.anatomy import LEVELS, VERTEBRAE
from spineflow.core.discs import locate_disc
from spineflow.core.midsagittal import Volume
from spineflow.core.plane import Band, DiscResult, Plane
from spineflow.measure import pfirrmann
from spineflow.measure.distance import intervertebral_distance
from spineflow.measure.endplate import (
    UNFITTED,
    cortex_misfits,
    cranial_key,
    locate_far_endplate,
    pooled_band,
    refine_disc,
)
from spineflow.measure.settings import DEFAULTS, MeasureSettings

DISC_LEVELS = LEVELS + ("L2-L3",)  # L2-L3 gives L3's cranial endplate


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


def _located_discs(plane: Plane, *, settings: MeasureSettings = DEFAULTS) -> dict[str, DiscResult]:
    """Every level's disc located on the plane, with the far endplate below S1 and, for each
    vertebra whose disc above was not located, its cranial endplate found from its disc below
    (``locate_far_endplate``; under ``cranial_key``: the field of view may cut a disc and leave
    the endplate below it in view)."""
    located = {level: locate_disc(plane, level) for level in DISC_LEVELS}
    located["S1-S2"] = locate_far_endplate(plane, located["L5-S1"], -1, settings=settings)
    for above, below in zip(DISC_ORDER[:-1], DISC_ORDER[1:]):
        if located[above].status != "ok":
            far = locate_far_endplate(plane, located[below], +1, settings=settings)
            if far.status == "ok" or located[above].status == "failed":
                located[cranial_key(above)] = far
    return located


DISC_ORDER = ("L2-L3", *LEVELS)  # cranial to caudal


def _whole_discs(located: dict[str, DiscResult]) -> list[DiscResult]:
    return [d for d in located.values() if d.status == "ok" and d.has_both_endplates]


def cortex_fit(volume: Volume, labels: np.ndarray, thickness_mm: float | None = None,
               midline: np.ndarray | None = None, *,
               settings: MeasureSettings = DEFAULTS) -> dict:  # fmt: skip
    """One session's cortex misfit as a record for ``pooled_band``."""
    plane = Plane(volume, labels, midline, thickness_mm)
    return _cortex_record(plane, _located_discs(plane, settings=settings), settings=settings)


def _cortex_record(
    plane: Plane, located: dict[str, DiscResult], *, settings: MeasureSettings
) -> dict:
    curves = cortex_misfits(plane, _whole_discs(located), settings=settings)
    return {"GridMillimetres": list(settings.cortex_grid_mm),
            "BandShares": list(settings.band_share_grid),
            "EndplateMisfits": [np.where(np.isfinite(c), c, None).tolist() for c in curves],
            "Endplates": len(curves)}  # fmt: skip


# ------------------------------------------------------------------ one session


def _csf_level(plane: Plane, disc: DiscResult, *, settings: MeasureSettings) -> float:
    """CSF signal beside the disc: the brightest tenth of the canal band behind it."""
    behind = np.arange(*settings.csf_behind_mm, settings.csf_step_mm)
    u, t = np.meshgrid(disc.u_post - behind, settings.csf_rows_mm)
    values = plane.sample_mm(disc.frame.point(u.ravel(), t.ravel()))
    values = values[np.isfinite(values)]
    return float(np.percentile(values, settings.csf_percentile)) if values.size else float("nan")


def _grade(
    plane: Plane, disc: DiscResult, neighbours: list[DiscResult], *, settings: MeasureSettings
) -> dict:
    """Pfirrmann features and automatic grade of a measured disc (``pfirrmann``)."""

    def inside(u, t):
        return (
            (u > disc.u_post)
            & (u < disc.u_ant)
            & (t < np.polyval(disc.upper_coef, u))
            & (t > np.polyval(disc.lower_coef, u))
        )

    features = pfirrmann.disc_features(plane.pixels(disc.frame, inside), disc,
                                       _csf_level(plane, disc, settings=settings))  # fmt: skip
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
    *,
    settings: MeasureSettings = DEFAULTS,
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
    located = _located_discs(plane, settings=settings)
    facts = {"MidsagittalSliceIndex": float(np.mean(plane.midline))}
    if cortex_mm == "auto":
        if cortex_fits is None:
            cortex_fits = [_cortex_record(plane, located, settings=settings)]
        band, n_endplates, n_sessions = pooled_band(cortex_fits, settings=settings)
        facts.update(CortexEstimated=True, EndplatesForCortex=n_endplates,
                     SessionsForCortex=n_sessions)  # fmt: skip
        if not np.isfinite(band.thickness_mm):
            band = Band(settings.typical_cortex_mm, 0.0)
            facts["CortexNote"] = f"no endplate fitted: {settings.typical_cortex_mm} mm assumed"
    else:
        band = Band(float(cortex_mm), 0.0)
        facts["CortexEstimated"] = False
    facts["CortexMillimetres"] = band.thickness_mm
    facts["CortexBandShareOfMarrow"] = band.share
    discs = {
        level: _height_placed(refine_disc(plane, d, band, settings=settings))
        if d.status == "ok"
        else d
        for level, d in located.items()
    }
    disc_rows = []
    for level in LEVELS:
        disc = discs[level]
        row = {"level": level, "height_mm": disc.height_mm, "width_mm": disc.width_mm,
               "pfirrmann_auto": np.nan, "status": disc.status, "note": disc.note,
               LATERAL_DIFFERENCE: np.nan}  # fmt: skip
        if disc.status == "ok":
            row[LATERAL_DIFFERENCE] = _lateral_difference_mm(plane, disc, band, settings=settings)
            row.update(_grade(plane, disc, [discs[lvl] for lvl in DISC_LEVELS], settings=settings))
        disc_rows.append(row)
    vertebra_rows = [intervertebral_distance(plane, discs, name) for name in VERTEBRAE]
    facts["Discs"] = [geometry_record(plane, discs[level]) for level in LEVELS]
    return pd.DataFrame(disc_rows), pd.DataFrame(vertebra_rows), facts


# the discs table's check of each height against its neighbouring slices (``qc``)
LATERAL_DIFFERENCE = "height_lateral_difference_mm"


def _lateral_difference_mm(
    plane: Plane, disc: DiscResult, band: Band, *, settings: MeasureSettings
) -> float:
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
        heights.append(
            _height_placed(refine_disc(beside, located, band, settings=settings)).height_mm
        )
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
