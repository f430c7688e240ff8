"""Synthetic radiologists' reads and visit weights for a synthetic cohort.

Two readers grade the discs they can see (status ok in the truth): reader R1 every scan,
reader R2 a share of the participants only (as in practice, one reader double-reads part of
the cohort). Each misgrades by one step with a reader-specific probability and reports two
findings (facet joint effusion, bone-marrow oedema) with misses and false alarms. An
adjudicator settles half of the disagreements. Their own random stream (from the cohort
seed), so the images of a seed do not change with these tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

READERS = {"R1": 0.12, "R2": 0.22}  # reader -> probability of a one-grade misgrade
DOUBLE_READ_SHARE = 0.75  # participants R2 reads
FINDINGS = {"facet_effusion": 0.08, "bone_marrow_oedema": 0.12}  # prevalence per disc
FINDING_MISS, FINDING_FALSE_ALARM = 0.15, 0.03
ADJUDICATED_SHARE = 0.5
STREAM = 4  # the reads' random stream: default_rng([seed, STREAM])


def _misgraded(rng, grade: int, p_error: float) -> int:
    if rng.uniform() >= p_error:
        return grade
    step = rng.choice([-1, 1]) if 1 < grade < 5 else (1 if grade == 1 else -1)
    return int(grade + step)


def _reported(rng, present: bool) -> str:
    seen = rng.uniform() >= FINDING_MISS if present else rng.uniform() < FINDING_FALSE_ALARM
    return "yes" if seen else "no"


def reads_tables(truth_discs: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reads, adjudication) for the discs of a truth table (participant_id, session_id,
    level, pfirrmann, status)."""
    rng = np.random.default_rng([seed, STREAM])
    participants = sorted(truth_discs["participant_id"].unique())
    second = set(rng.permutation(participants)[: round(DOUBLE_READ_SHARE * len(participants))])
    visible = truth_discs[truth_discs["status"] == "ok"]
    reads, adjudication = [], []
    for disc in visible.itertuples():
        present = {name: rng.uniform() < p for name, p in FINDINGS.items()}
        item = {
            "participant_id": disc.participant_id,
            "session_id": disc.session_id,
            "level": disc.level,
        }
        grades = {}
        for reader, p_error in READERS.items():
            if reader == "R2" and disc.participant_id not in second:
                continue
            grades[reader] = _misgraded(rng, int(disc.pfirrmann), p_error)
            findings = {name: _reported(rng, found) for name, found in present.items()}
            reads.append({"reader": reader, **item, "pfirrmann": grades[reader], **findings})
        if len(set(grades.values())) > 1 and rng.uniform() < ADJUDICATED_SHARE:
            adjudication.append({**item, "pfirrmann": int(disc.pfirrmann)})
    return pd.DataFrame(reads), pd.DataFrame(
        adjudication, columns=["participant_id", "session_id", "level", "pfirrmann"]
    )


def visit_weights(people: pd.DataFrame, sessions: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Weight (kg) at each visit (``sessions``: participant_id, session_id): the participants
    table's at ses-1; at ses-2 a training loss for finishers (mean 1.5 kg) and none on average
    for the others."""
    rng = np.random.default_rng([seed, STREAM + 1])
    weight = people.set_index("participant_id")["weight_kg"]
    group = people.set_index("participant_id")["group"]
    rows = []
    for visit in sessions[["participant_id", "session_id"]].drop_duplicates().itertuples():
        kg = float(weight[visit.participant_id])
        if visit.session_id != "ses-1":
            loss = 1.5 if group[visit.participant_id] == "finisher" else 0.0
            kg -= rng.normal(loss, 1.2)
        rows.append(
            {
                "participant_id": visit.participant_id,
                "session_id": visit.session_id,
                "weight_kg": round(kg, 1),
            }
        )
    return pd.DataFrame(rows)


def write(out: Path, people: pd.DataFrame, truth_discs: pd.DataFrame, visits: pd.DataFrame,
          seed: int) -> None:  # fmt: skip
    """reads.tsv, adjudication.tsv, and sessions.tsv: each visit's weight and date (``visits``:
    participant_id, session_id, visit_date), as a study's records would give them."""
    reads, adjudication = reads_tables(truth_discs, seed)
    reads.to_csv(out / "reads.tsv", sep="\t", index=False)
    adjudication.to_csv(out / "adjudication.tsv", sep="\t", index=False)
    weights = visit_weights(people, visits, seed)
    sessions = weights.merge(visits, on=["participant_id", "session_id"])
    sessions.to_csv(out / "sessions.tsv", sep="\t", index=False)
