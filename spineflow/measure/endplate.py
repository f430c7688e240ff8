"""Endplates on the raw pixels: the partial-volume fit with the participant's cortical band,
and far endplates."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from spineflow.core.anatomy import vertebrae_between
from spineflow.core.discs import (
    N_HEIGHT_PROFILES,
    PROFILE_STEP_MM,
    averaged_noise,
    curve_if_enough,
    edge_name,
    mean_height,
    vertebra_walls,
)
from spineflow.core.edges import (
    RUN_AWAY_MM,
    EdgePixels,
    EndplateFit,
    aperture_cdf,
    fit_endplate,
    marrow_boundary,
    signed_depth,
)
from spineflow.core.gridsearch import refined_minimum
from spineflow.core.plane import EDGE_AVERAGE_MM, Band, DiscResult, Frame, Plane
from spineflow.measure.settings import DEFAULTS, MeasureSettings

# why an endplate is left at its marrow edge (``refine_disc``), in notes
UNFITTED = (
    f"partial-volume fit ran over {RUN_AWAY_MM:g} mm from the marrow edge and did not settle "
    "where it went"
)


# ------------------------------------------------------------------ endplate refinement


def _endplate_pixels(
    plane: Plane, disc: DiscResult, side: int, *, settings: MeasureSettings
) -> EdgePixels:
    """Pixels around one endplate over the disc's central AP extent, the same for every candidate
    cortex (their residuals are compared): from the surface a typical cortex would give, into the
    bone up to ``bone_window_mm``, into the disc up to ``disc_window_mm`` (and 40 % of its height),
    or a pixel further where that holds no pixel wholly in the disc to set the disc's level (an
    endplate along the pixel grid puts a whole row just short). Only then: reaching further wherever
    few pixels lay wholly in the disc let 1.2 mm pixels see the nucleus brighten (their cortex came
    out 0.1 mm thick, their heights 0.3-0.5 mm low)."""
    coef = _surface_guess(disc, side, settings.typical_cortex_mm)
    u = disc.central_u
    height = disc.height_mm if np.isfinite(disc.height_mm) else 0.0  # a remnant: thin
    into_disc = float(
        np.clip(
            settings.disc_window_height_share * height,
            settings.min_disc_window_mm,
            settings.disc_window_mm,
        )
    )

    def window(reach_mm):
        def keep(pixel_u, pixel_t):
            depth = side * (pixel_t - np.polyval(coef, pixel_u))
            inside = (pixel_u >= u[0]) & (pixel_u <= u[-1])
            return inside & (depth > -reach_mm) & (depth < settings.bone_window_mm)

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
    coef = np.array(getattr(disc, edge_name(side)), dtype=float)
    coef[-1] -= side * cortex_mm
    return coef


def cortex_misfits(
    plane: Plane, discs: list[DiscResult], *, settings: MeasureSettings = DEFAULTS
) -> list[np.ndarray]:
    """How badly each candidate cortex band (``band_share_grid`` x ``cortex_grid_mm``) explains
    each of the discs' endplates: one array per endplate (a row per band share), its squared
    residuals scaled by its own residual variance under the best band of bone alone (noisy
    and clean endplates count alike; differences are chi-squared), inf where the fit ran
    away. Only endplates fitted with bone alone at every thickness."""
    candidates = [
        Band(c, share) for share in settings.band_share_grid for c in settings.cortex_grid_mm
    ]
    shape = (len(settings.band_share_grid), len(settings.cortex_grid_mm))
    curves = []
    for disc in discs:
        for side in (+1, -1):
            pixels = _endplate_pixels(plane, disc, side, settings=settings)
            fits = [_fit_side(disc, pixels, side, band, plane.noise_sigma) for band in candidates]
            sse = np.array([f.sse if f and f.held else np.inf for f in fits]).reshape(shape)
            if np.isfinite(sse[0]).all():
                curves.append(sse / (sse[0].min() / max(fits[0].dof, 1)))
    return curves


def pooled_band(fits: list[dict], *, settings: MeasureSettings = DEFAULTS) -> tuple[Band, int, int]:
    """The cortex band that best explains every endplate of the given cortex fits (a
    participant's sessions: the endplates do not change between them, their estimate's noise
    would) at once. Bone alone unless a band with signal beats it, on the endplates fitted
    with both, by ``band_evidence_per_endplate`` per endplate (the share that beats it by most);
    the thickness is the minimum of the chosen share's summed misfits, refined by the parabola
    through the best grid point. Returns the band (NaN thickness when no endplate was fitted)
    and the endplates and sessions it rests on. ``fits``: records of ``cortex_fit``."""
    fits = [f for f in fits if f["Endplates"] > 0]
    if not fits:
        return Band(float("nan"), 0.0), 0, 0
    for fit in fits:
        grid = np.asarray(fit["GridMillimetres"], float)
        shares = np.asarray(fit.get("BandShares", ()), float)
        cortex, bands = settings.cortex_grid_mm, settings.band_share_grid
        if (grid.shape != np.shape(cortex) or not np.allclose(grid, cortex)
                or shares.shape != np.shape(bands) or not np.allclose(shares, bands)):  # fmt: skip
            raise ValueError("cortex fit made on another candidate grid: re-run its session")
    # null: the band's fit ran away
    curves = np.array([c for f in fits for c in f["EndplateMisfits"]], dtype=float)
    gains = [0.0]  # per endplate fitted with both, over bone alone
    for share_row in range(1, len(settings.band_share_grid)):
        both = curves[np.isfinite(curves[:, share_row]).all(axis=1)]
        gain = (
            both[:, 0].sum(axis=0).min() - both[:, share_row].sum(axis=0).min() if len(both) else 0
        )
        gains.append(gain / max(len(both), 1))
    row = int(np.argmax(gains)) if max(gains) >= settings.band_evidence_per_endplate else 0
    used = curves[np.isfinite(curves[:, row]).all(axis=1)]
    total = used[:, row].sum(axis=0)
    best = refined_minimum(np.asarray(settings.cortex_grid_mm), total)
    if best is None:  # the thinnest or thickest candidate
        best = float(settings.cortex_grid_mm[int(np.argmin(total))])
    return Band(best, settings.band_share_grid[row]), len(used), len(fits)


def cranial_key(level: str) -> str:
    """Key of the vertebra below a disc's cranial endplate found without the disc."""
    return f"{level} from below"


