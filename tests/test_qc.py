"""The QC gate: impossible values never leave as ok, possible ones (pathology included) do."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from spineflow.longitudinal.change import registration_check
from spineflow.measure.qc import (
    QC_FAILED,
    QcLimits,
    gate_endplates,
    gate_ratings,
    gate_registration,
    gate_session,
    gate_sessions,
    order_problem,
    read_ratings,
)
from spineflow.measure.session import LATERAL_DIFFERENCE

REPO = Path(__file__).resolve().parent.parent


def _discs(heights, widths=(35.0, 36.0, 37.0)):
    return pd.DataFrame(
        {
            "level": ["L3-L4", "L4-L5", "L5-S1"],
            "height_mm": heights,
            "width_mm": widths,
            "pfirrmann_auto": [1, 2, 3],
            "status": "ok",
            "note": "",
        }
    )


def _vertebrae(distances=(25.0, 26.0, 25.5, 24.0)):
    return pd.DataFrame(
        {
            "vertebra": ["L3", "L4", "L5", "S1"],
            "intervertebral_distance_mm": distances,
            "status": "ok",
            "note": "",
        }
    )


def test_a_value_outside_its_physical_range_is_qc_failed_with_the_value_in_the_note():
    discs, vertebrae = gate_session(_discs([10.0, 27.6, 9.0]), _vertebrae(), QcLimits())
    row = discs.set_index("level").loc["L4-L5"]
    assert row["status"] == QC_FAILED
    assert "27.6" in row["note"] and "2-20" in row["note"]
    assert np.isnan(row["height_mm"]) and pd.isna(row["pfirrmann_auto"])
    assert (discs.set_index("level").loc[["L3-L4", "L5-S1"], "status"] == "ok").all()
    # the distances that run from its endplates go with it (gate_endplates)
    assert list(vertebrae["status"]) == ["ok", QC_FAILED, QC_FAILED, "ok"]


def test_a_width_far_from_the_other_levels_fails_a_collapsed_disc_does_not():
    discs, _ = gate_session(
        _discs([3.0, 10.0, 11.0], widths=(36.0, 55.0, 35.0)), _vertebrae(), QcLimits()
    )
    by_level = discs.set_index("level")
    assert by_level.at["L4-L5", "status"] == QC_FAILED  # 55 mm beside 36 and 35
    assert "times the median" in by_level.at["L4-L5", "note"]
    assert by_level.at["L3-L4", "status"] == "ok"  # 3 mm beside 10 and 11: a collapsed disc


def test_a_disc_twice_as_tall_as_its_neighbours_fails():
    discs, _ = gate_session(_discs([8.0, 19.0, 9.0]), _vertebrae(), QcLimits())
    assert discs.set_index("level").at["L4-L5", "status"] == QC_FAILED


def test_an_intervertebral_distance_off_its_neighbours_fails():
    _, vertebrae = gate_session(_discs([9.0, 10.0, 11.0]), _vertebrae((25.0, 45.0, 26.0, 24.0)),
                                QcLimits())  # fmt: skip
    by_vertebra = vertebrae.set_index("vertebra")
    assert by_vertebra.at["L4", "status"] == QC_FAILED
    assert (by_vertebra.drop("L4")["status"] == "ok").all()


def test_a_height_the_slices_either_side_contradict_fails():
    """L5-S1 measured 8.9 mm on the mid-sagittal surface and 10.2 on average on the slices
    either side: its fit took another edge. Differences within the limit (either sign), and rows
    whose sides could not be measured, pass."""
    discs = _discs([10.0, 11.0, 8.9]).assign(**{LATERAL_DIFFERENCE: [-0.6, np.nan, 1.3]})
    gated, _ = gate_session(discs, _vertebrae(), QcLimits())
    by_level = gated.set_index("level")
    assert list(by_level["status"]) == ["ok", "ok", QC_FAILED]
    assert "8.9" in by_level.at["L5-S1", "note"] and "10.2" in by_level.at["L5-S1", "note"]
    assert np.isnan(by_level.at["L5-S1", "height_mm"])
    wider, _ = gate_session(discs, _vertebrae(), QcLimits(max_lateral_difference_mm=1.5))
    assert (wider["status"] == "ok").all()


def test_the_vertebrae_next_to_a_failed_disc_fail_with_it():
    """L5-S1's height contradicted by the slices either side: one of its endplates is wrong, so
    L5's and S1's intervertebral distances, which run from them, are not trusted either; L3's and
    L4's stay. In a group table only the same session's vertebrae."""
    discs = _discs([10.0, 11.0, 8.9]).assign(**{LATERAL_DIFFERENCE: [0.1, 0.0, 1.3]})
    _, vertebrae = gate_session(discs, _vertebrae(), QcLimits())
    by_vertebra = vertebrae.set_index("vertebra")
    assert list(by_vertebra["status"]) == ["ok", "ok", QC_FAILED, QC_FAILED]
    assert by_vertebra["note"].str.contains("L5-S1").tolist() == [False, False, True, True]
    assert by_vertebra.loc[["L5", "S1"], "intervertebral_distance_mm"].isna().all()
    sessions = {"participant_id": ["sub-01", "sub-01"], "session_id": ["ses-1", "ses-2"]}
    group_discs = pd.concat(
        [_discs([10.0, 11.0, 12.0]).assign(participant_id=p, session_id=s)
         for p, s in zip(*sessions.values())], ignore_index=True)  # fmt: skip
    group_discs.loc[(group_discs["session_id"] == "ses-2") & (group_discs["level"] == "L3-L4"),
                    "status"] = QC_FAILED  # fmt: skip
    group_vertebrae = pd.concat(
        [_vertebrae().assign(participant_id=p, session_id=s) for p, s in zip(*sessions.values())],
        ignore_index=True,
    )
    gated = gate_endplates(group_discs, group_vertebrae)
    failed = gated.loc[gated["status"] == QC_FAILED, ["session_id", "vertebra"]]
    assert failed.values.tolist() == [["ses-2", "L3"], ["ses-2", "L4"]]
    assert gate_endplates(_discs([10.0, 11.0, 12.0]), _vertebrae()).equals(_vertebrae())


def test_labels_out_of_order_fail_every_value():
    records = [
        {"level": "L3-L4", "status": "ok", "origin_ras": [0, 0, 0], "up_ras": [0, 0, 1]},
        {"level": "L4-L5", "status": "ok", "origin_ras": [0, 0, 35], "up_ras": [0, 0, 1]},
        {"level": "L5-S1", "status": "ok", "origin_ras": [0, 5, -2], "up_ras": [0, 0, 1]},
    ]
    problem = order_problem(records, QcLimits())
    assert "L4-L5" in problem and "order" in problem
    discs, vertebrae = gate_session(_discs([9.0, 10.0, 11.0]), _vertebrae(), QcLimits(), problem)
    assert (discs["status"] == QC_FAILED).all() and (vertebrae["status"] == QC_FAILED).all()


def test_discs_in_order_at_a_vertebra_apart_pass():
    records = [
        {"level": level, "status": "ok", "origin_ras": [0, 0, z], "up_ras": [0, 0.2, 0.98]}
        for level, z in (("L3-L4", 70.0), ("L4-L5", 35.0), ("L5-S1", 0.0))
    ]
    assert order_problem(records, QcLimits()) == ""


def test_discs_two_vertebrae_apart_across_a_failed_one_are_spaced_by_two():
    # real 1 mm exam ivd20: L4-L5 failed, L3-L4 lay 69 mm above L5-S1, both right
    records = [
        {"level": "L3-L4", "status": "ok", "origin_ras": [0, 0, 69.0], "up_ras": [0, 0, 1]},
        {"level": "L4-L5", "status": "failed", "origin_ras": None, "up_ras": None},
        {"level": "L5-S1", "status": "ok", "origin_ras": [0, 0, 0.0], "up_ras": [0, 0, 1]},
    ]
    assert order_problem(records, QcLimits()) == ""
    records[0]["origin_ras"] = [0, 0, 140.0]  # three vertebrae apart, not two
    assert "L3-L4 lies 140 mm above L5-S1 (36-130 expected)" in order_problem(records, QcLimits())


def test_two_sessions_that_disagree_beyond_any_change_both_fail():
    table = pd.concat(
        [
            _discs([10.0, 11.0, 12.0]).assign(participant_id="sub-01", session_id="ses-1"),
            _discs([10.3, 14.0, 12.1]).assign(participant_id="sub-01", session_id="ses-2"),
        ],
        ignore_index=True,
    )
    gated = gate_sessions(table, "discs", QcLimits())
    failed = gated[gated["status"] == QC_FAILED]
    assert set(failed["level"]) == {"L4-L5"} and len(failed) == 2
    assert "disagree" in failed["note"].iloc[0]


def test_a_change_the_registration_contradicts_fails_the_disc_in_both_sessions():
    """The registration's change 1.2 mm from the own heights' (over five SDs of the two): both
    sessions' L5-S1 go qc_failed, numbers blanked. Where one session's row already failed
    (that tells which was wrong), the other keeps its value and both get the note."""
    table = pd.concat(
        [
            _discs([10.0, 11.0, 12.0]).assign(participant_id="sub-01", session_id="ses-1"),
            _discs([10.0, 11.0, 10.8]).assign(participant_id="sub-01", session_id="ses-2"),
            _discs([10.0, 11.0, 12.0]).assign(participant_id="sub-02", session_id="ses-1"),
        ],
        ignore_index=True,
    )
    table.loc[(table["session_id"] == "ses-2") & (table["level"] == "L4-L5"), "status"] = "failed"
    note = registration_check(registration_change_mm=0.0, own_change_mm=-1.2)
    assert note and registration_check(0.0, -0.9) == ""
    gated = gate_registration(table, [("sub-01", "L5-S1", note), ("sub-01", "L4-L5", note)])
    l5s1 = gated[(gated["participant_id"] == "sub-01") & (gated["level"] == "L5-S1")]
    assert (l5s1["status"] == QC_FAILED).all() and l5s1["height_mm"].isna().all()
    assert l5s1["width_mm"].isna().all() and l5s1["note"].str.contains("registration").all()
    l4l5 = gated[(gated["participant_id"] == "sub-01") & (gated["level"] == "L4-L5")]
    assert list(l4l5["status"]) == ["ok", "failed"] and l4l5["height_mm"].notna().iloc[0]
    assert l4l5["note"].str.contains("registration").all()
    untouched = gated[(gated["participant_id"] == "sub-02") | (gated["level"] == "L3-L4")]
    assert (untouched["status"] == "ok").all() and untouched["height_mm"].notna().all()


def _two_participants(table_for_session):
    return pd.concat(
        [table_for_session().assign(participant_id=p, session_id=s)
         for p, s in (("sub-01", "ses-1"), ("sub-01", "ses-2"), ("sub-02", "ses-1"))],
        ignore_index=True,
    )  # fmt: skip


def _ratings_file(tmp_path, rows):
    path = tmp_path / "qc_ratings.tsv"
    lines = ["participant_id\tsession_id\tlevel\trating\treason", *map("\t".join, rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_reviewer_s_fail_takes_the_value_out_with_the_reason_a_pass_changes_nothing(tmp_path):
    discs = _two_participants(lambda: _discs([10.0, 11.0, 12.0]))
    vertebrae = _two_participants(_vertebrae)
    path = _ratings_file(tmp_path, [("01", "1", "L4-L5", "fail", "endplate on the nucleus"),
                                    ("sub-01", "ses-2", "all", "fail", "motion"),
                                    ("sub-02", "ses-1", "L5-S1", "pass", "")])  # fmt: skip
    ratings = read_ratings(path, discs)
    gated_discs = gate_ratings(discs, "discs", ratings)
    gated_vertebrae = gate_endplates(gated_discs, gate_ratings(vertebrae, "vertebrae", ratings))
    failed = gated_discs[gated_discs["status"] == QC_FAILED]
    assert set(zip(failed["session_id"], failed["level"])) == {
        ("ses-1", "L4-L5"), ("ses-2", "L3-L4"), ("ses-2", "L4-L5"), ("ses-2", "L5-S1")
    }  # fmt: skip
    assert failed["height_mm"].isna().all()
    first = failed[failed["session_id"] == "ses-1"].iloc[0]
    assert first["note"] == "QC: rated fail by a reviewer: endplate on the nucleus"
    assert (gated_discs.loc[gated_discs["participant_id"] == "sub-02", "status"] == "ok").all()
    # the vertebrae: the whole of ses-2, and those whose distance runs from the failed disc
    failed_vertebrae = gated_vertebrae[gated_vertebrae["status"] == QC_FAILED]
    assert set(zip(failed_vertebrae["session_id"], failed_vertebrae["vertebra"])) == {
        ("ses-1", "L4"), ("ses-1", "L5"), *(("ses-2", v) for v in ("L3", "L4", "L5", "S1"))
    }  # fmt: skip


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("sub-03", "ses-1", "L4-L5", "fail", "x"), "line 2: sub-03 ses-1 is not a session"),
        (("sub-01", "ses-1", "L2-L3", "fail", "x"), "line 2: level 'L2-L3' is none of"),
        (("sub-01", "ses-1", "L4-L5", "bad", "x"), "line 2: rating 'bad' is neither pass"),
        (("sub-01", "ses-1", "L4-L5", "fail", ""), "line 2: a fail needs its reason"),
    ],
)
def test_a_bad_rating_names_the_file_and_its_line(tmp_path, row, message):
    path = _ratings_file(tmp_path, [row])
    with pytest.raises(ValueError, match=f"{path}, {message}"):
        read_ratings(path, _two_participants(lambda: _discs([10.0, 11.0, 12.0])))


def test_the_limits_documented_in_config_and_schema_are_the_gates_own():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["properties"]["qc"]
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["qc"]
    defaults = QcLimits()
    for key in ("range_mm", "ratio_range", "sessions_mm"):
        documented = {k: v["default"] for k, v in schema["properties"][key]["properties"].items()}
        own = {k: list(v) if isinstance(v, tuple) else v for k, v in getattr(defaults, key).items()}
        assert documented == own == config[key], key
    for key in ("max_height_ratio", "disc_spacing_mm", "max_lateral_difference_mm"):
        own = getattr(defaults, key)
        own = list(own) if isinstance(own, tuple) else own
        assert schema["properties"][key]["default"] == own == config[key], key


@pytest.mark.parametrize("settings", [None, {}, {"range_mm": {"height_mm": [3, 18]}}])
def test_limits_from_config_keep_defaults_for_what_is_not_given(settings):
    limits = QcLimits.from_config(settings)
    assert limits.range_mm["width_mm"] == (20.0, 65.0)
    expected = (3, 18) if settings and "range_mm" in settings else (2.0, 20.0)
    assert limits.range_mm["height_mm"] == expected
