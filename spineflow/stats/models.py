"""Cohort statistics: the motivating study's Tables 2-4 and the inference it lacked.

Inputs are the group tables (discs.tsv, vertebrae.tsv), the participants table (sex, age,
height_cm, weight_kg, group, finish_time_min), an optional sessions table (participant_id,
session_id, weight_kg: the weight at each visit, for the change in BMI) and the Pfirrmann
grades (``grades``: the readers' consensus when reads are given, else ``pfirrmann_auto``).

Conventions, stated once:
- change = ses-2 minus ses-1; only structures with status ok at both sessions pair.
- "overall" is each participant's mean over the levels paired at both sessions, so that a
  participant counts once (levels of one spine are not independent).
- tests are two-sided at ``alpha``; Holm's correction runs over the levels of one measure in
  one group.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from spineflow.core.anatomy import LEVELS, VERTEBRAE
from spineflow.core.ids import prefixed
from spineflow.core.settings import from_config
from spineflow.core.tables import KINDS, SESSION_1, SESSION_2, measures, with_bids_ids
from spineflow.measure.qc import QC_FAILED
from spineflow.stats.agreement import GRADES

# measure -> (table, key column, unit): the registered millimetre measures, and the Pfirrmann
# grades, which are ordinal and tested like the study, from their own table
MEASURES = {
    **{m.name: (m.table, KINDS[m.table].key, m.unit) for m in measures(unit="mm")},
    "pfirrmann": ("grades", "level", "grade"),
}
OVERALL = "overall"
ALL = "all"
# changes closer together than this count as identical: no variance to test against
_ZERO_SPREAD = 1e-9


@dataclass(frozen=True)
class Settings:
    alpha: float = 0.05
    equivalence_margin_mm: float = 0.5
    equivalence_margin_grade: float = 0.5
    detectable_change_mm: float = 0.2
    power: float = 0.8
    age_cutoff_years: float = 40.0
    bmi_cutoff: float = 25.0
    covariates: tuple[str, ...] = ("sex", "age", "bmi")
    subgroup_population: str = "finisher"

    @classmethod
    def from_config(cls, config: dict | None) -> Settings:
        return from_config(cls, config, "statistics")

    def margin(self, measure: str) -> float:
        unit = MEASURES[measure][2] if measure in MEASURES else "mm"
        return self.equivalence_margin_grade if unit == "grade" else self.equivalence_margin_mm


# --- inputs -------------------------------------------------------------------------------


def participants_table(participants: pd.DataFrame, sessions: pd.DataFrame | None) -> pd.DataFrame:
    """One row per participant: the demographics, BMI at ses-1 (weight_kg of the sessions
    table when given, else of the participants table) and its change to ses-2 (needs the
    sessions table), age and BMI groups added later by ``with_groups``."""
    people = with_bids_ids(participants)
    for column in ("age", "height_cm", "weight_kg", "finish_time_min"):
        if column in people:
            people[column] = pd.to_numeric(people[column], errors="coerce")
    height_m = people["height_cm"] / 100 if "height_cm" in people else np.nan
    weight = people["weight_kg"] if "weight_kg" in people else np.nan
    people["bmi"] = weight / height_m**2
    people["bmi_change"] = np.nan
    if sessions is not None and len(sessions):
        visits = (
            with_bids_ids(sessions)
            .assign(
                weight_kg=pd.to_numeric(sessions["weight_kg"], errors="coerce"),
            )
            .pivot_table(index="participant_id", columns="session_id", values="weight_kg")
        )
        weights = people["participant_id"].map
        height2 = height_m**2
        if SESSION_1 in visits:
            people["bmi"] = weights(visits[SESSION_1]).fillna(weight) / height2
        if SESSION_1 in visits and SESSION_2 in visits:
            people["bmi_change"] = (
                weights(visits[SESSION_2]) - weights(visits[SESSION_1])
            ) / height2
    return people.set_index("participant_id")


def with_groups(people: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Age and BMI groups at the configured cut-offs (n/a where the value is missing)."""
    people = people.copy()
    for column, cutoff, unit in (
        ("age", settings.age_cutoff_years, ""),
        ("bmi", settings.bmi_cutoff, ""),
    ):
        value = people[column] if column in people else pd.Series(np.nan, index=people.index)
        cut = f"{cutoff:g}{unit}"
        people[f"{column}_group"] = np.where(
            value.isna(), None, np.where(value < cutoff, f"< {cut}", f">= {cut}")
        )
    return people


