"""Cohort statistics against independent computations: closed forms on hand-made data, scipy
against statsmodels, and published worked examples with their printed results."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.weightstats import DescrStatsW, ttest_ind

from spineflow.stats import models as st
from spineflow.stats import report as stats_report
from spineflow.stats.agreement import kappa_band

SETTINGS = st.Settings()
# Student's sleep data (Cushny & Peebles), R's `sleep`: extra hours of sleep under two drugs
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


# --- hand-made tables --------------------------------------------------------------------------


def _discs(records):
    """records: (participant, session, level, height_mm, status[, grade])."""
    rows = []
    for record in records:
        sub, ses, level, height, status = record[:5]
        grade = record[5] if len(record) > 5 else np.nan
        rows.append(
            {
                "participant_id": sub,
                "session_id": ses,
                "level": level,
                "height_mm": height,
                "width_mm": np.nan if height is None else 40.0,
                "pfirrmann_auto": grade,
                "status": status,
                "note": "",
            }
        )
    return pd.DataFrame(rows)


NO_VERTEBRAE = pd.DataFrame(
    columns=["participant_id", "session_id", "vertebra", "intervertebral_distance_mm", "status"]
)


def _people(rows=()):
    frame = pd.DataFrame(
        list(rows), columns=["participant_id", "sex", "age", "height_cm", "weight_kg", "group"]
    )
    return st.with_groups(st.participants_table(frame, None), SETTINGS)


def _tables(discs, vertebrae=NO_VERTEBRAE):
    """The statistics' inputs from hand-made tables: (tables, their pairs, grade source)."""
    grades, source = st.grades(discs, None)
    tables = {"discs": discs, "vertebrae": vertebrae, "grades": grades}
    return tables, st.measure_pairs(tables), source


def _table3(discs, people=None, vertebrae=NO_VERTEBRAE):
    tables, pairs_of, source = _tables(discs, vertebrae)
    people = _people() if people is None else people
    return st.table3(tables, pairs_of, people, SETTINGS, source)


def _row(result, measure="height_mm", level="L4-L5", group="all"):
    row = result[
        (result["measure"] == measure) & (result["level"] == level) & (result["group"] == group)
    ]
    assert len(row) == 1
    return row.iloc[0]


def _pairs(before, after, level="L4-L5"):
    records = []
    for i, (b, a) in enumerate(zip(before, after, strict=True), start=1):
        records += [
            (f"sub-{i:02d}", "ses-1", level, b, "ok"),
            (f"sub-{i:02d}", "ses-2", level, a, "ok"),
        ]
    return records


# --- the paired comparison ---------------------------------------------------------------------


def test_paired_t_published_sleep_example():
    # R: t.test(extra ~ group, data = sleep, paired = TRUE) prints t = -4.0621, df = 9,
    # p-value = 0.002833, 95 percent CI -2.4598858 -0.7001142, mean difference -1.58
    # (group 1 minus group 2: here ses-2 = group 1, ses-1 = group 2)
    row = st.paired_summary(SLEEP_2, SLEEP_1, 0.5, SETTINGS)
    assert row["t_statistic"] == pytest.approx(-4.0621, abs=1e-4)
    assert row["p_value"] == pytest.approx(0.002833, abs=1e-6)
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((-2.4598858, -0.7001142), abs=1e-7)
    assert row["mean_change"] == pytest.approx(-1.58)
    # R: wilcox.test(extra ~ group, data = sleep, paired = TRUE): V = 0, p-value = 0.009091
    # (one zero difference dropped, normal approximation with continuity correction)
    assert row["wilcoxon_p"] == pytest.approx(0.009091, abs=1e-6)


def _random_change(seed: int, n: int, mean_mm: float, sd_mm: float):
    """(the paired summary, the changes) of n random pairs."""
    rng = np.random.default_rng(seed)
    before = rng.normal(10.0, 1.0, n)
    after = before + rng.normal(mean_mm, sd_mm, n)
    return st.paired_summary(before, after, 0.5, SETTINGS, detectable=0.2), after - before


