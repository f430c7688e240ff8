"""Inter-reader agreement and consensus: kappa against a published worked example and closed
forms, interpretation bands computed from the value, consensus rules, bad reads tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spineflow.stats import agreement
from spineflow_dev.synth import reads as synth_reads


def _reads(rows, findings=()):
    columns = ["reader", "participant_id", "session_id", "level", "pfirrmann", *findings]
    table = pd.DataFrame(rows, columns=columns)
    table["pfirrmann"] = table["pfirrmann"].astype("Int64")
    return table


def test_kappa_published_worked_example():
    # Fleiss & Paik (2003) as printed by statpsych's ci.kappa(.05, 31, 12, 4, 58):
    # Cohen kappa 0.6756757, SE 0.07344761, 95 % CI 0.5317210 to 0.8196303
    ratings_a = ["0"] * 43 + ["1"] * 62
    ratings_b = ["0"] * 31 + ["1"] * 12 + ["0"] * 4 + ["1"] * 58
    row = agreement.kappa_row(ratings_a, ratings_b, ["0", "1"], weighted=False)
    assert row["kappa"] == pytest.approx(0.6756757, abs=1e-7)
    assert row["se"] == pytest.approx(0.07344761, abs=1e-8)
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((0.5317210, 0.8196303), abs=1e-7)
    assert row["band"] == "substantial agreement"
    assert row["percent_agreement"] == pytest.approx(100 * 89 / 105)


def test_quadratic_weighted_kappa_closed_form():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 6, 60)
    b = np.clip(a + rng.integers(-1, 2, 60), 1, 5)
    row = agreement.kappa_row(a, b, [1, 2, 3, 4, 5], weighted=True)
    observed = np.zeros((5, 5))
    for i, j in zip(a, b, strict=True):
        observed[i - 1, j - 1] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    weight = np.subtract.outer(np.arange(5), np.arange(5)) ** 2
    assert row["kappa"] == pytest.approx(1 - (weight * observed).sum() / (weight * expected).sum())


# reference values: irrCAC 0.4.4 (Gwet's own formulas, CAC(table).bp() and .gwet()), run on
# these tables outside the project (it pins scipy 1.12, so it is not a test dependency)
GRADES_TABLE = [[8, 6, 0, 0, 0], [2, 1, 5, 0, 0], [0, 1, 6, 4, 0], [0, 0, 5, 5, 4],
                [0, 0, 0, 3, 10]]  # fmt: skip


def _ratings(table):
    """Two readers' ratings (category indices) behind a table of counts."""
    pairs = [(a, b) for a, row in enumerate(table) for b, count in enumerate(row)
             for _ in range(count)]  # fmt: skip
    return [a for a, _ in pairs], [b for _, b in pairs]


@pytest.mark.parametrize(
    ("table", "weighted", "pabak", "gwet_ac", "kappa"),
    [
        ([[31, 12], [4, 58]], False, 0.6952380952, 0.7141398673, 0.6756756757),
        ([[87, 0], [13, 0]], False, 0.74, 0.8520120667, 0.0),
        (GRADES_TABLE, False, 0.375, 0.3761642767, 0.3728222997),
        (GRADES_TABLE, True, 0.875, 0.8777381559, 0.8772504092),
    ],
)
def test_pabak_and_gwet_against_irrcac(table, weighted, pabak, gwet_ac, kappa):
    ratings_a, ratings_b = _ratings(table)
    row = agreement.kappa_row(ratings_a, ratings_b, list(range(len(table))), weighted)
    assert row["pabak"] == pytest.approx(pabak, abs=1e-9)
    assert row["gwet_ac"] == pytest.approx(gwet_ac, abs=1e-9)
    assert row["kappa"] == pytest.approx(kappa, abs=1e-9)


