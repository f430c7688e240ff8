"""The cohort report (``group/report.html``): one self-contained page to look at before
trusting the tables.

Its first screen shows every participant's status, one row each: level by level and session
beside session, each cell coloured by status with its value and, on hover, its note. Then every
session's QC figure as a thumbnail framed in its worst status (a click opens the full figure
further down), every participant's registration figure, every value that is not ``ok`` with its
reason, the statistics (Tables 2-4 and the rest, as ``statistics.html`` has them) and what was
run. Images are embedded (JPEG, base64): the page needs no network and no other file.
"""

from __future__ import annotations

import base64
import html
import io
import re
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from spineflow import __version__
from spineflow.core.anatomy import LEVELS, VERTEBRAE
from spineflow.core.io import atomic_write_text
from spineflow.core.plane import CENTRAL_SHARE
from spineflow.core.runner import is_placeholder
from spineflow.core.tables import KINDS, measures, read_text_tsv
from spineflow.measure.qc import QcLimits
from spineflow.report.plotting import STATUS_COLOURS, pyplot

THUMBNAIL_WIDTH_PX = 440
# worst first: a session's frame takes the worst status among its values (a level out of the
# field of view is no fault of the session's)
STATUS_ORDER = ("failed", "qc_failed", "ok", "not_in_fov")
# config keys that hold paths (which may name people or projects) or secrets: never shown
PRIVATE_KEYS = ("dicom_dir", "participants_tsv", "id_map", "output_dir", "pseudonym_salt",
                "reads_tsv", "adjudication_tsv", "sessions_tsv", "qc_ratings_tsv")  # fmt: skip
STYLE = """
body{font-family:sans-serif;max-width:1500px;margin:1em auto;color:#222;padding:0 1em}
h1{margin-bottom:0.2em} .lead{color:#555;margin-top:0}
table.grid{border-collapse:collapse;font-size:0.85em}
table.grid td,table.grid th{padding:1px 6px;border:1px solid #fff;text-align:center;
line-height:1.2}
table.grid th{background:#eee} .status{color:#000;min-width:5em}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}
.thumbs a{display:block;border:5px solid;text-decoration:none;color:#222;font-size:0.8em}
.thumbs img{display:block} .nofigure{width:420px;padding:10px;font-size:1.2em}
.full img{max-width:100%} .full{margin-bottom:2em}
table.stats,table.excluded{border-collapse:collapse;font-size:0.85em;margin-bottom:1em}
table.stats th,table.stats td,table.excluded td,table.excluded th{padding:2px 8px;
border-bottom:1px solid #ddd;text-align:left} table.stats th,table.excluded th{background:#f3f3f3}
.legend span{display:inline-block;padding:1px 8px;margin-right:6px}
pre{background:#f6f6f6;padding:0.5em;font-size:0.8em;overflow:auto}
"""


def write_cohort_report(discs_tsv, vertebrae_tsv, statistics_html, session_figures,
                        registration_figures, config: dict, out_path) -> None:  # fmt: skip
    """Write the report. ``session_figures``: (participant_id, session_id, PNG path);
    ``registration_figures``: (participant_id, PNG path); ``config``: the run's settings.
    A figure that is a failed step's placeholder is left out (its session shows why)."""
    session_figures = [f for f in session_figures if not is_placeholder(f[-1])]
    registration_figures = [f for f in registration_figures if not is_placeholder(f[-1])]
    discs, vertebrae = read_text_tsv(discs_tsv), read_text_tsv(vertebrae_tsv)
    statuses = _session_statuses(discs, vertebrae)
    parts = [
        f"<h1>spineflow cohort report</h1>\n<p class='lead'>{_summary(discs, vertebrae)}</p>",
        _legend(),
        "<h2>Status of every value</h2>",
        _status_grid(discs, vertebrae),
        "<h2>Sessions: where each value was measured</h2>",
        _session_tiles(session_figures, statuses, discs),
        "<h2>Registration: timepoint 2 on timepoint 1</h2>",
        _thumbnails([(p, "", path) for p, path in registration_figures], {}, "registration"),
        "<h2>Change from timepoint 1 to timepoint 2</h2>",
        _change_plots({"discs": discs, "vertebrae": vertebrae}),
        "<h2>Pfirrmann grades (automatic)</h2>",
        _grade_plot(discs),
        "<h2>Values not reported ok, and why</h2>",
        _excluded(discs, vertebrae),
        "<h2>Statistics</h2>",
        _statistics_body(statistics_html),
        "<h2>Figures, full size</h2>",
        _full_figures(session_figures, registration_figures),
        "<h2>Methods</h2>",
        f"<p>{html.escape(methods_paragraph(config))}</p>",
        "<h2>What was run</h2>",
        _provenance(config),
    ]
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>spineflow cohort report</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    atomic_write_text(out_path, page)


