"""Compare the pipeline's group tables with a synthetic cohort's ground truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .bids import group_dir

KEYS = {
    "discs": ["participant_id", "session_id", "level"],
    "vertebrae": ["participant_id", "session_id", "vertebra"],
}
MEASURES = {"discs": ["height_mm", "width_mm"], "vertebrae": ["intervertebral_distance_mm"]}


def merged(output_dir, truth_dir, kind: str) -> pd.DataFrame:
    measured = pd.read_csv(group_dir(output_dir) / f"{kind}.tsv", sep="\t", na_values="n/a")
    truth = pd.read_csv(Path(truth_dir) / f"{kind}.tsv", sep="\t", na_values="n/a")
    return truth.merge(measured, on=KEYS[kind], how="outer", suffixes=("_true", ""))


def summarise(measure: str, error: pd.Series) -> dict:
    """bias, SD, MAE and largest absolute error of one measure's errors."""
    if error.empty:
        return {"measure": measure, "n": 0}
    return {
        "measure": measure,
        "n": int(len(error)),
        "bias": float(error.mean()),
        "sd": float(error.std(ddof=1)) if len(error) > 1 else float("nan"),
        "mae": float(error.abs().mean()),
        "max_abs": float(error.abs().max()),
    }


def error_summary(table: pd.DataFrame, measure: str) -> dict:
    both_ok = (table["status"] == "ok") & (table["status_true"] == "ok")
    return summarise(measure, (table[measure] - table[f"{measure}_true"])[both_ok].dropna())


def change_errors(discs: pd.DataFrame) -> pd.Series:
    """Measured minus true height change (ses-2 minus ses-1) per participant and level."""
    ok = discs[(discs["status"] == "ok") & (discs["status_true"] == "ok")]
    wide = ok.pivot_table(
        index=["participant_id", "level"],
        columns="session_id",
        values=["height_mm", "height_mm_true"],
    )
    if ("height_mm", "ses-2") not in wide.columns:
        return pd.Series(dtype=float)
    measured = wide[("height_mm", "ses-2")] - wide[("height_mm", "ses-1")]
    true = wide[("height_mm_true", "ses-2")] - wide[("height_mm_true", "ses-1")]
    return (measured - true).dropna()


def evaluate(output_dir, truth_dir) -> dict:
    report = {"errors": [], "status_agreement": {}}
    for kind, measures in MEASURES.items():
        table = merged(output_dir, truth_dir, kind)
        report["status_agreement"][kind] = float((table["status"] == table["status_true"]).mean())
        report["errors"] += [error_summary(table, m) for m in measures]
        report[kind] = table
    report["errors"].append(summarise("height_change_mm", change_errors(report["discs"])))
    return report


def format_report(report: dict) -> str:
    table = pd.DataFrame(report["errors"]).set_index("measure")
    lines = [
        "Accuracy against ground truth (mm; structures ok in both truth and output):",
        table.to_string(float_format=lambda x: f"{x:.3f}"),
        "Status agreement:",
    ]
    lines += [f"  {kind}: {share:.1%}" for kind, share in report["status_agreement"].items()]
    return "\n".join(lines)
