"""Score a run on real exams with manual masks (the layout of ``to_dicom.py`` of the real-data
folder): ``truth/sub-<id>_dseg.nii.gz`` holds each exam's manual mask in SPINEPS values, on its
own grid in the scanner frame of the DICOM series.

Masks hold discs only or vertebral bodies only, so the structure one of the run's labels lies
on is read from the masks' order along the spine: a mask's own structure where its centre is
nearest one, the disc between two body masks (or the body between two disc masks) where it is
nearest their midpoint. Heights are taken from the masks in the study's definition: for a disc
mask its own height (the mask leaves out the endplates: a lower bound), for two body masks the
gap between them; either perpendicular to the disc's mid-plane over the central 80 % of its
anteroposterior extent, in the mask's own mid-sagittal slice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from spineflow.core.anatomy import (
    LEVELS,
    VERTEBRA_LABELS,
    disc_label,
    lookup_table,
    vertebrae_between,
)
from spineflow.core.bids import derivatives_root, group_dir

# physical ranges (issue "measurement that holds"): a value outside is impossible
PLAUSIBLE_MM = {
    "height_mm": (2.0, 20.0),
    "width_mm": (20.0, 65.0),
    "intervertebral_distance_mm": (15.0, 50.0),
}
# a height against its masks: a disc mask's height less 1 mm up to it plus 3 mm
HEIGHT_BAND_MM = (-1.0, 3.0)
CENTRAL_SHARE = 0.8
NAMES = dict(lookup_table())
ORDER = list(vertebrae_between("T10", "S1"))  # cranial to caudal


@dataclass(frozen=True)
class Anchor:
    """A structure's place along the spine: its name and centre (scanner RAS mm)."""

    name: str
    centre: np.ndarray
    from_mask: bool  # the structure's own mask, not the midpoint of its neighbours'


def _structure_sequence() -> list[str]:
    """T10, T10-T11, T11, ... L5, L5-S1, S1: bodies and discs cranial to caudal."""
    out = []
    for upper, lower in zip(ORDER[:-1], ORDER[1:]):
        out += [upper, f"{upper}-{lower}"]
    return out + [ORDER[-1]]


SEQUENCE = _structure_sequence()


def _value_of(name: str) -> int:
    return disc_label(name.split("-")[0]) if "-" in name else VERTEBRA_LABELS[name]