def _summary(discs: pd.DataFrame, vertebrae: pd.DataFrame) -> str:
    counts = discs["status"].value_counts()
    shown = ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER[::-1] if s in counts)
    return (
        f"{discs['participant_id'].nunique()} participants, "
        f"{len(discs[['participant_id', 'session_id']].drop_duplicates())} sessions; "
        f"discs: {shown}."
    )


def _legend() -> str:
    spans = "".join(f"<span style='background:{STATUS_COLOURS[s]}'>{s}</span>"
                    for s in STATUS_ORDER[::-1])  # fmt: skip
    return f"<p class='legend'>{spans} (hover a cell for its note)</p>"


def _session_statuses(discs: pd.DataFrame, vertebrae: pd.DataFrame) -> dict:
    """(participant_id, session_id) -> the worst status among the session's values."""
    both = pd.concat([discs, vertebrae])
    rank = {status: i for i, status in enumerate(STATUS_ORDER)}
    worst = both.groupby(["participant_id", "session_id"], sort=False)["status"].agg(
        lambda s: min(s, key=lambda v: rank.get(v, 0))
    )
    return worst.to_dict()


def _cell(row, value_column: str) -> str:
    """A value on its status's colour (the status itself where there is no value); the
    status and note on hover. One line, so that a cohort's grid fits a screen."""
    value = row[value_column]
    shown = f"{float(value):.2f}" if pd.notna(value) else row["status"]
    note = str(row["note"]) if pd.notna(row["note"]) else ""
    hover = html.escape(f"{row['status']}: {note}" if note else row["status"], quote=True)
    colour = STATUS_COLOURS.get(row["status"], "#fff")
    return f"<td class='status' style='background:{colour}' title='{hover}'>{shown}</td>"


def _status_grid(discs: pd.DataFrame, vertebrae: pd.DataFrame) -> str:
    """One row per participant, so that a cohort fits one screen: each disc's height and each
    vertebra's distance, session beside session, by status."""
    # in the tables' order (sub-2 before sub-10, ses-2 before ses-10), not the lexical one
    sessions = list(dict.fromkeys(discs["session_id"]))
    sessions.sort(key=lambda session: [int(n) for n in re.findall(r"\d+", session)] or [0])
    tables = {
        "level": dict(tuple(discs.groupby(["participant_id", "session_id"], sort=False))),
        "vertebra": dict(tuple(vertebrae.groupby(["participant_id", "session_id"], sort=False))),
    }
    columns = [(level, "level", "height_mm") for level in LEVELS]
    columns += [(name, "vertebra", "intervertebral_distance_mm") for name in VERTEBRAE]
    rows = []
    for participant in dict.fromkeys(discs["participant_id"]):
        cells = "".join(
            _cell_or_blank(
                tables[key].get((participant, session), pd.DataFrame()), key, name, value_column
            )  # fmt: skip
            for name, key, value_column in columns
            for session in sessions
        )
        first = next(s for s in sessions if (participant, s) in tables["level"])
        rows.append(f"<tr><th><a href='#{_anchor(participant, first)}'>{participant}</a></th>"
                    f"{cells}</tr>")  # fmt: skip
    span = len(sessions)
    names = "".join(f"<th colspan='{span}'>{name}</th>" for name, _, _ in columns)
    units = "".join(f"<th colspan='{span}'>{'height' if key == 'level' else 'distance'} mm</th>"
                    for _, key, _ in columns)  # fmt: skip
    labels = "".join(f"<th>{session.removeprefix('ses-')}</th>" for session in sessions)
    return (
        f"<table class='grid'><tr><th>participant</th>{names}</tr>\n<tr><th></th>{units}</tr>\n"
        f"<tr><th>session</th>{labels * len(columns)}</tr>\n" + "\n".join(rows) + "</table>"
    )