def test_paired_t_matches_statsmodels():
    row, diff = _random_change(7, 12, 0.15, 0.1)
    t, p, _ = DescrStatsW(diff).ttest_mean(0)
    assert row["t_statistic"] == pytest.approx(t)
    assert row["p_value"] == pytest.approx(p)
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(
        DescrStatsW(diff).tconfint_mean(alpha=0.05)
    )


def test_paired_closed_form_three_pairs():
    # changes 1, 2, 3: mean 2, SD 1, t = 2 sqrt 3 with 2 df; P(|T| > t) = 1 - t / sqrt(2 + t^2)
    row = st.paired_summary([10, 11, 12], [11, 13, 15], 0.5, SETTINGS)
    assert (row["mean_ses1"], row["mean_ses2"], row["mean_change"]) == (11.0, 13.0, 2.0)
    assert row["sd_change"] == pytest.approx(1.0)
    assert row["t_statistic"] == pytest.approx(2 * math.sqrt(3))
    assert row["p_value"] == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14))
    assert row["dz"] == pytest.approx(2.0)
    assert row["mdc95"] == pytest.approx(1.96)


def test_tost_is_two_one_sided_t_tests():
    row, change = _random_change(3, 15, 0.1, 0.3)
    lower = stats.ttest_1samp(change, -0.5, alternative="greater").pvalue
    upper = stats.ttest_1samp(change, 0.5, alternative="less").pvalue
    assert row["tost_p"] == pytest.approx(max(lower, upper))
    assert row["equivalent"] is bool(max(lower, upper) < 0.05)


def test_tost_tells_no_change_from_no_evidence():
    # zero mean change, small spread: equivalent; large spread: neither different nor equivalent
    rng = np.random.default_rng(5)
    before = rng.normal(10, 1, 20)
    noise = rng.normal(0, 1, 20)
    noise -= noise.mean()
    tight = st.paired_summary(before, before + 0.1 * noise, 0.5, SETTINGS)
    noisy = st.paired_summary(before, before + 2.0 * noise, 0.5, SETTINGS)
    assert tight["equivalent"] is True and tight["p_value"] > 0.05
    assert noisy["equivalent"] is False and noisy["p_value"] > 0.05


def test_dz_confidence_interval():
    # the bounds are where the observed t is the 97.5 % / 2.5 % quantile of the noncentral t
    dz, n = 0.6, 15
    low, high = st.cohens_dz_ci(dz, n)
    t = dz * math.sqrt(n)
    assert stats.nct.cdf(t, n - 1, low * math.sqrt(n)) == pytest.approx(0.975, abs=1e-9)
    assert stats.nct.cdf(t, n - 1, high * math.sqrt(n)) == pytest.approx(0.025, abs=1e-9)
    # large n: the normal approximation SE = sqrt(1/n + dz^2 / (2n)) (Hedges & Olkin)
    n = 2000
    low, high = st.cohens_dz_ci(dz, n)
    se = math.sqrt(1 / n + dz**2 / (2 * n))
    assert (low, high) == pytest.approx((dz - 1.96 * se, dz + 1.96 * se), abs=2e-3)


def test_power_and_minimum_detectable_change_closed_form():
    row, _ = _random_change(11, 21, 0.05, 0.25)
    sd, n = row["sd_change"], 21
    critical = stats.t.ppf(0.975, n - 1)

    def power(change_mm):  # two-sided paired t: noncentral t with nc = change / (sd / sqrt n)
        nc = change_mm / sd * math.sqrt(n)
        return stats.nct.sf(critical, n - 1, nc) + stats.nct.cdf(-critical, n - 1, nc)

    assert row["power_target"] == pytest.approx(power(0.2), abs=1e-6)
    assert power(row["mdd"]) == pytest.approx(0.8, abs=1e-4)


def test_holm_closed_form():
    # sorted p 0.01, 0.02, 0.04 times 3, 2, 1, then running maximum: 0.03, 0.04, 0.04
    assert st.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    adjusted = st.holm([0.01, math.nan, 0.04])
    assert math.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.02, 0.04])


# --- Table 3 -------------------------------------------------------------------------------------


