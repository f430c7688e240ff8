"""QC figures: what the pipeline placed, drawn on the image it used.

A session's figure, three panels side by side, anterior to the left as on a radiology
workstation:
- the whole mid-sagittal plane with every vertebra and disc outline and its label (a label one
  level off, or a "sacrum" behind the canal, shows at thumbnail size);
- the measured levels, close up: each disc's two fitted endplate curves (bold over the central
  80 % its height was averaged over), its width's two ends, the endplates' midpoints the
  intervertebral distance runs between, and each value with its status, coloured by status;
- N4's bias field on the same plane (what the correction divided out).

A participant's registration figure: around each registered vertebra, timepoint 1's plane with
the edges of timepoint 2 resampled onto it, by the whole-field transform and by the vertebra's
own (the per-level refinement the change is checked through); edges that lie on the grey
image's edges mean the two scans agree there.

Drawing works in plane millimetres (``PlaneView``): the disc geometry the measurement wrote
(scanner RAS) goes through the image's inverse affine, so the figure shows the stored numbers'
own geometry, not a redrawing of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from spineflow.core.anatomy import SACRUM, VERTEBRA_LABELS, lookup_table
from spineflow.core.midsagittal import Volume, canonical_volume, load_canonical, plane_at
from spineflow.core.plane import central_u, load_labels
from spineflow.report.plotting import STATUS_COLOURS, pyplot

BODY_COLOUR, DISC_COLOUR, SACRUM_COLOUR = "#66c2ff", "#ffd92f", "#ff7f00"
EDGE_COLOUR = "#ff00ff"
UPPER_COLOUR, LOWER_COLOUR = "#00ff7f", "#ff4040"
ZOOM_MARGIN_MM = 25.0
VERTEBRA_MARGIN_MM = 12.0  # around a vertebra's label in the registration figure: its discs
EDGE_SIGMA_MM = 1.0
EDGE_PERCENTILE = 90  # the strongest tenth of timepoint 2's gradients are drawn as its edges
VALUE_ROOM_MM = 45.0  # beyond the discs' anterior ends, for their values
_NAME_OF = dict(lookup_table())
_LABEL_OF = {name: value for value, name in _NAME_OF.items()}
NOTE_CHARACTERS = 110  # a note longer than this is cut in the figure (the TSV has it whole)


@dataclass(frozen=True)
class PlaneView:
    """A sagittal surface of the image and of the label map, with the mapping of scanner
    coordinates onto it (millimetres along the image's AP and SI axes)."""

    image: np.ndarray  # [y, z]
    labels: np.ndarray  # [y, z]
    spacing_mm: np.ndarray  # (y, z)
    inverse_affine: np.ndarray

    def to_plane_mm(self, points_ras: np.ndarray) -> np.ndarray:
        """(n, 3) scanner RAS mm -> (n, 2) plane mm (AP, SI), projected along the slices."""
        voxels = nib.affines.apply_affine(self.inverse_affine, np.atleast_2d(points_ras))
        return voxels[:, 1:] * self.spacing_mm

    @property
    def extent_mm(self) -> list[float]:
        """imshow extent with voxel centres at index x spacing."""
        (ny, nz), (sy, sz) = self.image.shape, self.spacing_mm
        return [-0.5 * sy, (ny - 0.5) * sy, -0.5 * sz, (nz - 0.5) * sz]


def plane_view(volume, labels: np.ndarray, midline) -> PlaneView:
    """The plane at ``midline`` (fractional slice index, one per row or one for all); labels
    from the nearest slice."""
    rows = np.arange(volume.data.shape[2])
    slices = np.clip(np.rint(np.broadcast_to(midline, rows.shape)).astype(int), 0,
                     volume.data.shape[0] - 1)  # fmt: skip
    return PlaneView(
        image=plane_at(volume, midline),
        labels=labels[slices, :, rows].T,
        spacing_mm=volume.plane_spacing_mm,
        inverse_affine=np.linalg.inv(volume.affine),
    )


@dataclass(frozen=True)
class DiscDrawing:
    """One measured disc in plane mm: endplate curves over its AP extent and over the central
    stretch its height was averaged over, the width's ends on its mid-plane, the endplates'
    midpoints (the intervertebral distance's ends)."""

    level: str
    upper: np.ndarray
    lower: np.ndarray
    upper_central: np.ndarray
    lower_central: np.ndarray
    width_ends: np.ndarray
    midpoints: np.ndarray


def disc_drawing(view: PlaneView, record: dict) -> DiscDrawing:
    """A disc's geometry record (``measure.session.geometry_record``) in the view's millimetres."""
    origin, ap, up = (np.asarray(record[key]) for key in ("origin_ras", "ap_ras", "up_ras"))
    upper_coef, lower_coef = np.asarray(record["upper_coef"]), np.asarray(record["lower_coef"])

    def on_plane(u, v):
        return view.to_plane_mm(origin + np.outer(u, ap) + np.outer(v, up))

    def curve(coef, u):
        return on_plane(u, np.polyval(coef, u))

    whole = np.linspace(record["u_post"], record["u_ant"], 101)
    centre = (record["upper_mid_u"] + record["lower_mid_u"]) / 2
    central = central_u(record["u_post"], record["u_ant"], centre)
    ends = np.array([record["u_post"], record["u_ant"]])
    mid_plane = (np.polyval(upper_coef, ends) + np.polyval(lower_coef, ends)) / 2
    midpoints_u = np.array([record["upper_mid_u"], record["lower_mid_u"]])
    midpoints_v = [np.polyval(upper_coef, midpoints_u[0]), np.polyval(lower_coef, midpoints_u[1])]
    return DiscDrawing(
        level=record["level"],
        upper=curve(upper_coef, whole),
        lower=curve(lower_coef, whole),
        upper_central=curve(upper_coef, central),
        lower_central=curve(lower_coef, central),
        width_ends=on_plane(ends, mid_plane),
        midpoints=on_plane(midpoints_u, np.asarray(midpoints_v)),
    )


def session_figure(image_path, dseg_path, dseg_sidecar, discs_sidecar, discs_tsv, vertebrae_tsv,
                   field_path, out_path, title: str) -> None:  # fmt: skip
    """Draw the session's figure (module docstring) to ``out_path`` (PNG)."""
    volume = load_canonical(image_path)
    facts = json.loads(Path(discs_sidecar).read_text())
    segmentation = json.loads(Path(dseg_sidecar).read_text())
    midline = _surface(segmentation, facts["MidsagittalSliceIndex"])
    view = plane_view(volume, load_labels(dseg_path, volume), midline)
    field = plane_at(load_canonical(field_path), midline)
    records = [r for r in facts["Discs"] if "origin_ras" in r]
    drawings = [disc_drawing(view, record) for record in records]
    discs = pd.read_csv(discs_tsv, sep="\t", keep_default_na=False)
    vertebrae = pd.read_csv(vertebrae_tsv, sep="\t", keep_default_na=False)
    subtitle = f"bodies from {segmentation.get('BodiesFrom', segmentation.get('Method', '?'))}"
    _draw(view, field, drawings, discs, vertebrae, f"{title} ({subtitle})", out_path)


def _surface(segmentation: dict, fallback) -> np.ndarray:
    """The mid-sagittal surface the segmentation recorded (slice index per row), or
    ``fallback`` where it recorded none (an external label map)."""
    return np.asarray(segmentation.get("MidsagittalSurfaceSliceIndexPerRow", fallback), float)


def _save(fig, out_path) -> None:
    fig.savefig(out_path, dpi=80, pil_kwargs={"compress_level": 3})
    pyplot().close(fig)


def _grey(axis, view: PlaneView) -> None:
    axis.imshow(view.image.T, origin="lower", cmap="gray", extent=view.extent_mm,
                vmin=0, vmax=np.percentile(view.image, 99.5))  # fmt: skip


def _draw(view, field, drawings, discs, vertebrae, title, out_path) -> None:
    plt = pyplot()
    fig = plt.figure(figsize=(16, 8))  # fixed margins: a constrained layout costs a second
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 1.25, 1], height_ratios=[5, 1.4],
                            left=0.05, right=0.95, top=0.91, bottom=0.01, wspace=0.25,
                            hspace=0.17)  # fmt: skip
    whole, zoom, bias = (fig.add_subplot(grid[0, i]) for i in range(3))
    table = fig.add_subplot(grid[1, :])
    for axis in (whole, zoom):
        _grey(axis, view)
        _outlines(axis, view)
    whole.set_title("labels on the mid-sagittal plane")
    for drawing in drawings:
        _draw_disc(zoom, drawing, _row(discs, drawing.level))
    _mark_unmeasured(zoom, view, discs, {d.level for d in drawings})
    _show_around(whole, view, [_label_points(view, view.labels > 0)], 2 * ZOOM_MARGIN_MM)
    study_discs = [_label_points(view, view.labels == _LABEL_OF.get(level, -1))
                   for level in discs["level"]]  # fmt: skip
    _show_around(zoom, view, [np.r_[d.upper, d.lower] for d in drawings] + study_discs,
                 ZOOM_MARGIN_MM, VALUE_ROOM_MM)  # fmt: skip
    zoom.set_title("endplates (bold: where height is averaged), width ends, midpoints")
    shown = bias.imshow(field.T, origin="lower", cmap="magma", extent=view.extent_mm)
    bias.invert_xaxis()  # anterior on the left, as on a radiology workstation
    fig.colorbar(shown, ax=bias, shrink=0.6, label="N4 bias field (signal divided by it)")
    bias.set_title("bias field, same plane")
    for axis in (whole, zoom, bias):
        axis.set_xlabel("anterior  <-  mm  ->  posterior")
    whole.set_ylabel("inferior  <-  mm  ->  superior")
    _values_table(table, discs, vertebrae)
    fig.suptitle(title, fontsize=14)
    _save(fig, out_path)