def _cell_or_blank(table: pd.DataFrame, key: str, name: str, value_column: str) -> str:
    rows = table[table[key] == name] if len(table) else table
    return _cell(rows.iloc[0], value_column) if len(rows) else "<td></td>"


def _anchor(participant: str, session: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "_", f"full-{participant}-{session}".strip("-"))


def _jpeg(path, width_px: int | None = None) -> str:
    """The image as a base64 JPEG data URI, scaled to ``width_px`` (None: as it is)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if width_px and image.width > width_px:
            image = image.resize((width_px, round(image.height * width_px / image.width)),
                                 Image.Resampling.LANCZOS)  # fmt: skip
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _session_tiles(session_figures, statuses: dict, discs: pd.DataFrame) -> str:
    """Every session of the tables: its figure, or (a session whose processing failed before
    any figure) a tile with its status and why."""
    drawn = {(p, s) for p, s, _ in session_figures}
    missing = []
    for (participant, session), status in statuses.items():
        if (participant, session) not in drawn:
            notes = discs.loc[(discs["participant_id"] == participant)
                              & (discs["session_id"] == session), "note"].dropna()  # fmt: skip
            reason = html.escape(notes.iloc[0] if len(notes) else "no figure")
            missing.append(
                f"<a style='border-color:{STATUS_COLOURS.get(status, '#999')}' "
                f"title='{reason}'><div class='nofigure'><b>{participant} {session}: "
                f"{status}</b><br>{reason}</div></a>"
            )
    return _thumbnails(session_figures, statuses, "session", missing)


def _thumbnails(figures, statuses: dict, kind: str, extra_tiles=()) -> str:
    if not figures and not extra_tiles:
        return f"<p>(no {kind} figure)</p>"
    items = list(extra_tiles)
    for participant, session, path in figures:
        status = statuses.get((participant, session), "ok")
        colour = STATUS_COLOURS.get(status, "#999") if statuses else "#bbb"
        label = f"{participant} {session}".strip()
        items.append(
            f"<a href='#{_anchor(participant, session)}' style='border-color:{colour}' "
            f"title='{label}: {status}'><img width='{THUMBNAIL_WIDTH_PX}' "
            f"alt='{label} {kind} figure' "
            f"src='{_jpeg(path, THUMBNAIL_WIDTH_PX)}'>{label}</a>"
        )
    return "<div class='thumbs'>" + "\n".join(items) + "</div>"


def _full_figures(session_figures, registration_figures) -> str:
    every = [*session_figures, *((p, "", path) for p, path in registration_figures)]
    return "\n".join(
        f"<div class='full' id='{_anchor(p, s)}'><h3>{p} {s}</h3>"
        f"<img alt='{p} {s}' src='{_jpeg(path)}'></div>"
        for p, s, path in every
    )


def _excluded(discs: pd.DataFrame, vertebrae: pd.DataFrame) -> str:
    rows = pd.concat([discs.rename(columns={"level": "structure"}),
                      vertebrae.rename(columns={"vertebra": "structure"})])  # fmt: skip
    rows = rows[rows["status"] != "ok"][["participant_id", "session_id", "structure", "status",
                                         "note"]]  # fmt: skip
    if rows.empty:
        return "<p>Every value is ok.</p>"
    # by session, in the tables' own order (sub-2 before sub-10)
    sessions = dict.fromkeys(zip(discs["participant_id"], discs["session_id"]))
    order = {session: rank for rank, session in enumerate(sessions)}
    rank = [order.get(key, len(order)) for key in zip(rows["participant_id"], rows["session_id"])]
    rows = rows.iloc[np.argsort(rank, kind="stable")]
    return rows.fillna("").to_html(index=False, border=0, classes="excluded", escape=True)


def _statistics_body(statistics_html) -> str:
    """statistics.html's tables, without its own page head and title."""
    text = open(statistics_html, encoding="utf-8").read()
    body = text.split("<body>", 1)[-1].rsplit("</body>", 1)[0]
    return re.sub(r"<h1>.*?</h1>", "", body, count=1, flags=re.S)