def test_table3_levels_overall_and_holm():
    rng = np.random.default_rng(2)
    records = []
    for level, shift in (("L3-L4", 0.0), ("L4-L5", -0.3), ("L5-S1", -0.1)):
        before = rng.normal(10, 1, 10)
        records += _pairs(before, before + rng.normal(shift, 0.1, 10), level)
    result = _table3(_discs(records))
    levels = result[(result["measure"] == "height_mm") & (result["group"] == "all")]
    assert list(levels["level"]) == ["overall", "L3-L4", "L4-L5", "L5-S1"]
    p = levels["p_value"].to_numpy()[1:]
    assert levels["p_holm"].to_numpy()[1:] == pytest.approx(st.holm(p))
    overall = levels.iloc[0]
    per_participant = pd.DataFrame(records, columns=["p", "s", "l", "h", "x"]).pivot_table(
        index="p", columns="s", values="h"
    )
    change = per_participant["ses-2"] - per_participant["ses-1"]
    assert overall["n_pairs"] == 10
    assert overall["mean_change"] == pytest.approx(change.mean())
    assert overall["t_statistic"] == pytest.approx(stats.ttest_1samp(change, 0).statistic)


def test_missing_second_timepoint_counted_not_paired():
    records = _pairs([10.0, 11.0, 12.0], [10.5, 11.2, 12.9]) + [
        ("sub-04", "ses-1", "L4-L5", 30.0, "ok")
    ]
    row = _row(_table3(_discs(records)))
    assert (row["n_pairs"], row["n_no_ses2"], row["n_excluded"]) == (3, 1, 0)
    assert row["mean_ses1"] == pytest.approx(11.0)  # sub-04's 30 mm is not in the paired mean


def test_not_in_fov_or_failed_excludes_the_pair():
    records = _pairs([10.0, 11.0, 12.0], [10.5, 11.2, 12.9], "L3-L4")
    records += [
        ("sub-04", "ses-1", "L3-L4", 9.0, "ok"),
        ("sub-04", "ses-2", "L3-L4", 99.0, "not_in_fov"),
    ]
    records += [
        ("sub-05", "ses-1", "L3-L4", None, "failed"),
        ("sub-05", "ses-2", "L3-L4", 9.0, "ok"),
    ]
    row = _row(_table3(_discs(records)), level="L3-L4")
    assert (row["n_pairs"], row["n_excluded"], row["n_no_ses2"]) == (3, 2, 0)
    assert row["mean_change"] == pytest.approx((0.5 + 0.2 + 0.9) / 3)


def test_qc_failed_values_are_left_out_and_counted():
    records = _pairs([10.0, 11.0, 12.0], [10.5, 11.2, 12.9], "L5-S1")
    records += [
        ("sub-04", "ses-1", "L5-S1", 9.0, "ok"),
        ("sub-04", "ses-2", "L5-S1", 27.0, "qc_failed"),
    ]
    row = _row(_table3(_discs(records)), level="L5-S1")
    assert (row["n_pairs"], row["n_excluded"], row["n_qc_failed"]) == (3, 1, 1)
    assert row["mean_ses2"] == pytest.approx((10.5 + 11.2 + 12.9) / 3)
    overall = _row(_table3(_discs(records)), level="overall")
    assert overall["n_qc_failed"] == 1


@pytest.mark.parametrize("change", [0.0, 0.3])
def test_identical_changes_defined_behaviour(change):
    row = _row(
        _table3(_discs(_pairs([10.0, 10.7, 12.1], [10.0 + change, 10.7 + change, 12.1 + change])))
    )
    assert row["n_pairs"] == 3 and row["mean_change"] == pytest.approx(change)
    assert row["sd_change"] == 0.0
    for column in ("t_statistic", "p_value", "tost_p", "dz", "wilcoxon_p", "mdd"):
        assert math.isnan(row[column]), column
    assert row["equivalent"] is None  # no test, no claim
    assert row["note"] == "no variation in change: tests undefined"


