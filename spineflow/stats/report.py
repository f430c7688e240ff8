"""The statistics stage: every table as TSV, all of it in stats.json, and one readable
rendering (statistics.md and statistics.html, built from the same formatted tables)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from spineflow import __version__
from spineflow.core.io import NA, atomic_write_text, jsonable
from spineflow.core.tables import write_tsv
from spineflow.stats import agreement
from spineflow.stats import models as st

TABLE_FILES = {
    "table2_prevalence": "Table 2. Pfirrmann grades at timepoint 1",
    "table3_change": "Table 3. Change between timepoint 1 and timepoint 2",
    "table4_subgroups": "Table 4. Change by sex, age and BMI group",
    "comparisons": "Group comparisons",
    "mixed_model": "Linear mixed model of change",
    "agreement": "Inter-reader agreement",
    "consensus": "Consensus Pfirrmann grades",
}
READS_TABLES = ("agreement", "consensus")
RENDERINGS = ("stats.json", "statistics.md", "statistics.html")


def output_files(with_reads: bool) -> list[str]:
    """The file names the stage writes into the group folder."""
    names = [n for n in TABLE_FILES if with_reads or n not in READS_TABLES]
    return [f"{n}.tsv" for n in names] + list(RENDERINGS)


P_COLUMNS = ("p_value", "p_holm", "tost_p", "wilcoxon_p", "p_welch", "p_mannwhitney")


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=[NA], keep_default_na=False)


def compute(
    discs,
    vertebrae,
    participants,
    settings: st.Settings,
    reads=None,
    adjudication=None,
    sessions=None,
) -> dict:
    """Every table, as DataFrames, plus the facts stats.json carries besides them."""
    results, facts = {}, {"settings": settings.__dict__ | {"covariates": list(settings.covariates)}}
    consensus = None
    if reads is not None:
        consensus = agreement.consensus(
            reads, adjudication if adjudication is not None else agreement.read_adjudication(None)
        )
        results["agreement"] = agreement.agreement(reads)
        results["consensus"] = consensus
        facts["double_reading"] = agreement.double_read_share(reads)
        facts["consensus_methods"] = consensus["consensus_method"].value_counts().to_dict()
    grade_table, source = st.grades(discs, consensus)
    facts["grade_source"] = source
    people = st.with_groups(st.participants_table(participants, sessions), settings)
    everyone = sorted(set(people.index) | set(discs["participant_id"]))
    tables = {"discs": discs, "vertebrae": vertebrae, "grades": grade_table}
    results["table2_prevalence"] = st.table2(grade_table, everyone, source)
    pairs_of = st.measure_pairs(tables)
    results["table3_change"] = st.table3(tables, pairs_of, people, settings, source)
    frame = st.per_participant(pairs_of, grade_table, people)
    results["table4_subgroups"] = st.table4(frame, settings)
    results["comparisons"] = st.comparisons(frame)
    results["mixed_model"] = st.mixed_model(pairs_of, people, settings)
    return {"tables": results, "facts": facts}


def write(result: dict, out_dir) -> dict[str, str]:
    """TSVs, stats.json, statistics.md and statistics.html under out_dir; returns the paths."""
    out_dir = Path(out_dir)
    paths = {}
    for name, table in result["tables"].items():
        paths[name] = str(out_dir / f"{name}.tsv")
        write_tsv(table, paths[name], significant=P_COLUMNS)
    payload = {
        "spineflow_version": __version__,
        **jsonable(result["facts"]),
        **{name: _records(t) for name, t in result["tables"].items()},
    }
    paths["json"] = str(out_dir / RENDERINGS[0])
    atomic_write_text(paths["json"], json.dumps(payload, indent=1, allow_nan=False) + "\n")
    sections = sections_for(result)
    paths["markdown"] = str(out_dir / RENDERINGS[1])
    atomic_write_text(paths["markdown"], markdown(sections))
    paths["html"] = str(out_dir / RENDERINGS[2])
    atomic_write_text(paths["html"], to_html(sections))
    return paths


def _records(table: pd.DataFrame) -> list[dict]:
    """JSON records: NaN as null, numpy scalars as Python ones."""
    clean = table.astype(object).where(table.notna(), None)
    return [jsonable(row) for row in clean.to_dict("records")]


# --- formatting for people -------------------------------------------------------------------


def fmt_p(p) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _interval(value, low, high, digits=2) -> str:
    if not np.isfinite(low):
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def _table2_view(table: pd.DataFrame) -> pd.DataFrame:
    view = pd.DataFrame({"Disc": table["level"].str.replace("any", "Any (highest grade)")})
    for g in agreement.GRADES:
        view[f"Grade {g}"] = table[f"grade_{g}"]
    view["Degenerated (grade > 1), n (%)"] = [
        f"{n} ({fmt(p, 0)} %)" for n, p in zip(table["n_degenerated"], table["percent_degenerated"])
    ]
    view["Assessed"] = table["n_assessed"]
    view["Not assessable"] = table["n_not_assessed"]
    return view


def _measure_cell(r) -> str:
    return r.measure if r.level == st.OVERALL else f"  {r.level}"


def _table3_view(table: pd.DataFrame) -> pd.DataFrame:
    """The study's columns: means at both timepoints, the change, the paired t-test."""
    return pd.DataFrame(
        [
            {
                "Measure": _measure_cell(r),
                "Group": r.group,
                "n pairs (no ses-2, excluded; QC)": (
                    f"{r.n_pairs} ({r.n_no_ses2}, {r.n_excluded}; {r.n_qc_failed})"
                ),
                "Timepoint 1": fmt(r.mean_ses1),
                "Timepoint 2": fmt(r.mean_ses2),
                "Change [95 % CI]": _interval(r.mean_change, r.ci95_low, r.ci95_high),
                "p (paired t)": fmt_p(r.p_value),
                "p (Holm)": fmt_p(r.p_holm) + (" *" if r.significant_holm is True else ""),
                "Note": r.note if isinstance(r.note, str) else "",
            }
            for r in table.itertuples()
        ]
    )