def test_a_reader_who_never_marks_the_finding_is_named_beside_kappa():
    # the demo's case: 87 % raw agreement, kappa 0 because reader_b never said yes
    row = agreement.kappa_row(["no"] * 87 + ["yes"] * 13, ["no"] * 100, ["no", "yes"], False)
    assert row["kappa"] == pytest.approx(0.0) and row["percent_agreement"] == 87.0
    assert "reader_b gave every item 'no'" in row["note"] and "PABAK" in row["note"]
    rare = agreement.kappa_row(["no"] * 95 + ["yes"] * 5, ["no"] * 96 + ["yes"] * 4,
                               ["no", "yes"], False)  # fmt: skip
    assert "96 % of the ratings are 'no'" in rare["note"]
    common = agreement.kappa_row(["no"] * 60 + ["yes"] * 40, ["no"] * 55 + ["yes"] * 45,
                                 ["no", "yes"], False)  # fmt: skip
    assert "prevalence" not in common["note"]


@pytest.mark.parametrize(
    ("kappa", "band"),
    [
        (0.100, "slight agreement"),
        (1.0, "perfect agreement"),
        (-0.05, "less than chance agreement"),
        (0.35, "fair agreement"),
        (0.5, "moderate agreement"),
        (0.7, "substantial agreement"),
        (0.81, "almost perfect agreement"),
        (0.999, "almost perfect agreement"),
        (0.6004, "moderate agreement"),
        (0.0, "slight agreement"),  # printed 0.600: the band of what the reader sees
        (0.9996, "perfect agreement"),
    ],
)
def test_bands_are_computed_not_typed(kappa, band):
    # the study's slip: kappa = 0.100 is slight, not perfect, agreement
    assert agreement.kappa_band(kappa) == band


def test_kappa_undefined_when_every_score_is_the_same():
    row = agreement.kappa_row(["no"] * 8, ["no"] * 8, ["no"], weighted=False)
    assert math.isnan(row["kappa"]) and "undefined" in row["note"] and row["band"] == ""
    assert row["percent_agreement"] == 100.0


def test_agreement_with_a_reader_who_read_part_of_the_cohort():
    rows, grades = [], [1, 2, 2, 3, 1, 4, 2, 2, 3, 1]
    for i, grade in enumerate(grades):
        item = (f"sub-{i:02d}", "ses-1", "L4-L5")
        rows.append(("R1", *item, grade, "yes" if i % 3 == 0 else "no"))
        if i < 6:  # R2 read only the first six
            rows.append(("R2", *item, grade if i != 2 else 3, "yes" if i % 3 == 0 else "no"))
    reads = _reads(rows, ["facet_effusion"])
    table = agreement.agreement(reads)
    grade = table[(table["variable"] == "pfirrmann") & (table["weighting"] == "none")].iloc[0]
    assert grade["n_items"] == 6 and grade["percent_agreement"] == pytest.approx(500 / 6)
    finding = table[table["variable"] == "facet_effusion"].iloc[0]
    assert finding["kappa"] == pytest.approx(1.0) and finding["band"] == "perfect agreement"
    share = agreement.double_read_share(reads)
    assert (share["n_discs_graded"], share["n_discs_double_read"]) == (10, 6)
    assert share["discs_per_reader"] == {"R1": 10, "R2": 6}