def test_one_pair_and_a_level_missing_for_everyone():
    records = [
        ("sub-1", "ses-1", "L5-S1", 10.0, "ok"),
        ("sub-1", "ses-2", "L5-S1", 10.4, "ok"),
        ("sub-2", "ses-1", "L5-S1", 11.0, "ok"),
    ]
    result = _table3(_discs(records))
    row = _row(result, level="L5-S1")
    assert row["n_pairs"] == 1 and row["mean_change"] == pytest.approx(0.4)
    assert math.isnan(row["p_value"]) and "1 pair" in row["note"]
    nobody = _row(result, level="L3-L4")
    assert nobody["n_pairs"] == 0 and "no pairs" in nobody["note"]
    assert math.isnan(nobody["p_holm"])


def test_groups_split_finishers_and_non_finishers():
    before = [10.0, 11.0, 12.0, 9.0, 10.5]
    records = _pairs(before, [b - 0.3 + 0.05 * i for i, b in enumerate(before)])
    people = _people(
        [
            (f"sub-{i:02d}", "F", 30, 170, 60, g)
            for i, g in zip(range(1, 6), ["finisher"] * 3 + ["non-finisher"] * 2, strict=True)
        ]
    )
    result = _table3(_discs(records), people)
    assert _row(result, group="finisher")["n_pairs"] == 3
    assert _row(result, group="non-finisher")["n_pairs"] == 2
    assert _row(result, group="all")["n_pairs"] == 5


# --- Table 2 -------------------------------------------------------------------------------------


def test_table2_prevalence_denominators_and_any_row():
    records = [
        ("sub-1", "ses-1", "L3-L4", 10, "ok", 1),
        ("sub-1", "ses-1", "L4-L5", 10, "ok", 3),
        ("sub-1", "ses-1", "L5-S1", 10, "ok", 2),
        ("sub-2", "ses-1", "L3-L4", None, "not_in_fov"),
        ("sub-2", "ses-1", "L4-L5", 10, "ok", 1),
        ("sub-2", "ses-1", "L5-S1", 10, "ok", 1),
        ("sub-3", "ses-1", "L3-L4", None, "not_in_fov"),
        ("sub-3", "ses-1", "L4-L5", 10, "ok", 2),
        ("sub-3", "ses-1", "L5-S1", 10, "ok", 5),
        ("sub-1", "ses-2", "L4-L5", 10, "ok", 4),
    ]
    grades, source = st.grades(_discs(records), None)
    table = st.table2(grades, ["sub-1", "sub-2", "sub-3"], source).set_index("level")
    l34 = table.loc["L3-L4"]
    assert (l34["n_assessed"], l34["n_not_assessed"], l34["grade_1"]) == (1, 2, 1)
    assert l34["percent_degenerated"] == 0.0 and "2 of 3 not assessable" in l34["note"]
    l45 = table.loc["L4-L5"]  # ses-2's grade 4 is not timepoint 1
    assert [l45[f"grade_{g}"] for g in range(1, 6)] == [1, 1, 1, 0, 0]
    assert l45["n_degenerated"] == 2 and l45["percent_degenerated"] == pytest.approx(200 / 3)
    anyone = table.loc["any"]  # highest grades 3, 1, 5
    assert [anyone[f"grade_{g}"] for g in range(1, 6)] == [1, 0, 1, 0, 1]
    assert anyone["n_degenerated"] == 2 and anyone["n_assessed"] == 3
    # sub-2: grade 1 where seen, L3-L4 unseen: "not degenerated" is only a lower bound
    assert "1 graded 1 with a level not assessable" in anyone["note"]
    assert (table["grade_source"] == "automatic grade (pfirrmann_auto)").all()


def test_table2_uses_consensus_grades_when_given():
    discs = _discs([("sub-1", "ses-1", "L4-L5", 10, "ok", 1)])
    consensus = pd.DataFrame(
        [{"participant_id": "sub-1", "session_id": "ses-1", "level": "L4-L5", "pfirrmann": 3}]
    )
    grades, source = st.grades(discs, consensus)
    table = st.table2(grades, ["sub-1"], source).set_index("level")
    assert table.loc["L4-L5", "grade_3"] == 1 and "consensus" in source


