"""Sub-voxel endplate location from an intensity profile.

Across an endplate the signal goes from marrow through a thin cortex (bone: no signal; 0.4-0.6
mm, below the 1.1 mm pixel) into the disc. The first step out of the marrow is found at its
half-maximum crossing on a profile (``marrow_boundary``, ``fit_edge``: first guesses); the
surface is then fitted on the raw pixels around it with a partial-volume model of each pixel's
aperture (``fit_endplate``), for a cortex thickness given or estimated per participant by
``endplate.pooled_band`` with the band's signal (config ``measurement.endplate_cortex_mm``).

The disc's front and back ends are fitted on the raw pixels the same way (``fit_rim``): the
annulus, then a dark ligament of unknown thickness, then whatever lies beyond.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares
from scipy.special import i0e, i1e, ndtr

RUN_AWAY_MM = 2.0  # an endplate fit that moves further went beyond what its start's window saw
DISC_SIDE_MM = 1.75  # how much of the disc the edge model sees: past the blur, short of the nucleus


def marrow_boundary(
    t_mm: np.ndarray,
    values: np.ndarray,
    guess_mm: float,
    vertebra_side: int,
    plateau_mm: tuple[float, float] = (1.5, 8.0),
    reach_mm: float = 4.0,
    noise_sd: float = 0.0,
    line_noise: float | None = None,
):
    """Position of the half-way crossing at the first step out of the marrow (NaN if none).

    Walks from inside the vertebra (mid-plateau) towards the disc until the signal leaves the
    marrow plateau, takes the most different signal within the next 2.5 mm (a dark cortex and
    annulus, or a bright disc that hides a thin cortex) and returns where the profile crossed
    half-way between plateau and that extreme. Robust to a guess a millimetre or two off (or
    reach_mm beyond it); NaN without a clear step. The step must clear 4 times the noise: the
    plateau's own spread, or ``noise_sd`` where that is larger (a short plateau's few samples
    can make the spread small).

    With ``line_noise`` (the profile's own noise, where known), a dark line before that step
    marks the edge instead: the cortex, darker than the marrow by CORTEX_LINE_NOISES times
    that noise (and CORTEX_LINE_SHARE of the marrow), where the disc beyond it is about as
    bright as the marrow (an annulus) and the first clear step is the nucleus further in.
    """
    s = np.asarray(t_mm, dtype=float) * vertebra_side
    y = np.asarray(values, dtype=float)
    g = guess_mm * vertebra_side
    # the plateau may be short where the vertebra itself is cut by the field of view
    plateau = (s >= g + plateau_mm[0]) & (s <= g + plateau_mm[1]) & np.isfinite(y)
    if plateau.sum() < 4:
        return float("nan")
    marrow = np.median(y[plateau])
    noise = max(1.4826 * np.median(np.abs(y[plateau] - marrow)), noise_sd)
    threshold = max(0.2 * abs(marrow), 4 * noise)
    order = np.argsort(-s)  # from the vertebra towards the disc
    s_sorted, y_sorted = s[order], y[order]
    first = int(np.searchsorted(-s_sorted, -(g + sum(plateau_mm) / 2)))  # mid-plateau
    while first < len(y_sorted) and not np.isfinite(y_sorted[first]):  # outside the image
        first += 1
    k = first
    while k < len(y_sorted) and not abs(y_sorted[k] - marrow) > threshold:
        if s_sorted[k] < g - reach_mm or not np.isfinite(y_sorted[k]):
            return float("nan")
        k += 1
    if k >= len(y_sorted):
        return float("nan")
    line = _cortex_line(y_sorted, first, k, marrow, line_noise) if line_noise else None
    if line is not None:
        k = line
    sign = np.sign(marrow - y_sorted[k])  # +1: the disc side is darker
    ahead = np.flatnonzero((s_sorted <= s_sorted[k]) & (s_sorted >= s_sorted[k] - 2.5))
    if line is not None:  # the line's own darkest, not the step beyond it
        ahead = ahead[: max(1, np.searchsorted(-s_sorted[ahead], -s_sorted[line]) + 3)]
    extreme = np.nanmax(sign * (marrow - y_sorted[ahead]))
    half = marrow - sign * extreme / 2
    for j in range(first, min(ahead.max(), len(y_sorted) - 1)):
        if sign * (y_sorted[j] - half) >= 0 > sign * (y_sorted[j + 1] - half):
            frac = (y_sorted[j] - half) / (y_sorted[j] - y_sorted[j + 1])
            crossing = s_sorted[j] + frac * (s_sorted[j + 1] - s_sorted[j])
            return float(crossing * vertebra_side)
    return float("nan")


CORTEX_LINE_NOISES = 3.0
CORTEX_LINE_SHARE = 0.08


def _cortex_line(y: np.ndarray, first: int, step: int, marrow: float, noise: float) -> int | None:
    """Index of the first dark line between the marrow plateau (from ``first``) and the first
    step out of it (``step``): a local minimum darker than the marrow by CORTEX_LINE_NOISES
    times ``noise`` and CORTEX_LINE_SHARE of the marrow; None without one."""
    depth = max(CORTEX_LINE_NOISES * noise, CORTEX_LINE_SHARE * abs(marrow))
    for j in range(first + 1, min(step, len(y) - 1)):
        if marrow - y[j] >= depth and y[j] <= y[j - 1] and y[j] <= y[j + 1]:
            return j
    return None


def _design(s: np.ndarray, marrow_edges: np.ndarray, cortex_mm: float, blur_mm: float):
    """Blurred model basis for each candidate marrow edge (rows): marrow beyond the edge, no
    signal in the cortex (bone), then the disc's level; two arrays (edges x samples)."""
    beyond = (s[None, :] - marrow_edges[:, None]) / blur_mm
    surfaces = marrow_edges - cortex_mm
    return ndtr(beyond), ndtr((surfaces[:, None] - s[None, :]) / blur_mm)


def fit_edge(
    t_mm: np.ndarray,
    values: np.ndarray,
    guess_mm: float,
    vertebra_side: int,
    cortex_mm: float = 0.5,
    blur_mm: float = 0.5,
    line_noise: float | None = None,
) -> float:
    """Position (on t) of the endplate surface; vertebra_side +1 if marrow lies at larger t.

    The half-maximum crossing finds the marrow edge; a partial-volume model then refines it:
    marrow | cortex of ``cortex_mm`` with no signal (bone) | disc, blurred by a Gaussian of
    ``blur_mm`` (pixel and interpolation), fitted to the marrow side and the first
    ``DISC_SIDE_MM`` of the disc. Marrow and disc levels are free, so bright and dark discs are
    handled alike. The surface is the cortex's disc side. NaN without a clear step.
    ``line_noise``: the profile's noise, where known (``marrow_boundary``'s cortex line).
    """
    crossing = marrow_boundary(t_mm, values, guess_mm, vertebra_side, line_noise=line_noise)
    if not np.isfinite(crossing):
        return float("nan")
    s = np.asarray(t_mm, dtype=float) * vertebra_side
    y = np.asarray(values, dtype=float)
    b0 = crossing * vertebra_side
    window = np.isfinite(y) & (s >= b0 - cortex_mm - DISC_SIDE_MM) & (s <= b0 + 4.0)
    if window.sum() < 10:
        return (b0 - cortex_mm) * vertebra_side
    candidates = np.arange(b0 - 1.0, b0 + 1.0 + 1e-9, 0.02)
    marrow, disc = _design(s[window], candidates, cortex_mm, blur_mm)
    sse, _, _, solvable = _two_level_fit(marrow, disc, y[window], np.ones(int(window.sum())))
    sse = np.where(solvable, sse, np.inf)  # levels of either sign: a disc darker than marrow
    best = candidates[np.argmin(sse)] if np.isfinite(sse).any() else b0
    return float((best - cortex_mm) * vertebra_side)


# At its front and back the disc meets a longitudinal ligament: dark in every sequence (like
# cortical bone), of a thickness from nothing (a bulge past it) to a few millimetres, with fat,
# fluid or muscle of any brightness beyond it.
RIM_BAND_MM = np.arange(0.0, 2.51, 0.25)
# blur beyond the pixel's own aperture: the slab's partial volume across an oblique or curved rim
RIM_EXTRA_BLUR_MM = (0.0, 0.2, 0.35, 0.5, 0.7, 0.9)
RIM_STEP_MM = 0.05
# slices whose rims lie further apart than this do not see the same rim: the outer one has
# bright tissue against the disc (the disc's own extent changes by a hundredth of a millimetre
# across the slices next to the mid-sagittal plane)
RIM_SLICES_AGREE_MM = 1.0


def fit_rim(
    outward_mm: np.ndarray,
    widths: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    search_mm: tuple[float, float],
    noise_sd: float,
    slices: np.ndarray | None = None,
) -> float:
    """Where the disc ends, from the raw pixels around its rim: each pixel's centre outward_mm
    from a guess (outwards from the disc), its two sides' widths along that axis (n x 2), value
    and weight, and the slice it comes from (``slices``; None: all from one).

    Each slice's pixels are fitted on their own (``_slice_rim``): a vessel lying against the
    disc in one slice carries that slice's rim out by millimetres, while the next slice, with
    fat there, shows the disc's own. The rims within RIM_SLICES_AGREE_MM of the innermost are
    averaged, weighted by their pixels' weights. Where no slice shows a rim within the search,
    all the pixels are fitted at once and a rim at the search's end accepted (a disc as dark
    as its ligament, fluid behind both: the fluid's edge). NaN with too few pixels, no fit, or
    no step at all (tissue as bright as the disc against it).
    """
    slices = np.zeros(len(values), int) if slices is None else np.asarray(slices)
    rims, slice_weights = [], []
    for slice_index in np.unique(slices):
        mine = slices == slice_index
        rim = _slice_rim(
            outward_mm[mine], widths[mine], values[mine], weights[mine], search_mm, noise_sd
        )
        if np.isfinite(rim):
            rims.append(rim)
            slice_weights.append(weights[mine].sum())
    if not rims:
        return _slice_rim(outward_mm, widths, values, weights, search_mm, noise_sd, at_end=True)
    rims = np.array(rims)
    agree = rims <= rims.min() + RIM_SLICES_AGREE_MM
    return float(np.average(rims[agree], weights=np.array(slice_weights)[agree]))


def _slice_rim(outward_mm, widths, values, weights, search_mm, noise_sd, at_end=False):
    """The rim from one slice's pixels (arguments as ``fit_rim``'s; ``at_end``: a rim at an end
    of the search is one).

    A partial-volume model of every pixel (its square aperture, ``aperture_cdf``): the disc's
    level up to the rim, no signal over a band (the ligament), the level of whatever lies
    beyond. The two levels are solved for exactly (non-negative), the rim within
    ``search_mm``, the band's thickness (``RIM_BAND_MM``) and any extra blur
    (``RIM_EXTRA_BLUR_MM``) by exhaustive search. A first step alone cannot tell a thin ligament
    from the bright fluid behind it: its half-way crossing lands on either.

    Below a pixel, a band and a rim further in trade for each other (the same loss of signal),
    so the thinnest band that fits as well as the best, within what noise of ``noise_sd`` (at
    least 2 % of the signal: texture, an uneven annulus) explains, is kept. NaN with too few
    pixels, no fit, no step (one level fits as well), or (unless ``at_end``) the rim at an end
    of the search.
    """
    finite = np.isfinite(values)
    if finite.sum() < 10:
        return float("nan")
    x, y, weight = outward_mm[finite], values[finite], weights[finite]
    rims = np.arange(search_mm[0], search_mm[1] + 1e-9, RIM_STEP_MM)
    rim, band = (a.reshape(-1, 1) for a in np.meshgrid(rims, RIM_BAND_MM, indexing="ij"))
    sse = np.full((len(RIM_EXTRA_BLUR_MM), len(rim)), np.inf)
    for k, extra_mm in enumerate(RIM_EXTRA_BLUR_MM):
        # a Gaussian of SD extra_mm has the variance of a uniform width sqrt(12) extra_mm
        blurred = _with_uniform_blur(widths[finite], np.sqrt(12.0) * extra_mm)
        blurred = np.tile(blurred, (len(rim), 1))
        disc = aperture_cdf((rim - x).ravel(), blurred).reshape(len(rim), -1)
        beyond = 1 - aperture_cdf((rim + band - x).ravel(), blurred).reshape(len(rim), -1)
        fit_sse, level_disc, level_beyond, solvable = _two_level_fit(disc, beyond, y, weight)
        valid = solvable & (level_disc >= 0) & (level_beyond >= 0)
        sse[k, valid] = fit_sse[valid]
    if not np.isfinite(sse).any():
        return float("nan")
    per_candidate = sse.min(axis=0)
    sigma = max(noise_sd, 0.02 * float(np.median(np.abs(y))))
    allowance = 4 * sigma**2 * np.mean(weight)
    flat_sse = weight @ (y - np.average(y, weights=weight)) ** 2
    if per_candidate.min() > flat_sse - allowance:  # one level fits as well: no rim here
        return float("nan")
    fits = per_candidate <= per_candidate.min() + allowance
    thinnest = band[fits].min()
    chosen = np.flatnonzero(fits & (band[:, 0] == thinnest))
    found = float(rim[chosen[np.argmin(per_candidate[chosen])], 0])
    within = search_mm[0] < found < search_mm[1]
    return found if within or at_end else float("nan")


def _with_uniform_blur(widths: np.ndarray, uniform_mm: float) -> np.ndarray:
    """Pixel side widths (n x 2) with a further blur, given as a uniform width, folded into the
    shorter side: one uniform width of the same variance."""
    widths = widths.copy()
    shorter = np.argmin(widths, axis=1)
    rows = np.arange(len(widths))
    widths[rows, shorter] = np.hypot(widths[rows, shorter], uniform_mm)
    return widths


def _two_level_fit(first, second, y, weight):
    """Weighted least squares y ~ c1 * first + c2 * second for every row (candidate) at once,
    by the normal equations: each candidate's residual sum of squares, c1, c2, and whether its
    equations are solvable."""
    wf, ws = first * weight, second * weight
    a11, a12, a22 = np.sum(wf * first, 1), np.sum(wf * second, 1), np.sum(ws * second, 1)
    b1, b2 = wf @ y, ws @ y
    det = a11 * a22 - a12**2
    with np.errstate(divide="ignore", invalid="ignore"):
        c1 = (a22 * b1 - a12 * b2) / det
        c2 = (a11 * b2 - a12 * b1) / det
    sse = (weight * y) @ y - c1 * b1 - c2 * b2
    return sse, c1, c2, det > 1e-9 * a11 * a22


# ------------------------------------------------------------------ 2D partial-volume fit


@dataclass(frozen=True)
class EdgePixels:
    """Pixel centres near one endplate in a disc's frame: u along its AP axis, t along its
    cranial axis (mm); value; weight (share of the pixel's slice in the mid-sagittal surface);
    and the pixel's two edges as (u, t) vectors (its aperture, mm)."""

    u: np.ndarray
    t: np.ndarray
    value: np.ndarray
    weight: np.ndarray
    aperture: np.ndarray  # 2 x 2: the pixel's sides in frame coordinates
    # the slice's thickness seen along an endplate normal that leaves the sagittal plane (a
    # spine tilted in the coronal plane): an extra width of partial volume, mm
    slab_mm: float = 0.0
    slices: np.ndarray | None = None  # the image slice each pixel comes from

    def select(self, keep: np.ndarray) -> EdgePixels:
        return replace(
            self,
            u=self.u[keep],
            t=self.t[keep],
            value=self.value[keep],
            weight=self.weight[keep],
            slices=None if self.slices is None else self.slices[keep],
        )


@dataclass(frozen=True)
class EndplateFit:
    coef: np.ndarray  # t(u) polynomial of the bony endplate surface (the cortex's disc side)
    sse: float  # weighted sum of squared residuals
    dof: int  # data points minus fitted parameters
    moved_mm: float  # largest distance from its start curve

    @property
    def held(self) -> bool:
        """Whether the fit stayed near its start: one that ran further found no endplate there,
        or one its start's window barely held (``endplate._refine_side`` refits it there)."""
        return self.moved_mm <= RUN_AWAY_MM


def signed_depth(pixels: EdgePixels, coef: np.ndarray, side: int):
    """Perpendicular distance of each pixel from the curve t = coef(u), positive into bone,
    and the widths of the pixel's sides projected on the curve's normal there."""
    slope = np.polyval(np.polyder(coef), pixels.u)
    norm = np.sqrt(1 + slope**2)
    normal = np.column_stack([-slope, np.ones_like(slope)]) / norm[:, None]
    # the slab blurs like the pixel's shorter side
    widths = _with_uniform_blur(np.abs(normal @ pixels.aperture.T), pixels.slab_mm)
    return side * (pixels.t - np.polyval(coef, pixels.u)) / norm, widths


def aperture_cdf(x: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Share of a pixel lying below x (mm from its centre, along a normal): the pixel's square
    aperture projected on the normal is a trapezoid, the sum of two uniform widths a >= b."""
    a = np.maximum(widths[:, 0], widths[:, 1])
    b = np.maximum(np.minimum(widths[:, 0], widths[:, 1]), 1e-6)
    s = np.clip(x + (a + b) / 2, 0.0, a + b)
    rising = s**2 / (2 * a * b)
    flat = (s - b / 2) / a
    falling = 1 - (a + b - s) ** 2 / (2 * a * b)
    return np.where(s < b, rising, np.where(s < a, flat, falling))


def _model(depth, widths, cortex_mm, band_share=0.0) -> tuple[np.ndarray, np.ndarray]:
    """The bone | cortex | disc partial-volume model at each pixel: the shares of the marrow's
    and of the disc's level in its signal. The cortex's band gives ``band_share`` of the
    marrow's signal: none where it is bone alone (a phantom's), some where cartilage and
    partial volume within the slice fill it (a real T2's dark line)."""
    bone = aperture_cdf(depth - cortex_mm, widths)
    disc = aperture_cdf(-depth, widths)
    return bone + band_share * (1.0 - bone - disc), disc


@dataclass(frozen=True)
class _Bins:
    """Which AP bin each pixel lies in, and each pixel's weight in its bin's sums."""

    index: np.ndarray  # (n,)
    weights: np.ndarray  # (n, n_bins)

    @classmethod
    def of(cls, u: np.ndarray, weight: np.ndarray, bin_mm: float) -> _Bins:
        index = np.floor((u - u.min()) / bin_mm).astype(int)
        return cls(index, (index[:, None] == np.arange(index.max() + 1)) * weight[:, None])


def _levels_signal(marrow, disc, target, bins: _Bins) -> np.ndarray:
    """The model's signal at each pixel (last axis; any leading axes are other curves) with
    the marrow and disc levels of each AP bin solved by weighted least squares (each bin's
    2 x 2 normal equations in closed form). A bin whose two shares are proportional (one tissue
    only) is fitted by the stronger alone: the same signal as any least-squares solution."""
    mm, md, dd = (
        (marrow * marrow) @ bins.weights,
        (marrow * disc) @ bins.weights,
        (disc * disc) @ bins.weights,
    )
    my, dy = (marrow * target) @ bins.weights, (disc * target) @ bins.weights
    det = mm * dd - md**2
    with np.errstate(divide="ignore", invalid="ignore"):
        both = det > 1e-12 * mm * dd
        marrow_level = np.where(both, (dd * my - md * dy) / det, np.where(mm >= dd, my / mm, 0.0))
        disc_level = np.where(both, (mm * dy - md * my) / det, np.where(mm < dd, dy / dd, 0.0))
    # an empty bin: no level
    marrow_level, disc_level = np.nan_to_num(marrow_level), np.nan_to_num(disc_level)
    return marrow_level[..., bins.index] * marrow + disc_level[..., bins.index] * disc


def rician_mean(signal: np.ndarray, noise_sd: float) -> np.ndarray:
    """Mean magnitude of a pixel whose true signal is ``signal`` under complex Gaussian noise
    of SD ``noise_sd`` (the Rice distribution's mean): noise_sd * sqrt(pi / 2) where there is
    no signal, the signal itself far above the noise."""
    if noise_sd <= 0:
        return np.abs(signal)
    x = np.asarray(signal, float) ** 2 / (4 * noise_sd**2)
    # L_1/2(-2x) with exponentially scaled Bessel functions (no overflow at high SNR)
    laguerre = (1 + 2 * x) * i0e(x) + 2 * x * i1e(x)
    return noise_sd * np.sqrt(np.pi / 2) * laguerre


def _residuals(coef, pixels: EdgePixels, side, cortex_mm, noise_sd, bins: _Bins, band_share,
               shifts_mm=None):  # fmt: skip
    """Pixel values minus the model's mean magnitudes. The levels are linear in the model's
    signal; its Rician lift (large only where the cortex fills most of a pixel) is taken from
    a first linear solve and held while the levels are solved again (a fixed-point step).
    ``shifts_mm``: the residuals of the curve moved along t by each shift at once, one row
    each."""
    depth, widths = signed_depth(pixels, coef, side)
    if shifts_mm is not None:  # a constant shift keeps the slope: the depth moves, not the normal
        slope = np.polyval(np.polyder(coef), pixels.u)
        depth = depth - side * np.asarray(shifts_mm)[:, None] / np.sqrt(1 + slope**2)
    marrow, disc = _model(depth, widths, cortex_mm, band_share)
    lift = np.zeros(depth.shape)
    for _ in range(2):
        signal = _levels_signal(marrow, disc, pixels.value - lift, bins)
        lift = rician_mean(signal, noise_sd) - signal
    return (signal + lift - pixels.value) * np.sqrt(pixels.weight)


def fit_endplate(
    pixels: EdgePixels,
    coef0: np.ndarray,
    side: int,
    cortex_mm: float,
    noise_sd: float,
    bin_mm: float = 3.0,
    band_share: float = 0.0,
) -> EndplateFit | None:
    """Fit the endplate surface t = coef(u) to the pixels around it (side +1: bone at larger t).

    Every pixel is compared with a partial-volume model: marrow beyond a cortex of
    ``cortex_mm`` (bone: no signal), the disc in front of it; each pixel is the mean over its
    square aperture (``aperture_cdf``), seen as a magnitude under noise of SD ``noise_sd``
    (``rician_mean``: a pixel mostly of cortex shows the noise floor, one that is mostly marrow
    or disc its own signal; a floor added to every pixel's cortex share would make the cortex
    look thicker than it is).
    Marrow and disc levels are free per AP bin of ``bin_mm`` and solved for exactly at each
    step (variable projection), the curve by Levenberg-Marquardt. None if it does not
    converge; whether it stayed near its start is the caller's (``EndplateFit.held``).
    """
    if not len(pixels.u):
        return None
    bins = _Bins.of(pixels.u, pixels.weight, bin_mm)
    n_parameters = 2 * bins.weights.shape[1] + len(coef0)
    if len(pixels.u) < n_parameters + 10:
        return None
    args = (pixels, side, cortex_mm, noise_sd, bins, band_share)
    # the squared residual is not convex in the curve's offset (a thin dark band can be matched
    # a pixel off): start from the best of a scan of offsets within a millimetre
    shifts_mm = np.arange(-1.0, 1.01, 0.1)
    scan = np.sum(_residuals(np.asarray(coef0, float), *args, shifts_mm=shifts_mm) ** 2, axis=1)
    start = np.asarray(coef0, float) + np.eye(len(coef0))[-1] * shifts_mm[np.argmin(scan)]
    result = least_squares(_residuals, start, args=args, method="lm")
    u = np.linspace(pixels.u.min(), pixels.u.max(), 9)
    moved = np.abs(np.polyval(result.x, u) - np.polyval(coef0, u)).max()
    if not result.success:
        return None
    return EndplateFit(result.x, float(np.sum(result.fun**2)), len(pixels.u) - n_parameters,
                       float(moved))  # fmt: skip
