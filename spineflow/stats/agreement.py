"""Radiologists' reads: inter-reader agreement and consensus grades.

The reads table (config ``reads_tsv``) has one row per reader and disc: reader,
participant_id, session_id, level, pfirrmann (1-5, ``n/a`` where not graded), and optionally
findings as further columns (facet_effusion, bone_marrow_oedema, ...; yes/no or any labels).
An adjudication table (config ``adjudication_tsv``: participant_id, session_id, level,
pfirrmann) settles discs the readers graded differently.

Kappa comes from statsmodels (``cohens_kappa``: asymptotic standard error of Fleiss, Cohen
and Everitt, 95 % CI kappa +- 1.96 SE); its interpretation band is computed from the value,
never typed (the motivating study printed kappa = 0.100 and called it perfect agreement).
Beside it, two coefficients that extreme prevalence does not drag down (the kappa paradoxes of
Feinstein & Cicchetti 1990): PABAK, the prevalence- and bias-adjusted kappa (Byrt et al. 1993;
Brennan & Prediger's coefficient, chance 1/q), and Gwet's AC1 (AC2 with weights; Gwet 2008),
with the weights of the kappa beside them. A row notes when a reader's scores do not vary or
one category holds most of the ratings.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import cohens_kappa

from spineflow.core.anatomy import LEVELS
from spineflow.core.tables import read_text_tsv, with_bids_ids

ITEM = ["participant_id", "session_id", "level"]
READ_COLUMNS = ["reader", *ITEM, "pfirrmann"]
GRADES = (1, 2, 3, 4, 5)
# Landis & Koch (1977), the scale the study quotes: (upper bound, band), first match wins;
# below 0 is less than chance, 0.000 itself slight
KAPPA_BANDS = (
    (-0.0005, "less than chance agreement"),
    (0.2, "slight agreement"),
    (0.4, "fair agreement"),
    (0.6, "moderate agreement"),
    (0.8, "substantial agreement"),
    (0.999, "almost perfect agreement"),
    (math.inf, "perfect agreement"),
)
# a category holding this share of all ratings makes kappa unstable (prevalence effect)
EXTREME_PREVALENCE_SHARE = 0.9
AGREEMENT_COLUMNS = (
    "variable",
    "weighting",
    "reader_a",
    "reader_b",
    "n_items",
    "percent_agreement",
    "kappa",
    "se",
    "ci95_low",
    "ci95_high",
    "band",
    "band_ci95_low",
    "band_ci95_high",
    "pabak",
    "gwet_ac",
    "note",
)


class ReadsError(ValueError):
    """A reads or adjudication table that cannot be used; the message names the file."""


def kappa_band(kappa: float) -> str:
    """The interpretation band of a kappa value ('' for an undefined kappa)."""
    if kappa is None or not np.isfinite(kappa):
        return ""
    printed = round(float(kappa), 3)  # the band of the value as printed (3 decimals)
    return next(band for upper, band in KAPPA_BANDS if printed <= upper)


# --- reading ------------------------------------------------------------------------------


def _normalised(table: pd.DataFrame, path, required: list[str]) -> pd.DataFrame:
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ReadsError(f"{path}: missing column(s) {missing}; it has {list(table.columns)}")
    table = with_bids_ids(table)
    table["level"] = table["level"].astype(str).str.strip().str.replace("–", "-")
    unknown = sorted(set(table["level"]) - set(LEVELS))
    if unknown:
        raise ReadsError(f"{path}: unknown level(s) {unknown}; expected {list(LEVELS)}")
    grades = pd.to_numeric(table["pfirrmann"], errors="coerce")
    bad = table["pfirrmann"].notna() & (grades.isna() | ~grades.isin(GRADES))
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 2).tolist()  # +2: header, 1-based
        raise ReadsError(f"{path}: pfirrmann must be 1-5 or n/a (line(s) {rows})")
    table["pfirrmann"] = grades.astype("Int64")
    keys = [c for c in ("reader", *ITEM) if c in required]
    repeated = table.duplicated(keys, keep=False)
    if repeated.any():
        first = table.loc[repeated, keys].iloc[0].tolist()
        raise ReadsError(f"{path}: {int(repeated.sum())} repeated rows, e.g. {first}")
    return table


def read_reads(path: str | Path) -> pd.DataFrame:
    """The reads table, checked (``ReadsError`` names the file and the problem)."""
    table = read_text_tsv(path)
    table = _normalised(table, path, READ_COLUMNS)
    table["reader"] = table["reader"].str.strip()
    return table


def read_adjudication(path: str | Path | None) -> pd.DataFrame:
    """The adjudicated grades (empty without a file)."""
    if not path:
        return pd.DataFrame(columns=[*ITEM, "pfirrmann"])
    table = read_text_tsv(path)
    return _normalised(table, path, [*ITEM, "pfirrmann"])


def finding_columns(reads: pd.DataFrame) -> list[str]:
    return [c for c in reads.columns if c not in READ_COLUMNS]


# --- agreement ----------------------------------------------------------------------------


def _pairs_table(reads: pd.DataFrame, variable: str, reader_a: str, reader_b: str):
    """The items both readers scored on ``variable``: their two ratings side by side."""
    wide = reads.pivot_table(
        index=ITEM, columns="reader", values=variable, aggfunc="first", dropna=False
    )
    both = wide[[reader_a, reader_b]].dropna()
    return both[reader_a], both[reader_b]


def kappa_row(ratings_a, ratings_b, categories, weighted: bool) -> dict:
    """Cohen's kappa (quadratic weights on the category order when ``weighted``) with its SE,
    95 % CI and bands; undefined (NaN, with a note) when chance agreement is total."""
    ratings_a, ratings_b = list(ratings_a), list(ratings_b)
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for a, b in zip(ratings_a, ratings_b, strict=True):
        table[index[a], index[b]] += 1
    n = int(table.sum())
    row = {
        "n_items": n,
        "percent_agreement": math.nan,
        "kappa": math.nan,
        "se": math.nan,
        "ci95_low": math.nan,
        "ci95_high": math.nan,
        "pabak": math.nan,
        "gwet_ac": math.nan,
        "note": "",
    }
    if n == 0:
        row["note"] = "no item scored by both readers"
        return _with_bands(row)
    row["percent_agreement"] = 100.0 * np.trace(table) / n
    row.update(chance_robust_coefficients(table, weighted))
    expected = table.sum(axis=1) @ table.sum(axis=0) / n**2
    if np.isclose(expected, 1.0):
        row["note"] = "kappa undefined: both readers gave every item the same score"
        return _with_bands(row)
    weights = {"weights": np.arange(len(categories)), "wt": "quadratic"} if weighted else {}
    with np.errstate(invalid="ignore"):  # a variance estimate below 0 is handled below
        result = cohens_kappa(table, **weights)
    row.update(kappa=float(result.kappa), se=float(result.std_kappa))
    if np.isfinite(row["se"]):  # the asymptotic interval can pass 1 (or -1); kappa cannot
        row["ci95_low"] = max(-1.0, float(result.kappa_low))
        row["ci95_high"] = min(1.0, float(result.kappa_upp))
    else:  # the variance estimate fell below 0 (e.g. perfect agreement): no interval
        row["note"] = "no confidence interval: the variance estimate is undefined"
    if n < 10 and not row["note"]:
        row["note"] = f"only {n} items: the CI is rough"
    row["note"] = "; ".join(filter(None, [row["note"], _paradox_note(table, categories)]))
    return _with_bands(row)


def _agreement_weights(q: int, weighted: bool) -> np.ndarray:
    """Identity, or quadratic weights 1 - (k - l)^2 / (q - 1)^2 (those of the weighted kappa)."""
    if not weighted:
        return np.eye(q)
    k = np.arange(q)
    return 1.0 - np.subtract.outer(k, k) ** 2 / (q - 1) ** 2


def chance_robust_coefficients(table: np.ndarray, weighted: bool) -> dict:
    """PABAK (Brennan-Prediger: chance agreement T_w / q^2) and Gwet's AC1/AC2 (chance
    agreement T_w sum(pi_k (1 - pi_k)) / (q (q - 1)), pi_k the two readers' mean share of
    category k), T_w the weights' sum, from the readers' q x q table of counts."""
    q = len(table)
    if q < 2:
        return {"pabak": math.nan, "gwet_ac": math.nan}
    shares = table / table.sum()
    weights = _agreement_weights(q, weighted)
    observed = float((weights * shares).sum())
    total_weight = weights.sum()
    chance_bp = total_weight / q**2
    pi = (shares.sum(axis=0) + shares.sum(axis=1)) / 2
    chance_gwet = total_weight * float((pi * (1 - pi)).sum()) / (q * (q - 1))
    return {
        "pabak": (observed - chance_bp) / (1 - chance_bp),
        "gwet_ac": (observed - chance_gwet) / (1 - chance_gwet),
    }


def _paradox_note(table: np.ndarray, categories) -> str:
    """Say when kappa is not to be read alone: a reader whose scores do not vary caps it at 0,
    and one category holding most ratings depresses it, however often the readers agree."""
    notes = []
    for reader, counts in (("reader_a", table.sum(axis=1)), ("reader_b", table.sum(axis=0))):
        if np.count_nonzero(counts) == 1:
            notes.append(f"{reader} gave every item {categories[int(np.argmax(counts))]!r}")
    pooled = (table.sum(axis=0) + table.sum(axis=1)) / (2 * table.sum())
    if not notes and pooled.max() >= EXTREME_PREVALENCE_SHARE:
        top = categories[int(np.argmax(pooled))]
        notes.append(f"{100 * pooled.max():.0f} % of the ratings are {top!r}")
    if not notes:
        return ""
    return ", ".join(notes) + ": kappa is held down by prevalence; read PABAK and Gwet's AC"


def _with_bands(row: dict) -> dict:
    row["band"] = kappa_band(row["kappa"])
    row["band_ci95_low"] = kappa_band(row["ci95_low"])
    row["band_ci95_high"] = kappa_band(row["ci95_high"])
    return row


def _categories(values: pd.Series, variable: str) -> list:
    if variable == "pfirrmann":
        return list(GRADES)  # every grade, so quadratic weights see true grade distances
    return sorted(values.dropna().unique(), key=str)


def agreement(reads: pd.DataFrame) -> pd.DataFrame:
    """Kappa per variable and pair of readers: Pfirrmann unweighted and quadratic-weighted,
    each finding unweighted."""
    readers = sorted(reads["reader"].unique())
    rows = []
    for variable in ["pfirrmann", *finding_columns(reads)]:
        categories = _categories(reads[variable], variable)
        weightings = ("none", "quadratic") if variable == "pfirrmann" else ("none",)
        for reader_a, reader_b in itertools.combinations(readers, 2):
            ratings_a, ratings_b = _pairs_table(reads, variable, reader_a, reader_b)
            for weighting in weightings:
                row = {
                    "variable": variable,
                    "weighting": weighting,
                    "reader_a": reader_a,
                    "reader_b": reader_b,
                }
                row.update(kappa_row(ratings_a, ratings_b, categories, weighting != "none"))
                rows.append(row)
    if len(readers) < 2:
        rows.append(
            {
                "variable": "pfirrmann",
                "weighting": "none",
                "reader_a": readers[0] if readers else "",
                "reader_b": "",
                "n_items": 0,
                "note": "fewer than two readers: no agreement",
            }
        )
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))


def double_read_share(reads: pd.DataFrame) -> dict:
    """How many graded discs were graded by two or more readers."""
    graded = reads.dropna(subset=["pfirrmann"]).groupby(ITEM)["reader"].nunique()
    n_items, n_double = int(len(graded)), int((graded >= 2).sum())
    per_reader = reads.dropna(subset=["pfirrmann"]).groupby("reader").size()
    return {
        "n_discs_graded": n_items,
        "n_discs_double_read": n_double,
        "percent_double_read": 100.0 * n_double / n_items if n_items else math.nan,
        "discs_per_reader": {str(k): int(v) for k, v in per_reader.items()},
    }


# --- consensus ----------------------------------------------------------------------------


def consensus(reads: pd.DataFrame, adjudication: pd.DataFrame) -> pd.DataFrame:
    """One Pfirrmann grade per disc read: the adjudicated grade where there is one; else the
    readers' common grade; else, readers differing without adjudication, the higher grade
    (the conservative call for degeneration). ``consensus_method`` says which."""
    graded = reads.dropna(subset=["pfirrmann"])
    rows = []
    adjudicated = adjudication.dropna(subset=["pfirrmann"]).set_index(ITEM)["pfirrmann"]
    for item, group in graded.groupby(ITEM, sort=False):
        grades = sorted(set(group["pfirrmann"].astype(int)))
        if item in adjudicated.index:
            grade, method = int(adjudicated[item]), "adjudicated"
        elif len(grades) == 1:
            grade = grades[0]
            method = "agreed" if group["reader"].nunique() > 1 else "single reader"
        else:
            grade, method = grades[-1], "higher grade (readers differ, not adjudicated)"
        rows.append(
            {
                **dict(zip(ITEM, item)),
                "pfirrmann": grade,
                "n_readers": int(group["reader"].nunique()),
                "consensus_method": method,
            }
        )
    columns = [*ITEM, "pfirrmann", "n_readers", "consensus_method"]
    return pd.DataFrame(rows, columns=columns)