def _outlines(axis, view: PlaneView) -> None:
    y = np.arange(view.labels.shape[0]) * view.spacing_mm[0]
    z = np.arange(view.labels.shape[1]) * view.spacing_mm[1]
    for value in np.unique(view.labels[view.labels > 0]):
        mask = view.labels == value
        name = _NAME_OF.get(int(value), str(value))
        colour = DISC_COLOUR if "-" in name else BODY_COLOUR
        if name in ("S1", SACRUM):
            colour = SACRUM_COLOUR
        axis.contour(y, z, mask.T.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
        if "-" not in name:
            where = _label_points(view, mask).mean(axis=0)
            axis.text(*where, name, color=colour, fontsize=11, fontweight="bold",
                      ha="center", va="center", clip_on=True)  # fmt: skip


def _row(table: pd.DataFrame, level: str) -> pd.Series | None:
    rows = table[table["level"] == level]
    return rows.iloc[0] if len(rows) else None


def _draw_disc(axis, drawing: DiscDrawing, row) -> None:
    for curve, colour in ((drawing.upper, UPPER_COLOUR), (drawing.lower, LOWER_COLOUR)):
        axis.plot(*curve.T, color=colour, lw=0.8, alpha=0.7)
    for curve, colour in ((drawing.upper_central, UPPER_COLOUR),
                          (drawing.lower_central, LOWER_COLOUR)):  # fmt: skip
        axis.plot(*curve.T, color=colour, lw=2.2)
    axis.plot(*drawing.width_ends.T, ls=":", color="white", lw=1)
    axis.plot(*drawing.width_ends.T, "|", color="white", ms=12, mew=2)
    axis.plot(*drawing.midpoints.T, "o", color="cyan", ms=4)
    if row is not None:
        status = row["status"]
        text = f"{drawing.level} {status}\nh {_mm(row['height_mm'])}\nw {_mm(row['width_mm'])}"
        anterior = drawing.width_ends[np.argmax(drawing.width_ends[:, 0])]
        axis.annotate(text, anterior, xytext=(-6, 0), textcoords="offset points",
                      ha="right", va="center", fontsize=9, clip_on=True,
                      bbox=_status_box(status))  # fmt: skip


def _mm(value) -> str:
    try:
        return f"{float(value):.2f} mm"
    except ValueError:
        return "n/a"


def _show_around(axis, view: PlaneView, point_sets, margin_mm: float,
                 anterior_room_mm: float = 0.0) -> None:  # fmt: skip
    """Limit the axis to the points (plane mm) with a margin (and room on the anterior side),
    within the plane, or to the whole plane where there are none; anterior on the left, as on
    a radiology workstation."""
    points = np.concatenate([np.reshape(p, (-1, 2)) for p in point_sets] or [np.empty((0, 2))])
    extent = view.extent_mm
    if len(points):
        low, high = points.min(axis=0) - margin_mm, points.max(axis=0) + margin_mm
        high[0] += anterior_room_mm
        extent = [max(low[0], extent[0]), min(high[0], extent[1]),
                  max(low[1], extent[2]), min(high[1], extent[3])]  # fmt: skip
    axis.set_xlim(extent[1], extent[0])
    axis.set_ylim(extent[2], extent[3])


def _label_points(view: PlaneView, mask: np.ndarray) -> np.ndarray:
    """Plane mm of the pixels in ``mask``."""
    return np.argwhere(mask) * view.spacing_mm


def _mark_unmeasured(axis, view: PlaneView, discs: pd.DataFrame, drawn: set[str]) -> None:
    """A labelled disc without endplates to draw gets its status where its label lies."""
    for row in discs.itertuples():
        points = _label_points(view, view.labels == _LABEL_OF.get(row.level, -1))
        if row.level in drawn or not len(points):
            continue
        where = points.mean(axis=0)
        axis.annotate(f"{row.level}\n{row.status}", where, ha="center", va="center",
                      fontsize=10, clip_on=True, bbox=_status_box(row.status))  # fmt: skip


def _status_box(status: str) -> dict:
    return {"facecolor": STATUS_COLOURS.get(status, "white"), "alpha": 0.85, "edgecolor": "none"}


def _values_table(axis, discs: pd.DataFrame, vertebrae: pd.DataFrame) -> None:
    axis.axis("off")
    rows, colours = [], []
    for table, name, value in ((discs, "level", "height_mm"),
                               (vertebrae, "vertebra", "intervertebral_distance_mm")):  # fmt: skip
        for row in table.itertuples():
            label = "height" if value == "height_mm" else "intervertebral distance"
            note = "" if row.note == "n/a" else str(row.note)
            if len(note) > NOTE_CHARACTERS:
                note = note[: NOTE_CHARACTERS - 3] + "..."
            rows.append([getattr(row, name), label, _mm(getattr(row, value)), row.status, note])
            colours.append(STATUS_COLOURS.get(row.status, "white"))
    if not rows:
        return
    cells = axis.table(cellText=rows, colLabels=["", "measure", "value", "status", "note"],
                       loc="upper center", cellLoc="left", colLoc="left",
                       colWidths=[0.05, 0.13, 0.08, 0.07, 0.67])  # fmt: skip
    cells.auto_set_font_size(False)
    cells.set_fontsize(8)
    for i, colour in enumerate(colours, start=1):
        cells[i, 3].set_facecolor(colour)


# ------------------------------------------------------------------ registration


class _Resampler:
    """Timepoint 2 resampled onto timepoint 1's grid by ITK rigid transforms (files that map
    timepoint 1's points to timepoint 2's, as ``register`` writes them), returned in
    timepoint 1's canonical orientation (``load_canonical``). Only timepoint 1's header is
    read: its voxels are the caller's."""

    def __init__(self, fixed_path, moving_path):
        self.grid = sitk.ImageFileReader()
        self.grid.SetFileName(str(fixed_path))
        self.grid.ReadImageInformation()
        self.moving = sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
        self.fixed_path = fixed_path
        self.affine = nib.load(str(fixed_path)).affine

    def moved(self, transform_path) -> Volume:
        grid = self.grid
        moved = sitk.Resample(self.moving, grid.GetSize(), sitk.ReadTransform(str(transform_path)),
                              sitk.sitkLinear, grid.GetOrigin(), grid.GetSpacing(),
                              grid.GetDirection(), 0.0, sitk.sitkFloat32)  # fmt: skip
        # ITK's index (i, j, k) is the NIfTI's: its array comes out [k, j, i]
        voxels = sitk.GetArrayFromImage(moved).transpose(2, 1, 0)
        return canonical_volume(nib.Nifti1Image(voxels, self.affine), self.fixed_path)


def registration_figure(fixed_path, moving_path, fixed_dseg, fixed_dseg_sidecar, whole_xfm,
                        level_xfms: dict, register_sidecar, out_path, title: str):  # fmt: skip
    """Draw the participant's registration figure (module docstring) to ``out_path`` (PNG):
    one column per vertebra of ``level_xfms`` ({name: transform file}), the whole-field
    transform above, the vertebra's own below."""
    fixed = load_canonical(fixed_path)
    segmentation = json.loads(Path(fixed_dseg_sidecar).read_text())
    midline = _surface(segmentation, segmentation.get("MidsagittalSliceIndex", 0.0))
    view = plane_view(fixed, load_labels(fixed_dseg, fixed), midline)
    resampler = _Resampler(fixed_path, moving_path)
    whole = plane_at(resampler.moved(whole_xfm), midline)
    per_vertebra = json.loads(Path(register_sidecar).read_text()).get("PerVertebra", {})
    plt = pyplot()
    fig, axes = plt.subplots(2, len(level_xfms), figsize=(3.2 * len(level_xfms), 7),
                             squeeze=False)  # fmt: skip
    for column, (name, xfm) in enumerate(level_xfms.items()):
        points = _label_points(view, view.labels == VERTEBRA_LABELS[name])
        if not len(points):
            for axis in axes[:, column]:
                axis.axis("off")
            axes[0, column].set_title(f"{name}: not labelled")
            continue
        own = plane_at(resampler.moved(xfm), midline)
        for row, moved in enumerate((whole, own)):
            axis = axes[row, column]
            _grey(axis, view)
            _edges_over(axis, view, moved)
            _show_around(axis, view, [points], VERTEBRA_MARGIN_MM)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[0, column].set_title(f"{name}: whole field")
        axes[1, column].set_title(_refinement(name, per_vertebra.get(name, {})), fontsize=9)
    fig.suptitle(f"{title}: timepoint 2 (magenta edges) on timepoint 1", fontsize=13)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.01, wspace=0.05, hspace=0.2)
    _save(fig, out_path)


def _edges_over(axis, view: PlaneView, moved: np.ndarray) -> None:
    """The strongest gradients of the resampled plane, as contours over the grey one."""
    sigma_px = EDGE_SIGMA_MM / view.spacing_mm
    gradient = ndimage.gaussian_gradient_magnitude(moved, sigma_px)
    level = np.percentile(gradient[moved > 0], EDGE_PERCENTILE) if np.any(moved > 0) else 1.0
    y = np.arange(moved.shape[0]) * view.spacing_mm[0]
    z = np.arange(moved.shape[1]) * view.spacing_mm[1]
    axis.contour(y, z, gradient.T, levels=[level], colors=EDGE_COLOUR, linewidths=0.7)


def _refinement(name: str, facts: dict) -> str:
    """The subtitle of a vertebra's own transform: how far its refinement moved it."""
    if not facts.get("Refined"):
        return f"{name}: own transform (not refined)"
    cut = ", cut by the field of view" if facts.get("CutByFieldOfView") else ""
    return (f"{name}: own, refined {facts['RefinementShiftMillimetres']:.2f} mm / "
            f"{facts['RefinementRotationDegrees']:.2f} deg{cut}")  # fmt: skip