def _inference_view(table: pd.DataFrame, power: float, detectable: float) -> pd.DataFrame:
    """Beyond the study: equivalence, effect size, rank test, detectable change, power."""
    return pd.DataFrame(
        [
            {
                "Measure": _measure_cell(r),
                "Group": r.group,
                "TOST p (margin)": f"{fmt_p(r.tost_p)} (±{fmt(r.equivalence_margin, 1)})"
                + (" equivalent" if r.equivalent is True else ""),
                "dz [95 % CI]": _interval(r.dz, r.dz_ci95_low, r.dz_ci95_high),
                "Wilcoxon p": fmt_p(r.wilcoxon_p),
                "MDC95": fmt(r.mdc95),
                f"MDD ({power:.0%} power)": fmt(r.mdd),
                f"Power for {detectable:g} mm": fmt(r.power_target),
            }
            for r in table.itertuples()
        ]
    )


def _comparison_view(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    return pd.DataFrame(
        {
            "Comparison": table["comparison"],
            "Grouping": table["grouping"],
            "Measure": table["measure"],
            "Groups (n)": [
                f"{a} ({_n(na)}) vs {b} ({_n(nb)})"
                for a, na, b, nb in zip(
                    table["group_a"], table.get("n_a"), table["group_b"], table.get("n_b")
                )
            ],
            "Means": [
                f"{fmt(a)} vs {fmt(b)}" for a, b in zip(table.get("mean_a"), table.get("mean_b"))
            ],
            "p (Student t)": table.get("p_value").map(fmt_p),
            "p (Welch)": table.get("p_welch").map(fmt_p),
            "p (Mann-Whitney)": table.get("p_mannwhitney").map(fmt_p),
            "Note": table["note"].fillna(""),
        }
    )


def _n(value) -> str:
    return "0" if value is None or not np.isfinite(value) else str(int(value))


def _agreement_view(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Variable": table["variable"],
            "Weights": table["weighting"],
            "Readers": table["reader_a"] + " vs " + table["reader_b"],
            "n": table["n_items"],
            "Agreement %": table["percent_agreement"].map(lambda v: fmt(v, 0)),
            "Kappa [95 % CI]": [
                _interval(k, lo, hi, 3)
                for k, lo, hi in zip(table["kappa"], table["ci95_low"], table["ci95_high"])
            ],
            "Interpretation (Landis & Koch)": [
                f"{b} (CI: {lo} to {hi})" if b else "n/a"
                for b, lo, hi in zip(table["band"], table["band_ci95_low"], table["band_ci95_high"])
            ],
            "PABAK": table["pabak"].map(lambda v: fmt(v, 3)),
            "Gwet's AC1 (AC2 weighted)": table["gwet_ac"].map(lambda v: fmt(v, 3)),
            "Note": table["note"].fillna(""),
        }
    )


def _model_view(table: pd.DataFrame) -> pd.DataFrame:
    # a model's measure and notes once, on its first row
    first = ~table["measure"].duplicated()
    return pd.DataFrame(
        {
            "Measure": table["measure"].where(first, ""),
            "Term": table["term"].fillna(""),
            "Coefficient [95 % CI]": [
                _interval(c, lo, hi, 3)
                for c, lo, hi in zip(table["coefficient"], table["ci95_low"], table["ci95_high"])
            ],
            "p": table["p_value"].map(fmt_p),
            "n (participants)": [
                f"{n} ({m})" for n, m in zip(table["n_observations"], table["n_participants"])
            ],
            "Note": table["note"].fillna("").where(first, ""),
        }
    )