def grades(discs: pd.DataFrame, consensus: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """The Pfirrmann grades Tables 2-3 use, as a table like discs.tsv (column pfirrmann,
    status ok where graded), and where they come from."""
    if consensus is not None and len(consensus):
        table = consensus[["participant_id", "session_id", "level", "pfirrmann"]].copy()
        table["status"] = "ok"
        return table, "consensus of the radiologists' reads"
    table = discs[["participant_id", "session_id", "level", "pfirrmann_auto", "status"]]
    table = table.rename(columns={"pfirrmann_auto": "pfirrmann"})
    return table, "automatic grade (pfirrmann_auto)"


def _values(table: pd.DataFrame, key: str, measure: str) -> pd.DataFrame:
    """participant_id x session_id x structure -> value, status ok only."""
    table = with_bids_ids(table).assign(value=pd.to_numeric(table[measure], errors="coerce"))
    table = table[(table["status"] == "ok") & table["value"].notna()]
    return table.rename(columns={key: "level"})[["participant_id", "session_id", "level", "value"]]


def paired_values(table: pd.DataFrame, key: str, measure: str) -> pd.DataFrame:
    """Per participant and structure, the ses-1 and ses-2 values (NaN where missing)."""
    values = _values(table, key, measure)
    wide = values.pivot_table(
        index=["participant_id", "level"], columns="session_id", values="value"
    )
    for session in (SESSION_1, SESSION_2):
        if session not in wide:
            wide[session] = np.nan
    return wide[[SESSION_1, SESSION_2]].reset_index()


def measure_pairs(tables: dict) -> dict[str, pd.DataFrame]:
    """``paired_values`` of every measure, from tables {discs, vertebrae, grades}: computed
    once, read by Table 3, the per-participant changes and the mixed model."""
    return {
        name: paired_values(tables[table_name], key, name)
        for name, (table_name, key, _) in MEASURES.items()
    }


def baseline_grades(grade_table: pd.DataFrame) -> pd.DataFrame:
    """The Pfirrmann grades at ses-1 (participant_id, level, value), status ok only."""
    values = _values(grade_table, "level", "pfirrmann")
    return values[values["session_id"] == SESSION_1]


# --- one paired comparison ----------------------------------------------------------------


def cohens_dz_ci(dz: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact CI of Cohen's dz (mean change / SD of change) by inverting the noncentral t
    distribution of t = dz sqrt(n) (Steiger & Fouladi's method)."""
    if n < 2 or not np.isfinite(dz):
        return math.nan, math.nan
    t, df, root_n = dz * math.sqrt(n), n - 1, math.sqrt(n)

    def bound(tail: float) -> float:
        # the noncentrality at which the observed t is the tail quantile (the CDF falls as
        # the noncentrality grows): bracket it by doubling steps, then solve
        def excess(nc):
            return stats.nct.cdf(t, df, nc) - tail

        low, high, step = t - 1.0, t + 1.0, 1.0
        for _ in range(60):
            if excess(low) > 0 and excess(high) < 0:
                try:
                    return optimize.brentq(excess, low, high)
                except ValueError:  # the CDF is NaN somewhere in the bracket (far tails)
                    return math.nan
            step *= 2
            low, high = (low - step, high) if not excess(low) > 0 else (low, high + step)
        return math.nan  # not bracketed: the CDF is not computable this far out (df 1)

    tail = (1 - level) / 2
    return bound(1 - tail) / root_n, bound(tail) / root_n


def paired_summary(
    ses1: Sequence[float],
    ses2: Sequence[float],
    margin: float,
    settings: Settings,
    detectable: float | None = None,
) -> dict:
    """Paired t-test of ses2 - ses1 with its 95 % CI, TOST equivalence within +-margin,
    Cohen's dz with its CI, Wilcoxon signed-rank, minimum detectable change and power.

    Minimum detectable change: ``mdc95`` = 1.96 SD(change), the smallest change in one
    participant outside the spread of the others; ``mdd`` = the smallest mean change this
    cohort detects with ``settings.power`` (paired t, two-sided alpha); ``power_target`` =
    the power it had to detect a mean change of ``detectable``. All from the observed SD."""
    ses1, ses2 = np.asarray(ses1, dtype=float), np.asarray(ses2, dtype=float)
    change = ses2 - ses1
    n = len(change)
    nan = math.nan
    row = {
        "n_pairs": n,
        "mean_ses1": float(ses1.mean()) if n else nan,
        "mean_ses2": float(ses2.mean()) if n else nan,
        "mean_change": float(change.mean()) if n else nan,
        "sd_change": float(change.std(ddof=1)) if n >= 2 else nan,
        "ci95_low": nan,
        "ci95_high": nan,
        "t_statistic": nan,
        "p_value": nan,
        "equivalence_margin": margin,
        "tost_p": nan,
        "equivalent": None,
        "dz": nan,
        "dz_ci95_low": nan,
        "dz_ci95_high": nan,
        "wilcoxon_p": nan,
        "mdc95": nan,
        "mdd": nan,
        "power_target": nan,
        "note": "",
    }
    if n == 0:
        row["note"] = "no pairs"
        return row
    if n == 1:
        row["note"] = "1 pair: no test (needs 2)"
        return row
    if np.ptp(change) <= _ZERO_SPREAD:
        # everyone changed by the same amount: SD 0, t and dz undefined
        row["sd_change"] = 0.0
        row["note"] = "no variation in change: tests undefined"
        return row
    result = stats.ttest_rel(ses2, ses1)
    low, high = result.confidence_interval(0.95)
    tost_p = ttost_paired(ses2, ses1, -margin, margin)[0]
    sd = row["sd_change"]
    dz = row["mean_change"] / sd
    dz_low, dz_high = cohens_dz_ci(dz, n)
    row.update(
        t_statistic=float(result.statistic),
        p_value=float(result.pvalue),
        ci95_low=float(low),
        ci95_high=float(high),
        tost_p=float(tost_p),
        equivalent=bool(tost_p < settings.alpha),
        dz=dz,
        dz_ci95_low=dz_low,
        dz_ci95_high=dz_high,
        mdc95=1.96 * sd,
    )
    row["wilcoxon_p"], note = _wilcoxon(change)
    power = TTestPower()
    row["mdd"] = sd * power.solve_power(
        nobs=n, alpha=settings.alpha, power=settings.power, alternative="two-sided"
    )
    if detectable is not None:
        row["power_target"] = float(power.power(detectable / sd, n, settings.alpha))
    row["note"] = note
    return row


def _wilcoxon(change: np.ndarray) -> tuple[float, str]:
    """Wilcoxon signed-rank p, zeros dropped; exact below 50 pairs without ties or zeros,
    else the normal approximation with continuity correction (R's wilcox.test rule)."""
    change = np.round(change, 9)  # float noise must not break ties
    nonzero = change[change != 0]
    if len(nonzero) == 0:
        return math.nan, "Wilcoxon undefined: no non-zero change"
    exact = len(change) < 50 and len(nonzero) == len(change)
    exact = exact and len(np.unique(np.abs(nonzero))) == len(nonzero)
    result = stats.wilcoxon(
        change, zero_method="wilcox", correction=not exact, method="exact" if exact else "approx"
    )
    return float(result.pvalue), ""


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values; NaN stays NaN and is not counted."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.isfinite(p)
    if valid.any():
        adjusted[valid] = multipletests(p[valid], method="holm")[1]
    return adjusted


# --- Table 2: prevalence at ses-1 -----------------------------------------------------------


def table2(grade_table: pd.DataFrame, participant_ids: Sequence[str], source: str):
    """Per level and "any" (each participant once, at the highest grade of their assessed
    levels): counts of grades 1-5, n (%) degenerated (grade > 1) of the assessed discs; levels
    not assessable (not in the field of view, failed, not graded) are left out of the
    denominator and counted."""
    values = baseline_grades(grade_table)
    everyone = {prefixed(p, "sub") for p in participant_ids}
    rows = []
    for level in (*LEVELS, "any"):
        if level == "any":
            graded = values.groupby("participant_id")["value"].max()
        else:
            graded = values[values["level"] == level].set_index("participant_id")["value"]
        n = len(graded)
        row = {"level": level, "n_assessed": n, "n_not_assessed": len(everyone - set(graded.index))}
        row.update({f"grade_{g}": int((graded == g).sum()) for g in GRADES})
        row["n_degenerated"] = int((graded > 1).sum())
        row["percent_degenerated"] = 100.0 * row["n_degenerated"] / n if n else math.nan
        row["grade_source"] = source
        notes = (
            [f"{row['n_not_assessed']} of {len(everyone)} not assessable, not in the denominator"]
            if row["n_not_assessed"]
            else []
        )
        if level == "any":
            # grade 1 on the levels seen, but a level unseen: "not degenerated" is a lower bound
            seen = values.groupby("participant_id")["level"].nunique()
            unsure = int(((graded == 1) & (seen.reindex(graded.index) < len(LEVELS))).sum())
            if unsure:
                notes.append(
                    f"{unsure} graded 1 with a level not assessable: the share "
                    "degenerated may be higher"
                )
        row["note"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows)


# --- Table 3: change between timepoints -----------------------------------------------------


def _participant_groups(people: pd.DataFrame) -> dict[str, set]:
    groups = {ALL: set(people.index)}
    if "group" in people:
        for name in sorted(people["group"].dropna().unique()):
            if str(name) != ALL:  # a group called "all" is not the whole cohort
                groups[str(name)] = set(people.index[people["group"] == name])
    return groups


def participant_changes(pairs: pd.DataFrame) -> pd.DataFrame:
    """Each participant's mean over the levels paired at both sessions (``overall``)."""
    both = pairs.dropna(subset=[SESSION_1, SESSION_2])
    return both.groupby("participant_id")[[SESSION_1, SESSION_2]].mean()


def _sessions_scanned(*tables: pd.DataFrame) -> dict[str, set]:
    """participant_id -> the sessions the imaging tables list (measured, cut or failed)."""
    both = with_bids_ids(pd.concat([t[["participant_id", "session_id"]] for t in tables]))
    return both.groupby("participant_id")["session_id"].agg(set).to_dict()


def _qc_failed(table: pd.DataFrame, key: str) -> dict[str, set]:
    """Structure -> the participants with a value the QC gate failed at either session."""
    table = with_bids_ids(table)
    failed = table[table["status"] == QC_FAILED]
    return failed.groupby(key)["participant_id"].agg(set).to_dict()


def table3(
    tables: dict, pairs_of: dict, people: pd.DataFrame, settings: Settings, grade_source: str
):
    """For each measure, group (all, then each value of the participants' group) and level
    (overall, then each level): the paired summary, plus who is left out and why. Participants
    without a ses-2 are counted in ``n_no_ses2``; others in the group without a pair for the
    level (not in the field of view or failed at either session) in ``n_excluded``, and of
    those, the ones whose value the QC gate failed (``qc_failed``) in ``n_qc_failed``."""
    rows = []
    sessions_of = _sessions_scanned(tables["discs"], tables["vertebrae"], tables["grades"])
    for name, (table_name, key, _) in MEASURES.items():
        pairs = pairs_of[name]
        gated = _qc_failed(tables[table_name], key)
        order = VERTEBRAE if key == "vertebra" else LEVELS
        for group, members in _participant_groups(people).items():
            if group == ALL:  # everyone imaged counts, listed in participants.tsv or not
                members = members | set(sessions_of)
            mine = pairs[pairs["participant_id"].isin(members)]
            no_ses2 = {p for p in members if SESSION_2 not in sessions_of.get(p, set())}
            blocks = [(OVERALL, participant_changes(mine))]
            blocks += [
                (level, mine[mine["level"] == level].dropna(subset=[SESSION_1, SESSION_2]))
                for level in order
            ]
            group_rows = []
            for level, paired in blocks:
                row = {"measure": name, "group": group, "level": level}
                row.update(
                    paired_summary(
                        paired[SESSION_1],
                        paired[SESSION_2],
                        settings.margin(name),
                        settings,
                        settings.detectable_change_mm if MEASURES[name][2] == "mm" else None,
                    )
                )
                scored = set(
                    mine["participant_id"]
                    if level == OVERALL
                    else mine.loc[mine["level"] == level, "participant_id"]
                )
                paired_ids = set(paired.index if level == OVERALL else paired["participant_id"])
                row["n_no_ses2"] = len(no_ses2 & members)
                row["n_excluded"] = len((scored | members) - paired_ids - no_ses2)
                row["n_qc_failed"] = len(
                    members & set().union(*gated.values()) if level == OVERALL
                    else members & gated.get(level, set())
                )  # fmt: skip
                row["grade_source"] = grade_source if name == "pfirrmann" else ""
                group_rows.append(row)
            adjusted = holm([r["p_value"] for r in group_rows[1:]])
            for row, p in zip(group_rows, [math.nan, *adjusted]):
                row["p_holm"] = p
                row["significant_holm"] = bool(p < settings.alpha) if np.isfinite(p) else None
            rows += group_rows
    columns = [
        "measure",
        "group",
        "level",
        "n_pairs",
        "n_no_ses2",
        "n_excluded",
        "n_qc_failed",
        "mean_ses1",
        "mean_ses2",
        "mean_change",
        "sd_change",
        "ci95_low",
        "ci95_high",
        "t_statistic",
        "p_value",
        "p_holm",
        "significant_holm",
        "equivalence_margin",
        "tost_p",
        "equivalent",
        "dz",
        "dz_ci95_low",
        "dz_ci95_high",
        "wilcoxon_p",
        "mdc95",
        "mdd",
        "power_target",
        "grade_source",
        "note",
    ]
    return pd.DataFrame(rows, columns=columns)


# --- unpaired comparisons: Table 4 and the group comparisons ---------------------------------


def compare_groups(values_a: Sequence[float], values_b: Sequence[float]) -> dict:
    """Unpaired comparison of two groups: Student's t (the study's test), Welch's t and the
    Mann-Whitney U as checks. A group of fewer than 2 gets no test, and a note."""
    a = np.asarray([v for v in values_a if np.isfinite(v)], dtype=float)
    b = np.asarray([v for v in values_b if np.isfinite(v)], dtype=float)
    nan = math.nan
    row = {
        "n_a": len(a),
        "n_b": len(b),
        "mean_a": a.mean() if len(a) else nan,
        "mean_b": b.mean() if len(b) else nan,
        "sd_a": a.std(ddof=1) if len(a) > 1 else nan,
        "sd_b": b.std(ddof=1) if len(b) > 1 else nan,
        "difference": nan,
        "t_statistic": nan,
        "p_value": nan,
        "p_welch": nan,
        "p_mannwhitney": nan,
        "note": "",
    }
    if len(a) and len(b):
        row["difference"] = row["mean_a"] - row["mean_b"]
    if min(len(a), len(b)) < 2:
        row["note"] = f"groups of {len(a)} and {len(b)}: no test (each needs 2)"
        return row
    if max(np.ptp(a), np.ptp(b)) <= _ZERO_SPREAD:
        row["note"] = "no variation within the groups: t-tests undefined"
        return row
    with warnings.catch_warnings():
        # a group of identical values (grades) is exact, not "catastrophic cancellation"
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        student = stats.ttest_ind(a, b)
        welch = stats.ttest_ind(a, b, equal_var=False)
    row.update(
        t_statistic=float(student.statistic),
        p_value=float(student.pvalue),
        p_welch=float(welch.pvalue),
        p_mannwhitney=float(stats.mannwhitneyu(a, b).pvalue),
    )
    return row


def _two_groups(labels: pd.Series) -> list[str]:
    return sorted(labels.dropna().astype(str).unique(), key=str)


def _compare_by(frame: pd.DataFrame, by: str, measures: Sequence[str], comparison: str):
    rows = []
    names = _two_groups(frame[by]) if by in frame else []
    for measure in measures:
        row = {"comparison": comparison, "grouping": by, "measure": measure}
        if len(names) != 2:
            row.update(group_a="", group_b="", **compare_groups([], []))
            row["note"] = f"{by}: {len(names)} group(s) in the data, a comparison needs 2"
            rows.append(row)
            continue
        column = frame[measure] if measure in frame else pd.Series(np.nan, index=frame.index)
        values = [column[frame[by].astype(str) == name] for name in names]
        row.update(group_a=names[0], group_b=names[1])
        row.update(compare_groups(*values))
        rows.append(row)
    return rows


def per_participant(pairs_of: dict, grade_table: pd.DataFrame, people: pd.DataFrame):
    """One row per participant: demographics, groups, the overall change of each measure,
    the highest Pfirrmann grade at ses-1 and whether any disc is degenerated (grade > 1)."""
    frame = people.copy()
    for name, pairs in pairs_of.items():
        changes = participant_changes(pairs)
        frame[f"{name}_change"] = (changes[SESSION_2] - changes[SESSION_1]).reindex(frame.index)
    highest = baseline_grades(grade_table).groupby("participant_id")["value"].max()
    frame["highest_grade_ses1"] = highest.reindex(frame.index)
    frame["degeneration_ses1"] = np.where(
        frame["highest_grade_ses1"].isna(),
        None,
        np.where(frame["highest_grade_ses1"] > 1, "degenerated", "no degeneration"),
    )
    return frame


TABLE4_MEASURES = ("height_mm_change", "width_mm_change", "bmi_change")


def table4(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Change in disc height, disc width and BMI between sexes, age groups and BMI groups,
    among the configured population (the study: marathon finishers)."""
    population = settings.subgroup_population
    if population != ALL:
        frame = frame[frame.get("group", pd.Series(index=frame.index)) == population]
    rows = []
    for by in ("sex", "age_group", "bmi_group"):
        rows += _compare_by(frame, by, TABLE4_MEASURES, f"population: {population}")
    return pd.DataFrame(rows)


def comparisons(frame: pd.DataFrame) -> pd.DataFrame:
    """The study's other unpaired comparisons: finishers vs non-finishers (changes, grade),
    finishing time with vs without disc degeneration, grade vs sex, age and BMI group."""
    changes = [f"{m}_change" for m in MEASURES] + ["highest_grade_ses1"]
    rows = _compare_by(frame, "group", changes, "finishers vs non-finishers")
    finishers = frame[frame.get("group", pd.Series(index=frame.index)) == "finisher"]
    rows += _compare_by(
        finishers,
        "degeneration_ses1",
        ["finish_time_min"],
        "finishing time by disc degeneration at ses-1",
    )
    for by in ("sex", "age_group", "bmi_group"):
        rows += _compare_by(frame, by, ["highest_grade_ses1"], "grade by demographics")
    return pd.DataFrame(rows)


# --- mixed model --------------------------------------------------------------------------


def mixed_model(pairs_of: dict, people: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Per continuous measure: change ~ level (fixed) + covariates, with a random intercept
    per participant (statsmodels MixedLM, REML). Covariates missing for everyone or constant
    are left out, participants missing one are dropped; both are said in the note."""
    rows = []
    for name, (_, _, unit) in MEASURES.items():
        if unit != "mm":
            continue
        pairs = pairs_of[name].dropna(subset=[SESSION_1, SESSION_2])
        data = pairs.assign(change=pairs[SESSION_2] - pairs[SESSION_1])
        data = data.join(people, on="participant_id")
        rows += _fit_mixed(name, data, settings.covariates)
    return pd.DataFrame(
        rows,
        columns=[
            "measure",
            "term",
            "coefficient",
            "se",
            "z",
            "p_value",
            "ci95_low",
            "ci95_high",
            "n_observations",
            "n_participants",
            "converged",
            "formula",
            "note",
        ],
    )


def _fit_mixed(measure: str, data: pd.DataFrame, covariates: Sequence[str]) -> list[dict]:
    notes, used = [], []
    for covariate in covariates:
        if covariate not in data or data[covariate].nunique(dropna=True) < 2:
            notes.append(f"{covariate} left out (missing or constant)")
        else:
            used.append(covariate)
    complete = data.dropna(subset=["change", *used])
    if len(complete) < len(data):
        notes.append(f"{len(data) - len(complete)} observations without a covariate dropped")
    levels = complete["level"].nunique()
    terms = (["C(level)"] if levels > 1 else []) + used
    formula = "change ~ " + (" + ".join(terms) if terms else "1")
    base = {
        "measure": measure,
        "n_observations": len(complete),
        "n_participants": complete["participant_id"].nunique(),
        "formula": formula,
    }
    if base["n_participants"] < 3 or len(complete) <= len(terms) + 2:
        return [{**base, "note": "; ".join([*notes, "too few participants to fit"])}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = smf.mixedlm(formula, complete, groups=complete["participant_id"]).fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as error:
            return [{**base, "note": "; ".join([*notes, f"not fitted: {error}"])}]
    notes += sorted({str(w.message).splitlines()[0] for w in caught})
    ci = fit.conf_int()
    common = {**base, "converged": bool(fit.converged), "note": "; ".join(notes)}
    rows = [
        {
            **common,
            "term": term,
            "coefficient": float(fit.fe_params[term]),
            "se": float(fit.bse_fe[term]),
            "z": float(fit.tvalues[term]),
            "p_value": float(fit.pvalues[term]),
            "ci95_low": float(ci.loc[term, 0]),
            "ci95_high": float(ci.loc[term, 1]),
        }
        for term in fit.fe_params.index
    ]
    # the variance components: estimates only (Wald tests of a variance are not meaningful)
    rows.append(
        {**common, "term": "participant variance", "coefficient": float(fit.cov_re.iloc[0, 0])}
    )
    rows.append({**common, "term": "residual variance", "coefficient": float(fit.scale)})
    return rows