def refine_disc(
    plane: Plane, disc: DiscResult, band: Band, *, settings: MeasureSettings = DEFAULTS
) -> DiscResult:
    """The disc's endplates refined on the raw pixels (``_refine_side``), those whose fit ran
    away named in ``unfitted``; a far endplate (``locate_far_endplate``) has one side only."""
    refined = replace(disc)
    for side, name in ((+1, "upper"), (-1, "lower")):
        if getattr(disc, f"{name}_coef") is None:
            continue
        coef, fitted = _refine_side(plane, disc, side, band, settings=settings)
        setattr(refined, f"{name}_coef", coef)
        refined.unfitted += () if fitted else (name,)
    if refined.has_both_endplates:
        refined.height_mm = mean_height(refined)
    return refined


# ------------------------------------------------------------------ a vertebra's far endplate


def _far_endplate_names(level: str, side: int) -> tuple[str, str]:
    """The level a far endplate found from a disc stands for, and its name in notes: below
    L5-S1 (side -1), S1's caudal endplate (the S1-S2 remnant); above a disc X-Y (+1), X's
    cranial endplate (the disc above X)."""
    if side < 0:
        return "S1-S2", "S1's caudal"
    vertebra = level.split("-")[0]
    return neighbour_discs(vertebra)[0], f"{vertebra}'s cranial"


def _detrended(profile: np.ndarray, *, settings: MeasureSettings) -> np.ndarray:
    """A profile over its running median (``trend_window_mm``): a body's marrow drifts over its
    height (residual bias field, texture) by more than the step tolerance, an endplate is a
    step within a few millimetres."""
    finite = np.isfinite(profile)
    if not finite.any():
        return profile
    window = int(round(settings.trend_window_mm / PROFILE_STEP_MM)) | 1
    filled = np.where(finite, profile, np.nanmedian(profile))
    trend = ndimage.median_filter(filled, window, mode="nearest")
    return np.where(finite, profile / np.maximum(trend, 1e-6), np.nan)