def sections_for(result: dict) -> list[tuple[str, str, pd.DataFrame]]:
    """(title, caption, formatted table) in reading order."""
    tables, facts = result["tables"], result["facts"]
    settings = facts["settings"]
    source = facts["grade_source"]
    sections = [
        (
            TABLE_FILES["table2_prevalence"],
            f"Grades: {source}. Discs not assessable (outside the field of view, failed or not "
            "graded) are left out of each denominator and counted in the last column.",
            _table2_view(tables["table2_prevalence"]),
        ),
        (
            TABLE_FILES["table3_change"],
            "Change = timepoint 2 minus timepoint 1; paired t-test; Holm across levels within a "
            f"measure and group (* p < {settings['alpha']}). "
            "Overall: each participant's mean over the levels paired. Pfirrmann grades: "
            f"{source}.",
            _table3_view(tables["table3_change"]),
        ),
        (
            "Table 3b. Equivalence, effect size and sensitivity of the paired comparisons",
            "TOST: two one-sided tests against the margin (equivalent: p < alpha); dz: mean "
            "change / SD of change, exact CI; Wilcoxon signed-rank as a check; MDC95 = 1.96 SD "
            "of change (one participant); MDD = smallest mean change detectable with "
            f"{settings['power']:.0%} power; power to detect a mean change of "
            f"{settings['detectable_change_mm']:g} mm. All from the observed SDs.",
            _inference_view(
                tables["table3_change"], settings["power"], settings["detectable_change_mm"]
            ),
        ),
        (
            TABLE_FILES["table4_subgroups"],
            f"Population: {settings['subgroup_population']}; cut-offs age "
            f"{settings['age_cutoff_years']:g} years, BMI {settings['bmi_cutoff']:g} kg/m²; "
            "unpaired t-tests (Student, as the study; Welch and Mann-Whitney as checks).",
            _comparison_view(tables["table4_subgroups"]),
        ),
        (
            TABLE_FILES["comparisons"],
            "Unpaired tests between groups.",
            _comparison_view(tables["comparisons"]),
        ),
        (
            TABLE_FILES["mixed_model"],
            "change ~ level + covariates, random intercept per participant (MixedLM, REML).",
            _model_view(tables["mixed_model"]),
        ),
    ]
    if "agreement" in tables:
        share = facts["double_reading"]
        sections.append(
            (
                TABLE_FILES["agreement"],
                f"{share['n_discs_double_read']} of {share['n_discs_graded']} graded discs "
                f"({fmt(share['percent_double_read'], 0)} %) were read twice. Kappa with its "
                "asymptotic 95 % CI; the interpretation band is computed from the value.",
                _agreement_view(tables["agreement"]),
            )
        )
    return sections


def markdown(sections) -> str:
    parts = ["# spineflow cohort statistics\n"]
    for title, caption, view in sections:
        parts.append(f"## {title}\n\n{caption}\n")
        parts.append(
            view.to_markdown(index=False, disable_numparse=True) if len(view) else "(no rows)"
        )
        parts.append("")
    return "\n".join(parts) + "\n"


def to_html(sections) -> str:
    body = []
    for title, caption, view in sections:
        body.append(f"<h2>{html.escape(title)}</h2>\n<p>{html.escape(caption)}</p>")
        body.append(
            view.to_html(index=False, border=0, classes="stats")
            if len(view)
            else "<p>(no rows)</p>"
        )
    style = (
        "body{font-family:sans-serif;max-width:1400px;margin:2em auto;color:#222}"
        "table.stats{border-collapse:collapse;font-size:0.9em;margin-bottom:1em}"
        "table.stats th,table.stats td{padding:3px 8px;border-bottom:1px solid #ddd;"
        "text-align:right;white-space:pre}table.stats th{background:#f3f3f3}"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>spineflow statistics"
        f"</title><style>{style}</style></head><body>\n<h1>spineflow cohort statistics</h1>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def run(
    discs_tsv,
    vertebrae_tsv,
    participants_tsv,
    out_dir,
    settings: dict | None = None,
    reads_tsv="",
    adjudication_tsv="",
    sessions_tsv="",
) -> dict[str, str]:
    """The statistics stage from files: read, compute, write; returns the written paths."""
    reads = agreement.read_reads(reads_tsv) if reads_tsv else None
    adjudication = agreement.read_adjudication(adjudication_tsv or None)
    sessions = _read(sessions_tsv) if sessions_tsv else None
    result = compute(
        _read(discs_tsv),
        _read(vertebrae_tsv),
        _read(participants_tsv),
        st.Settings.from_config(settings),
        reads,
        adjudication,
        sessions,
    )
    return write(result, out_dir)