def test_consensus_rules():
    item = ("sub-01", "ses-1")
    reads = _reads(
        [
            ("R1", *item, "L3-L4", 2),
            ("R2", *item, "L3-L4", 2),  # agreed
            ("R1", *item, "L4-L5", 2),
            ("R2", *item, "L4-L5", 3),  # differ, adjudicated to 2
            ("R1", *item, "L5-S1", 1),
            ("R2", *item, "L5-S1", 3),  # differ: the higher grade
            ("R1", "sub-02", "ses-1", "L4-L5", 4),  # one reader only
        ]
    )
    adjudication = pd.DataFrame(
        [{"participant_id": "sub-01", "session_id": "ses-1", "level": "L4-L5", "pfirrmann": 2}]
    )
    result = agreement.consensus(reads, adjudication).set_index(["participant_id", "level"])
    assert result.loc[("sub-01", "L3-L4"), "consensus_method"] == "agreed"
    assert tuple(result.loc[("sub-01", "L4-L5"), ["pfirrmann", "consensus_method"]]) == (
        2,
        "adjudicated",
    )
    assert result.loc[("sub-01", "L5-S1"), "pfirrmann"] == 3
    assert result.loc[("sub-02", "L4-L5"), "consensus_method"] == "single reader"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("reader\tparticipant_id\tlevel\tpfirrmann\nR1\t01\tL4-L5\t2\n", "missing column"),
        (
            "reader\tparticipant_id\tsession_id\tlevel\tpfirrmann\nR1\t01\t1\tL4-L5\t7\n",
            "1-5 or n/a",
        ),
        (
            "reader\tparticipant_id\tsession_id\tlevel\tpfirrmann\nR1\t01\t1\tL2-L3\t2\n",
            "unknown level",
        ),
        (
            "reader\tparticipant_id\tsession_id\tlevel\tpfirrmann\nR1\t01\t1\tL4-L5\t2\nR1\tsub-01\tses-1"
            "\tL4-L5\t3\n",
            "repeated rows",
        ),
    ],
)
def test_bad_reads_tables_name_the_file(tmp_path, content, message):
    path = tmp_path / "reads.tsv"
    path.write_text(content)
    with pytest.raises(agreement.ReadsError, match=message) as error:
        agreement.read_reads(path)
    assert str(path) in str(error.value)


def test_reads_accept_bare_ids_and_not_graded():
    table = "reader\tparticipant_id\tsession_id\tlevel\tpfirrmann\nR1\t01\t1\tL4–L5\tn/a\n"
    reads = agreement.read_reads(_write(table))
    assert reads.iloc[0][["participant_id", "session_id", "level"]].tolist() == [
        "sub-01",
        "ses-1",
        "L4-L5",
    ]
    assert pd.isna(reads.iloc[0]["pfirrmann"])


def _write(text):
    import tempfile

    handle = tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False)
    handle.write(text)
    handle.close()
    return handle.name


def test_synthetic_reads_disagree_realistically():
    truth = pd.DataFrame(
        [
            {
                "participant_id": f"sub-{i:02d}",
                "session_id": "ses-1",
                "level": level,
                "pfirrmann": 1 + (i + k) % 4,
                "status": "not_in_fov" if (i, k) == (0, 0) else "ok",
            }
            for i in range(40)
            for k, level in enumerate(("L3-L4", "L4-L5", "L5-S1"))
        ]
    )
    reads, adjudication = synth_reads.reads_tables(truth, seed=3)
    assert len(reads[reads["participant_id"] == "sub-00"]) < 6  # the cut disc is not graded
    share = agreement.double_read_share(
        agreement._normalised(reads, "synthetic", agreement.READ_COLUMNS)
    )
    assert 60 < share["percent_double_read"] < 90  # R2 reads part of the cohort
    table = agreement.agreement(reads)
    weighted = table[table["weighting"] == "quadratic"].iloc[0]
    assert 0.6 < weighted["kappa"] < 0.98  # imperfect, as real readers are
    assert len(adjudication) > 0
    again, _ = synth_reads.reads_tables(truth, seed=3)
    pd.testing.assert_frame_equal(reads, again)


def test_perfect_agreement_has_no_made_up_interval():
    # statsmodels' variance estimate is undefined here: no CI rather than [-1, 1]
    grades = [1, 2, 2, 2, 2, 3, 3]
    row = agreement.kappa_row(grades, grades, [1, 2, 3, 4, 5], weighted=False)
    assert row["kappa"] == pytest.approx(1.0) and row["band"] == "perfect agreement"
    assert math.isnan(row["ci95_low"]) and math.isnan(row["ci95_high"])
    assert row["band_ci95_low"] == "" and "no confidence interval" in row["note"]


def test_a_reads_table_without_rows_gives_a_note_not_an_error():
    table = agreement.agreement(_reads([]))
    assert "fewer than two readers" in table.iloc[0]["note"]