def _without_paths(value):
    """Settings with every path (a string with a slash) replaced: paths name people and
    projects on shared clusters."""
    if isinstance(value, dict):
        return {key: _without_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_paths(item) for item in value]
    return "(a path)" if isinstance(value, str) and "/" in value else value


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed here)"


def methods_paragraph(config: dict) -> str:
    """What was done, for a paper's methods section, written from the settings and the code's
    own constants and versions (as nipreps' workflows describe themselves)."""
    series = config["series"][0]
    n4, registration = config["n4"], config["registration"]
    limits = QcLimits.from_config(config.get("qc"))
    ranges = ", ".join(f"{name.removesuffix('_mm').replace('_', ' ')} {lo:g}-{hi:g} mm"
                       for name, (lo, hi) in limits.range_mm.items())  # fmt: skip
    segmentation = config["segmentation"]
    located = (
        "located and labelled from the sacrum upwards by spineflow's own segmentation (a "
        "classical marrow search along the spinal canal, cross-checked by a small network "
        "trained on synthetic spines that takes over where the search fails)"
        if segmentation["method"] == "builtin"
        else f"taken from existing label maps ({segmentation['labels']} label values)"
    )
    reviewed = " and the reviewer's ratings" if config.get("qc_ratings_tsv") else ""
    return (
        f"Sagittal series ({series['suffix']}, rule '{series['name']}') were converted from DICOM "
        f"to NIfTI with dcm2niix {_version('dcm2niix')} through nipype {_version('nipype')} and "
        "organised as BIDS, without identifying data. Intensity non-uniformity was corrected "
        f"with N4 (SimpleITK {_version('SimpleITK')}; shrink factor {n4['shrink_factor']}, "
        f"iterations {', '.join(map(str, n4['iterations']))} per level). The second session "
        "was registered rigidly to the first (SimpleITK: the whole field, then each vertebra "
        "from L2 to S1 on its own; "
        f"sampling fraction {registration['sampling_fraction']}, up to "
        f"{registration['iterations']} iterations). Vertebrae and discs were {located}. On the "
        "mid-sagittal plane found from the spine's own midline, disc height was the mean "
        "distance between the two fitted endplates perpendicular to the disc's mid-plane over "
        f"the central {CENTRAL_SHARE * 100:g} % of its anteroposterior extent; disc width its "
        "anteroposterior extent along the mid-plane; the intervertebral distance of a vertebra "
        "the distance between the midpoints of its two endplates. A value was reported only if "
        f"it passed the QC gate (physical ranges: {ranges}; agreement with the neighbouring "
        f"levels, the label order, the slices either side, the other session, the per-vertebra "
        f"registration{reviewed}); otherwise it was reported qc_failed with the reason and left "
        f"out of the statistics (statsmodels {_version('statsmodels')}). spineflow "
        f"{__version__}."
    )


def _provenance(config: dict) -> str:
    shown = _without_paths({key: value for key, value in config.items()
                            if key not in PRIVATE_KEYS})  # fmt: skip
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<p>spineflow {html.escape(__version__)}, report written {when}. Settings (paths "
        "and the pseudonym salt left out):</p>"
        f"<pre>{html.escape(yaml.safe_dump(shown, sort_keys=False))}</pre>"
    )