# --- unpaired comparisons ------------------------------------------------------------------------


def test_compare_groups_against_statsmodels():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.1, 0.2, 9), rng.normal(-0.05, 0.3, 12)
    row = st.compare_groups(a, b)
    t, p, _ = ttest_ind(a, b, usevar="pooled")
    assert row["t_statistic"] == pytest.approx(t) and row["p_value"] == pytest.approx(p)
    assert row["p_welch"] == pytest.approx(ttest_ind(a, b, usevar="unequal")[1])
    assert (row["n_a"], row["n_b"]) == (9, 12)


def test_compare_groups_with_one_participant_in_a_group():
    row = st.compare_groups([0.3], [0.1, 0.2, 0.0])
    assert math.isnan(row["p_value"]) and "no test" in row["note"]
    assert row["difference"] == pytest.approx(0.2)


def test_table4_and_comparisons_on_a_hand_made_cohort():
    rows, records = [], []
    rng = np.random.default_rng(9)
    for i in range(1, 13):
        sub = f"sub-{i:02d}"
        group = "finisher" if i <= 8 else "non-finisher"
        rows.append((sub, "F" if i % 2 else "M", 30 + 2 * i, 170, 60 + i, group))
        before = rng.normal(10, 1)
        records += [
            (sub, "ses-1", "L4-L5", before, "ok", 1 + i % 3),
            (sub, "ses-2", "L4-L5", before - 0.1 * (i % 2), "ok", 1 + i % 3),
        ]
    tables, pairs_of, _ = _tables(_discs(records))
    people = _people(rows)
    frame = st.per_participant(pairs_of, tables["grades"], people)
    table4 = st.table4(frame, SETTINGS)
    sex = table4[(table4["grouping"] == "sex") & (table4["measure"] == "height_mm_change")].iloc[0]
    finishers = frame[frame["group"] == "finisher"]
    women = finishers.loc[finishers["sex"] == "F", "height_mm_change"]
    men = finishers.loc[finishers["sex"] == "M", "height_mm_change"]
    assert (sex["group_a"], sex["n_a"], sex["n_b"]) == ("F", 4, 4)
    assert sex["mean_a"] == pytest.approx(-0.1) and sex["mean_b"] == pytest.approx(0.0)
    assert math.isnan(sex["p_value"])  # no variation within either group
    assert women.mean() == pytest.approx(-0.1) and men.mean() == pytest.approx(0.0)
    age = table4[(table4["grouping"] == "age_group") & (table4["measure"] == "height_mm_change")]
    assert (age.iloc[0]["n_a"], age.iloc[0]["n_b"]) == (4, 4)  # ages 32..46, cut-off 40
    comparisons = st.comparisons(frame)
    groups = comparisons[comparisons["measure"] == "height_mm_change"].iloc[0]
    assert (groups["n_a"], groups["n_b"]) == (8, 4)


# --- mixed model ---------------------------------------------------------------------------------


def test_mixed_model_matches_anova_on_balanced_data():
    # balanced participants x levels with a random participant intercept: REML's fixed
    # effects are the level means, and its variances the ANOVA (expected mean square) ones
    rng = np.random.default_rng(21)
    n, levels = 30, ("L3-L4", "L4-L5", "L5-S1")
    participant = rng.normal(0, 0.3, n)
    level_effect = {"L3-L4": 0.0, "L4-L5": -0.2, "L5-S1": 0.1}
    records, change = [], np.zeros((n, 3))
    for i in range(n):
        for j, level in enumerate(levels):
            change[i, j] = level_effect[level] + participant[i] + rng.normal(0, 0.2)
            records += [
                (f"sub-{i:02d}", "ses-1", level, 10.0, "ok"),
                (f"sub-{i:02d}", "ses-2", level, 10.0 + change[i, j], "ok"),
            ]
    _, pairs_of, _ = _tables(_discs(records))
    settings = st.Settings(covariates=())
    model = st.mixed_model(pairs_of, _people(), settings)
    height = model[model["measure"] == "height_mm"].set_index("term")
    means = change.mean(axis=0)
    assert height.loc["Intercept", "coefficient"] == pytest.approx(means[0], abs=1e-5)
    assert height.loc["C(level)[T.L4-L5]", "coefficient"] == pytest.approx(
        means[1] - means[0], abs=1e-5
    )
    residual = change - change.mean(axis=1, keepdims=True) - means + change.mean()
    ms_error = (residual**2).sum() / ((n - 1) * 2)
    ms_participant = 3 * ((change.mean(axis=1) - change.mean()) ** 2).sum() / (n - 1)
    assert height.loc["residual variance", "coefficient"] == pytest.approx(ms_error, rel=1e-3)
    assert height.loc["participant variance", "coefficient"] == pytest.approx(
        (ms_participant - ms_error) / 3, rel=1e-3
    )