def locate_far_endplate(
    plane: Plane, disc: DiscResult, side: int, *, settings: MeasureSettings = DEFAULTS
) -> DiscResult:
    """The other endplate of the vertebra on one side of a measured disc (side -1: S1 below
    L5-S1, its caudal endplate, the S1-S2 remnant's cranial side; +1: e.g. L3 above L3-L4, its
    cranial endplate, L2-L3's caudal side): along the body's axis, the first step out of its
    marrow ``body_search_mm`` from the disc, on profiles averaged over EDGE_AVERAGE_MM along it
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
    half = settings.far_profile_share * (disc.u_ant - disc.u_post)
    u_values = np.linspace(-half, half, N_HEIGHT_PROFILES)
    reach = (
        settings.body_search_mm[0] - settings.body_profile_margin_mm,
        settings.body_search_mm[1] + settings.body_profile_margin_mm,
    )
    t = side * np.arange(*reach, PROFILE_STEP_MM)
    profiles = [plane.profile(frame, u, t, EDGE_AVERAGE_MM) for u in u_values]
    noise = averaged_noise(plane)
    near_mm, far_mm = settings.body_search_mm
    edges = np.array([
        marrow_boundary(t, _detrended(values, settings=settings), side * near_mm, -side,
                        plateau_mm=settings.marrow_plateau_mm, reach_mm=far_mm - near_mm,
                        noise_sd=noise / max(np.nanmedian(values), 1e-6))
        for values in profiles
    ])  # fmt: skip
    found = curve_if_enough(u_values, edges)
    if found is None:
        cut = np.mean([np.isnan(values).any() for values in profiles]) > settings.cut_profile_share
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


def _refine_side(
    plane: Plane, disc: DiscResult, side: int, band: Band, *, settings: MeasureSettings
):
    """One endplate's surface and whether it was fitted: the partial-volume fit, else the marrow
    edge moved by the cortex. A fit that leaves its start (``EndplateFit.held``) is fitted again
    in a window around where it went, at most ``rewindows`` times (the marrow edge's quadratic can
    bend into a body's rounded corners, a millimetre or two off the endplate): kept once a refit
    stays where the one before it went (``_settled``)."""
    start = _surface_guess(disc, side, band.thickness_mm)
    recentred = disc
    for attempt in range(settings.rewindows + 1):
        pixels = _endplate_pixels(plane, recentred, side, settings=settings)
        fit = _fit_side(recentred, pixels, side, band, plane.noise_sigma)
        if fit is None:
            break
        if fit.held if attempt == 0 else _settled(fit, start, disc.central_u, settings=settings):
            return fit.coef, True
        recentred = replace(disc, **{edge_name(side): _marrow_edge(fit.coef, side, band)})
    return start, False


def _settled(
    fit: EndplateFit, start: np.ndarray, u: np.ndarray, *, settings: MeasureSettings
) -> bool:
    """A refit that its window no longer moves (``converged_mm``), within ``refit_reach_mm`` of the
    start over the AP positions ``u``."""
    from_start = np.abs(np.polyval(fit.coef, u) - np.polyval(start, u)).max()
    return fit.moved_mm <= settings.converged_mm and from_start <= settings.refit_reach_mm


def _marrow_edge(surface: np.ndarray, side: int, band: Band) -> np.ndarray:
    """The marrow edge behind an endplate surface: ``_surface_guess`` undone."""
    coef = np.array(surface, dtype=float)
    coef[-1] += side * band.thickness_mm
    return coef


def neighbour_discs(name: str) -> tuple[str, str]:
    order = vertebrae_between("L2", "S2")
    i = order.index(name)
    return f"{order[i - 1]}-{name}", f"{name}-{order[i + 1]}"