def _centroid_ras(affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(affine, np.argwhere(mask).mean(axis=0))


def anchors(mask_image: nib.Nifti1Image) -> list[Anchor]:
    """The masks' structures and those lying between two of them, cranial to caudal."""
    data = np.asarray(mask_image.dataobj)
    own = {
        name: _centroid_ras(mask_image.affine, data == _value_of(name))
        for name in SEQUENCE
        if np.any(data == _value_of(name))
    }
    found = []
    for k, name in enumerate(SEQUENCE):
        if name in own:
            found.append(Anchor(name, own[name], True))
        elif 0 < k < len(SEQUENCE) - 1 and SEQUENCE[k - 1] in own and SEQUENCE[k + 1] in own:
            found.append(Anchor(name, (own[SEQUENCE[k - 1]] + own[SEQUENCE[k + 1]]) / 2, False))
    return found


def lies_on(centre: np.ndarray, known: list[Anchor]) -> str:
    """The structure a label centred at ``centre`` lies on, in the sagittal plane (the masks'
    and the labels' slices need not be the same): the nearest anchor, if it lies nearer to it
    than three quarters of the way to that anchor's neighbours; 'none' where no anchor is that
    near but the label lies among them (within the masks' span along the spine). Beyond the
    span, the outermost anchor only if the label lies well within it (a quarter of the way to
    its neighbour: the structure beyond it has no mask), '?' otherwise."""
    if not known:
        return "?"
    points = np.array([a.centre[1:] for a in known])
    axis = points[-1] - points[0]
    along = (centre[1:] - points[0]) @ axis / max(axis @ axis, 1e-9)
    distance = np.linalg.norm(points - centre[1:], axis=1)
    k = int(np.argmin(distance))
    spacing = [np.linalg.norm(points[k] - points[j]) for j in (k - 1, k + 1) if 0 <= j < len(known)]
    if not 0.0 <= along <= 1.0:
        within_end = spacing and distance[k] <= BEYOND_SHARE * min(spacing)
        return known[k].name if within_end else "?"
    reach = 0.75 * min(spacing) if spacing else 15.0
    return known[k].name if distance[k] <= reach else "none"


BEYOND_SHARE = 0.25


# ------------------------------------------------------------------ heights from the masks


def _mid_slice_plane(data: np.ndarray, values: list[int]) -> tuple[np.ndarray, int]:
    """The masks' mid-sagittal slice (their left-right centroid; axis 0 of a canonical grid)
    as a float image of 1 inside any of ``values``."""
    union = np.isin(data, values)
    x = int(round(np.argwhere(union)[:, 0].mean()))
    return [(data[x] == v).astype(float) for v in values], x


def _crossing(profile: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """First and last positions where a sampled mask profile crosses 0.5 (NaN if never in)."""
    inside = np.flatnonzero(profile >= 0.5)
    if not len(inside):
        return float("nan"), float("nan")

    def at(i, j):
        a, b = profile[i], profile[j]
        return t[i] + (0.5 - a) / (b - a) * (t[j] - t[i]) if b != a else t[i]

    lo, hi = inside[0], inside[-1]
    first = at(lo - 1, lo) if lo > 0 else t[lo]
    last = at(hi, hi + 1) if hi + 1 < len(t) else t[hi]
    return float(first), float(last)


def _frame_of(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centre = points.mean(axis=0)
    _, _, axes = np.linalg.svd(points - centre, full_matrices=False)
    return centre, axes[0], np.array([-axes[0][1], axes[0][0]])


def _profiles(plane: np.ndarray, centre, ap, up, u_values, t_values) -> np.ndarray:
    points = centre + u_values[:, None, None] * ap + t_values[None, :, None] * up
    return ndimage.map_coordinates(
        plane, points.reshape(-1, 2).T, order=1, mode="constant"
    ).reshape(len(u_values), len(t_values))


def disc_mask_height_mm(data: np.ndarray, value: int, spacing: np.ndarray) -> float:
    """A disc mask's mean height over the central 80 % of its AP extent, in its mid-sagittal
    slice (``data`` canonical, 1 mm voxels expected; ``spacing`` of axes 1-2)."""
    (plane,), _ = _mid_slice_plane(data, [value])
    points = np.argwhere(plane > 0) * spacing
    if len(points) < 10:
        return float("nan")
    centre, ap, up = _frame_of(points)
    extent = (points - centre) @ ap
    u = np.linspace(*(CENTRAL_SHARE * np.array([extent.min(), extent.max()])), 41)
    t = np.arange(-25.0, 25.0, 0.1)
    heights = [
        np.subtract(*_crossing(p, t)[::-1])
        for p in _profiles(plane, centre / spacing, ap / spacing, up / spacing, u, t)
    ]
    return float(np.nanmean(heights))


def body_gap_height_mm(data: np.ndarray, upper: int, lower: int, spacing) -> float:
    """The gap between two body masks (caudal endplate of the upper to cranial of the lower),
    over the central 80 % of their facing endplates' AP extent, in their mid-sagittal slice."""
    (above, below), _ = _mid_slice_plane(data, [upper, lower])
    pa, pb = np.argwhere(above > 0) * spacing, np.argwhere(below > 0) * spacing
    if len(pa) < 10 or len(pb) < 10:
        return float("nan")
    axis = pa.mean(axis=0) - pb.mean(axis=0)  # lower body's centre to the upper's
    up = axis / np.linalg.norm(axis)
    ap = np.array([up[1], -up[0]])
    # the gap's centre: between the bodies' facing ends
    centre = (
        pa[np.argsort((pa - pb.mean(0)) @ up)[:20]].mean(0)
        + pb[np.argsort(-(pb - pa.mean(0)) @ up)[:20]].mean(0)
    ) / 2
    ends = (
        [((p - centre) @ ap).min() for p in (pa, pb)],
        [((p - centre) @ ap).max() for p in (pa, pb)],
    )
    lo, hi = max(ends[0]), min(ends[1])
    half = CENTRAL_SHARE * (hi - lo) / 2
    u = np.linspace((lo + hi) / 2 - half, (lo + hi) / 2 + half, 41)
    t = np.arange(0.0, 25.0, 0.1)
    scaled = (centre / spacing, ap / spacing, up / spacing)
    top = [_crossing(p, t)[0] for p in _profiles(above, *scaled, u, t)]
    bottom = [-_crossing(p, t)[0] for p in _profiles(below, *scaled[:2], -scaled[2], u, t)]
    return float(np.nanmean(np.subtract(top, bottom)))


def mask_heights(mask_image: nib.Nifti1Image) -> dict[str, tuple[float, str]]:
    """Per study level, the height the masks give and how: 'disc' (a disc mask's own height,
    a lower bound) or 'bodies' (the gap between two body masks)."""
    canonical = nib.as_closest_canonical(mask_image)
    data = np.asarray(canonical.dataobj).astype(int)
    spacing = np.asarray(canonical.header.get_zooms()[1:3], float)
    out = {}
    for level in LEVELS:
        upper, lower = level.split("-")
        if np.any(data == disc_label(upper)):
            out[level] = (disc_mask_height_mm(data, disc_label(upper), spacing), "disc")
        elif all(np.any(data == VERTEBRA_LABELS[v]) for v in (upper, lower)):
            gap = body_gap_height_mm(data, VERTEBRA_LABELS[upper], VERTEBRA_LABELS[lower], spacing)
            out[level] = (gap, "bodies")
    return out


def _mask_at(geometry: dict, mask_image: nib.Nifti1Image, value: int, u, t) -> np.ndarray:
    """The disc mask ``value`` (1 inside, linearly interpolated) at points (u, t) of a disc's
    frame (``geometry``: its record in the session's ``_discs.json``,
    ``measure.session.geometry_record``); u and t broadcast against each other."""
    origin, ap, up = (np.asarray(geometry[k], float) for k in ("origin_ras", "ap_ras", "up_ras"))
    u, t = np.broadcast_arrays(np.asarray(u, float), np.asarray(t, float))
    points = origin + u[..., None] * ap + t[..., None] * up
    voxels = nib.affines.apply_affine(np.linalg.inv(mask_image.affine), points.reshape(-1, 3))
    inside = (np.asarray(mask_image.dataobj) == value).astype(float)
    return ndimage.map_coordinates(inside, voxels.T, order=1, mode="constant").reshape(u.shape)


def surfaces_beyond_mask_mm(geometry: dict, mask_image: nib.Nifti1Image, value: int):
    """How far the run's two endplate surfaces of a disc lie beyond its disc mask's edges
    (mm, positive outwards: into the bone; upper, lower), along the disc's cranial axis over
    the central 80 % of its AP extent. NaN where the mask has no such disc."""
    centre_u = (geometry["u_post"] + geometry["u_ant"]) / 2
    half = CENTRAL_SHARE * (geometry["u_ant"] - geometry["u_post"]) / 2
    u = np.linspace(centre_u - half, centre_u + half, 21)
    t = np.arange(-25.0, 25.0, 0.1)
    profiles = _mask_at(geometry, mask_image, value, u[:, None], t[None, :])
    edges = np.array([_crossing(p, t) for p in profiles])
    if not np.isfinite(edges).any():
        return float("nan"), float("nan")
    upper = np.polyval(geometry["upper_coef"], u) - edges[:, 1]
    lower = edges[:, 0] - np.polyval(geometry["lower_coef"], u)
    return float(np.nanmean(upper)), float(np.nanmean(lower))


def ends_beyond_mask_mm(geometry: dict, mask_image: nib.Nifti1Image, value: int):
    """How far the run's two AP ends of a disc lie beyond its disc mask's (mm, positive
    outwards; posterior, anterior), along the disc's mid-plane (half-way between the fitted
    endplates), in the run's mid-sagittal surface: the disc width's error where the mask
    holds the whole annulus. NaN where the mid-plane does not cross the mask."""
    u = np.arange(geometry["u_post"] - 15.0, geometry["u_ant"] + 15.0, 0.1)
    t = (np.polyval(geometry["upper_coef"], u) + np.polyval(geometry["lower_coef"], u)) / 2
    first, last = _crossing(_mask_at(geometry, mask_image, value, u, t), u)
    return float(first - geometry["u_post"]), float(geometry["u_ant"] - last)


def _geometries(output_dir, participant_id: str, session_id: str) -> dict[str, dict]:
    """The session's measured discs' geometry records, by level."""
    anat = derivatives_root(output_dir) / participant_id / session_id / "anat"
    found = sorted(anat.glob("*_discs.json"))
    if not found:
        return {}
    records = json.loads(found[0].read_text()).get("Discs", [])
    return {r["level"]: r for r in records if r.get("status") == "ok" and "origin_ras" in r}


# ------------------------------------------------------------------ one run


def _dseg(output_dir, participant_id: str, session_id: str) -> Path | None:
    anat = derivatives_root(output_dir) / participant_id / session_id / "anat"
    found = sorted(anat.glob("*desc-vertebrae_dseg.nii.gz"))
    return found[0] if found else None


def labelled_by(dseg_path: Path | None) -> str:
    """What named the levels (the label map's sidecar: the marrow or the learned segmentation,
    or another tool's map) and, where the marrow did, the network's check of its count."""
    sidecar = dseg_path.with_name(dseg_path.name.replace(".nii.gz", ".json")) if dseg_path else None
    if sidecar is None or not sidecar.exists():
        return "no label map"
    facts = json.loads(sidecar.read_text())
    check = facts.get("LearnedCrossCheck")
    named_by = facts.get("BodiesFrom", facts.get("Method", "?"))
    return named_by + (f" (the network's check: {check})" if check else "")


def label_places(dseg_path: Path, known: list[Anchor]) -> list[dict]:
    """Each of the run's labels, the structure it lies on and whether that is its own."""
    image = nib.load(str(dseg_path))
    return placed_labels(np.asarray(image.dataobj), image.affine, known)


def placed_labels(labels: np.ndarray, affine: np.ndarray, known: list[Anchor]) -> list[dict]:
    """Each label of a label map (``labels`` on the grid of ``affine``), the structure it lies
    on (``lies_on``) and whether that is its own."""
    rows = []
    for value in sorted(int(v) for v in np.unique(labels) if v):
        name = NAMES.get(value, str(value))
        on = lies_on(_centroid_ras(affine, labels == value), known)
        rows.append({"label": name, "lies_on": on, "right": on == name})
    return rows


def score_session(
    output_dir,
    truth_dir,
    participant_id: str,
    session_id: str,
    discs: pd.DataFrame,
    vertebrae: pd.DataFrame,
) -> dict:
    """Labels, measured share, impossible values and heights of one exam."""
    on_disk = nib.load(str(Path(truth_dir) / f"{participant_id}_dseg.nii.gz"))
    # read once: the labels, the heights and every disc's surfaces look at it
    mask_image = nib.Nifti1Image(np.asarray(on_disk.dataobj), on_disk.affine, on_disk.header)
    known = anchors(mask_image)
    names_known = {a.name for a in known}
    dseg = _dseg(output_dir, participant_id, session_id)
    places = label_places(dseg, known) if dseg else []
    wrong = {p["label"] for p in places if p["lies_on"] != "?" and not p["right"]}
    heights = mask_heights(mask_image)
    geometries = _geometries(output_dir, participant_id, session_id)
    rows = []
    mine = discs[(discs.participant_id == participant_id) & (discs.session_id == session_id)]
    for row in mine.itertuples():
        truth, how = heights.get(row.level, (float("nan"), ""))
        beyond = ends = (float("nan"), float("nan"))
        if how == "disc" and row.status == "ok" and row.level in geometries:
            value = disc_label(row.level.split("-")[0])
            beyond = surfaces_beyond_mask_mm(geometries[row.level], mask_image, value)
            if np.isfinite(row.width_mm):  # a disc's AP ends stand in its geometry without one
                ends = ends_beyond_mask_mm(geometries[row.level], mask_image, value)
        rows.append(
            {
                "level": row.level,
                "in_view": row.level in names_known,
                "status": row.status,
                "height_mm": row.height_mm,
                "width_mm": row.width_mm,
                "mask_height_mm": truth,
                "mask": how,
                "upper_beyond_mm": beyond[0],
                "lower_beyond_mm": beyond[1],
                "posterior_end_beyond_mm": ends[0],
                "anterior_end_beyond_mm": ends[1],
                "note": row.note,
                "mislabelled": row.level in wrong,
            }
        )
    levels = pd.DataFrame(rows)
    ok = levels[levels.status == "ok"] if len(levels) else levels
    impossible = _impossible(mine, vertebrae, participant_id, session_id)
    return {
        "participant_id": participant_id,
        "session_id": session_id,
        "labels": places,
        "labels_right": bool(places) and not wrong,
        "labelled_by": labelled_by(dseg),
        "levels": levels,
        "in_view": int(levels["in_view"].sum()) if len(levels) else 0,
        "measured_ok": int((levels["in_view"] & (levels["status"] == "ok")).sum())
        if len(levels)
        else 0,
        "impossible_ok": impossible,
        "mislabelled_ok": int(ok["mislabelled"].sum()) if len(ok) else 0,
    }


def _impossible(discs: pd.DataFrame, vertebrae: pd.DataFrame, participant_id, session_id):
    """Values reported ok outside their physical range (``PLAUSIBLE_MM``)."""
    found = []
    mine = vertebrae[
        (vertebrae.participant_id == participant_id) & (vertebrae.session_id == session_id)
    ]
    for table, key in ((discs, "level"), (mine, "vertebra")):
        for measure, (lo, hi) in PLAUSIBLE_MM.items():
            if measure not in table:
                continue
            ok = table[(table.status == "ok") & table[measure].notna()]
            bad = ok[(ok[measure] < lo) | (ok[measure] > hi)]
            found += [f"{r[key]} {measure} {r[measure]:.1f}" for _, r in bad.iterrows()]
    return found


def evaluate_masks(output_dir, truth_dir) -> list[dict]:
    """Every exam of a run scored against its manual mask (``score_session``)."""
    tables = group_dir(output_dir)
    discs = pd.read_csv(tables / "discs.tsv", sep="\t", na_values="n/a")
    vertebrae = pd.read_csv(tables / "vertebrae.tsv", sep="\t", na_values="n/a")
    sessions = discs[["participant_id", "session_id"]].drop_duplicates()
    return [
        score_session(output_dir, truth_dir, p, s, discs, vertebrae)
        for p, s in sessions.itertuples(index=False)
        if (Path(truth_dir) / f"{p}_dseg.nii.gz").exists()
    ]


def height_errors(scores: list[dict]) -> pd.DataFrame:
    """Per ok disc with a mask height: measured minus mask, and whether it lies in the band."""
    rows = []
    for score in scores:
        for row in score["levels"].itertuples():
            if row.status == "ok" and np.isfinite(row.mask_height_mm):
                diff = row.height_mm - row.mask_height_mm
                rows.append(
                    {
                        "participant_id": score["participant_id"],
                        "level": row.level,
                        "mask": row.mask,
                        "difference_mm": diff,
                        "in_band": HEIGHT_BAND_MM[0] <= diff <= HEIGHT_BAND_MM[1],
                    }
                )
    return pd.DataFrame(
        rows, columns=["participant_id", "level", "mask", "difference_mm", "in_band"]
    )


def summary(scores: list[dict]) -> dict:
    """The targets' figures over all exams."""
    in_view = sum(s["in_view"] for s in scores)
    errors = height_errors(scores)
    return {
        "exams": len(scores),
        "labels_right": sum(s["labels_right"] for s in scores),
        "in_view": in_view,
        "measured_ok": sum(s["measured_ok"] for s in scores),
        "measured_share": sum(s["measured_ok"] for s in scores) / in_view if in_view else np.nan,
        "impossible_ok": sum(len(s["impossible_ok"]) for s in scores),
        "mislabelled_ok": sum(s["mislabelled_ok"] for s in scores),
        "heights_out_of_band": int((~errors["in_band"]).sum()) if len(errors) else 0,
        "heights_compared": len(errors),
    }


def missed(figures: dict) -> list[str]:
    """The real-data targets a run misses."""
    out = []
    if figures["labels_right"] < figures["exams"]:
        out.append(f"labels right in {figures['labels_right']} of {figures['exams']} exams")
    if not figures["measured_share"] >= 0.9:
        out.append(f"in-view discs measured ok {figures['measured_share']:.0%} (target 90 %)")
    for key in ("impossible_ok", "mislabelled_ok", "heights_out_of_band"):
        if figures[key]:
            out.append(f"{key.replace('_', ' ')}: {figures[key]}")
    return out


def format_scores(scores: list[dict]) -> str:
    lines = []
    for s in scores:
        labels = ", ".join(
            f"{p['label']}" + ("" if p["right"] else f"->{p['lies_on']}") for p in s["labels"]
        )
        lines.append(
            f"{s['participant_id']} {s['session_id']}: labels "
            f"{'right' if s['labels_right'] else 'WRONG'} [{labels}]; named by {s['labelled_by']}"
        )
        for row in s["levels"].itertuples():
            height = f"{row.height_mm:6.2f}" if np.isfinite(row.height_mm) else "   n/a"
            mask = (
                f"{row.mask_height_mm:6.2f} ({row.mask})"
                if np.isfinite(row.mask_height_mm)
                else "   n/a"
            )
            beyond = (
                f" surfaces beyond it {row.upper_beyond_mm:+.2f} / {row.lower_beyond_mm:+.2f}"
                if np.isfinite(row.upper_beyond_mm)
                else ""
            )
            if np.isfinite(row.posterior_end_beyond_mm):
                beyond += (
                    f"; width {row.width_mm:.2f}, ends beyond it "
                    f"{row.posterior_end_beyond_mm:+.2f} / {row.anterior_end_beyond_mm:+.2f}"
                )
            lines.append(
                f"    {row.level:6s} {row.status:10s} height {height} mask {mask}{beyond}"
                f"{'  MISLABELLED' if row.mislabelled and row.status == 'ok' else ''}"
                f"  {row.note if isinstance(row.note, str) else ''}"
            )
        for value in s["impossible_ok"]:
            lines.append(f"    impossible value reported ok: {value}")
    figures = summary(scores)
    errors = height_errors(scores)
    lines.append(
        f"Exams {figures['exams']}: labels right in {figures['labels_right']}; in-view study "
        f"discs measured ok {figures['measured_ok']} of {figures['in_view']} "
        f"({figures['measured_share']:.0%}); impossible values ok {figures['impossible_ok']}; "
        f"mislabelled values ok {figures['mislabelled_ok']}"
    )
    for how, group in errors.groupby("mask"):
        diff = group["difference_mm"]
        lines.append(
            f"Height minus mask ({how} masks, n {len(diff)}): mean {diff.mean():+.2f}, "
            f"SD {diff.std(ddof=1) if len(diff) > 1 else float('nan'):.2f}, range "
            f"{diff.min():+.2f} to {diff.max():+.2f} mm; outside "
            f"[{HEIGHT_BAND_MM[0]:+g}, {HEIGHT_BAND_MM[1]:+g}] mm: "
            f"{int((~group['in_band']).sum())}"
        )
    beyond = pd.concat([s["levels"] for s in scores]) if scores else pd.DataFrame()
    if "upper_beyond_mm" in beyond and beyond["upper_beyond_mm"].notna().any():
        both = beyond[beyond["upper_beyond_mm"].notna()]
        lines.append(
            f"Endplate surfaces beyond the disc masks' edges (n {len(both)}; mm, into the "
            f"bone): upper {both['upper_beyond_mm'].mean():+.2f} ± "
            f"{both['upper_beyond_mm'].std(ddof=1):.2f}, lower "
            f"{both['lower_beyond_mm'].mean():+.2f} ± {both['lower_beyond_mm'].std(ddof=1):.2f}"
        )
    if "posterior_end_beyond_mm" in beyond and beyond["posterior_end_beyond_mm"].notna().any():
        ends = beyond[beyond["posterior_end_beyond_mm"].notna()]
        width = ends["posterior_end_beyond_mm"] + ends["anterior_end_beyond_mm"]
        lines.append(
            f"Width minus the disc masks' AP extent along the mid-plane (n {len(ends)}): mean "
            f"{width.mean():+.2f}, SD {width.std(ddof=1):.2f}, range {width.min():+.2f} to "
            f"{width.max():+.2f} mm; ends beyond the mask (outwards): posterior "
            f"{ends['posterior_end_beyond_mm'].mean():+.2f} ± "
            f"{ends['posterior_end_beyond_mm'].std(ddof=1):.2f}, anterior "
            f"{ends['anterior_end_beyond_mm'].mean():+.2f} ± "
            f"{ends['anterior_end_beyond_mm'].std(ddof=1):.2f}"
        )
    miss = missed(figures)
    lines.append("Targets: all met" if not miss else "Targets missed: " + "; ".join(miss))
    return "\n".join(lines)


def scores_json(scores: list[dict]) -> str:
    """The scores as JSON (for the benchmark's record)."""
    out = [{**s, "levels": s["levels"].to_dict("records")} for s in scores]
    return json.dumps({"exams": out, "summary": summary(scores)}, indent=1, default=float)