def test_mixed_model_too_few_participants_is_a_note():
    _, pairs_of, _ = _tables(_discs(_pairs([10.0, 11.0], [10.1, 11.3])))
    model = st.mixed_model(pairs_of, _people(), SETTINGS)
    assert "too few participants" in model.iloc[0]["note"]


# --- the stage end to end -----------------------------------------------------------------------


def test_stage_writes_every_table_json_and_rendering(tmp_path):
    rng = np.random.default_rng(1)
    records, people, reads = [], [], []
    for i in range(1, 9):
        sub = f"sub-{i:02d}"
        people.append(
            {
                "participant_id": sub,
                "sex": "FM"[i % 2],
                "age": 30 + 3 * i,
                "height_cm": 170,
                "weight_kg": 65 + i,
                "group": "finisher" if i < 6 else "non-finisher",
            }
        )
        for level in ("L3-L4", "L4-L5", "L5-S1"):
            before, grade = rng.normal(10, 1), int(rng.integers(1, 4))
            sessions = ("ses-1",) if i == 8 else ("ses-1", "ses-2")  # sub-08 never came back
            for session in sessions:
                height = before + (rng.normal(-0.1, 0.1) if session == "ses-2" else 0)
                records.append((sub, session, level, height, "ok", grade))
                for reader in ("R1", "R2"):
                    reads.append(
                        {
                            "reader": reader,
                            "participant_id": sub,
                            "session_id": session,
                            "level": level,
                            "pfirrmann": grade
                            if reader == "R1" or rng.uniform() < 0.8
                            else min(5, grade + 1),
                        }
                    )
    paths = {name: tmp_path / f"{name}.tsv" for name in ("discs", "participants", "reads")}
    _discs(records).to_csv(paths["discs"], sep="\t", index=False, na_rep="n/a")
    pd.DataFrame(people).to_csv(paths["participants"], sep="\t", index=False)
    pd.DataFrame(reads).to_csv(paths["reads"], sep="\t", index=False)
    NO_VERTEBRAE.to_csv(tmp_path / "vertebrae.tsv", sep="\t", index=False)
    written = stats_report.run(
        paths["discs"],
        tmp_path / "vertebrae.tsv",
        paths["participants"],
        tmp_path / "out",
        {},
        reads_tsv=paths["reads"],
    )
    names = {p.rsplit("/", 1)[-1] for p in written.values()}
    assert names == set(stats_report.output_files(with_reads=True))
    payload = json.loads((tmp_path / "out" / "stats.json").read_text())  # strict JSON: no NaN
    assert payload["grade_source"] == "consensus of the radiologists' reads"
    kappa = payload["agreement"][0]
    assert kappa["band"] == kappa_band(kappa["kappa"])
    height = [
        r
        for r in payload["table3_change"]
        if r["measure"] == "height_mm" and r["level"] == "overall" and r["group"] == "all"
    ]
    assert height[0]["n_pairs"] == 7 and height[0]["n_no_ses2"] == 1
    markdown = (tmp_path / "out" / "statistics.md").read_text()
    assert "## Table 3. Change between timepoint 1 and timepoint 2" in markdown
    assert kappa["band"] in markdown
    assert "<table" in (tmp_path / "out" / "statistics.html").read_text()