# ------------------------------------------------------------------ plots

# (table, key column, structures, measure, label): every registered millimetre measure
PLOTTED = tuple((m.table, KINDS[m.table].key, KINDS[m.table].order, m.name, m.label)
                for m in measures(unit="mm"))  # fmt: skip


def _pairs(table: pd.DataFrame, key: str, measure: str) -> pd.DataFrame:
    """Participants' values at both timepoints (ok at both): columns ses-1, ses-2, by key."""
    ok = table[table["status"] == "ok"].assign(value=lambda t: pd.to_numeric(t[measure]))
    wide = ok.pivot_table(index=["participant_id", key], columns="session_id", values="value")
    timepoints = ["ses-1", "ses-2"]
    return wide.reindex(columns=timepoints).dropna()


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    pyplot().close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _change_plots(tables: dict) -> str:
    """Per measure: each participant's value at timepoint 1 and 2, one panel per level
    (spaghetti), and the Bland-Altman plot of the two timepoints (the change against the
    mean, with the mean change and its 95 % limits of agreement)."""
    plt = pyplot()
    figure, axes = plt.subplots(len(PLOTTED), 5, figsize=(17, 3.2 * len(PLOTTED)),
                                squeeze=False)  # fmt: skip
    for row, (kind, key, names, measure, title) in enumerate(PLOTTED):
        pairs = _pairs(tables[kind], key, measure)
        for column, name in enumerate(names):
            axis = axes[row, column]
            level = pairs[pairs.index.get_level_values(key) == name]
            for values in level.itertuples(index=False):
                axis.plot([1, 2], values, "o-", color="#555", alpha=0.6, ms=3)
            axis.set_xticks([1, 2], ["timepoint 1", "timepoint 2"])
            axis.set_title(f"{title}, {name} (n {len(level)})", fontsize=9)
            axis.set_ylabel("mm")
        for axis in axes[row, len(names) : -1]:
            axis.axis("off")
        _bland_altman(axes[row, -1], pairs, title)
    figure.tight_layout()
    return f"<img alt='change per participant and level' src='{_png(figure)}'>"


def _bland_altman(axis, pairs: pd.DataFrame, title: str) -> None:
    change, mean = pairs["ses-2"] - pairs["ses-1"], (pairs["ses-2"] + pairs["ses-1"]) / 2
    axis.scatter(mean, change, s=10, color="#1b9e77")
    if len(change) > 1:
        bias, spread = change.mean(), 1.96 * change.std(ddof=1)
        for value, style in ((bias, "-"), (bias - spread, "--"), (bias + spread, "--")):
            axis.axhline(value, color="#d95f02", ls=style, lw=1)
        axis.set_title(f"{title}, all levels (n {len(change)}):\nchange {bias:+.2f} mm, "
                       f"limits of agreement ±{spread:.2f}", fontsize=9)  # fmt: skip
    axis.axhline(0, color="#999", lw=0.5)
    axis.set_xlabel("mean of the timepoints, mm")
    axis.set_ylabel("timepoint 2 - 1, mm")


def _grade_plot(discs: pd.DataFrame) -> str:
    """Automatic Pfirrmann grades per level and timepoint, stacked."""
    plt = pyplot()
    graded = discs[discs["status"] == "ok"].assign(
        grade=lambda t: pd.to_numeric(t["pfirrmann_auto"])
    )
    counts = graded.groupby(["level", "session_id", "grade"]).size().unstack("grade", fill_value=0)
    figure, axis = plt.subplots(figsize=(9, 3.2))
    if len(counts):
        counts.plot.bar(stacked=True, ax=axis, colormap="viridis", rot=0)
        axis.set_xticklabels([f"{level}\n{session}" for level, session in counts.index])
        axis.legend(title="Pfirrmann", fontsize=8)
    axis.set_xlabel("")
    axis.set_ylabel("discs")
    figure.tight_layout()
    return f"<img alt='Pfirrmann grades per level and timepoint' src='{_png(figure)}'>"
