"""The anatomy spineflow measures: levels, vertebrae, label values and measures.

Label values are spineflow's own (SPINEPS's convention); other segmenters' maps translate.

spineflow writes and reads SPINEPS values: vertebra L1=20 ... L5=24, S1=26, disc below vertebra X
= 100 + X. Maps from another tool are translated into these with a label scheme: a ready one
(``spineps``, ``totalspineseg``) or the user's own mapping of values to structure names.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# the measured levels (discs) and the vertebrae around them, cranial to caudal
LEVELS = ("L3-L4", "L4-L5", "L5-S1")
VERTEBRAE = ("L3", "L4", "L5", "S1")

VERTEBRA_LABELS = {
    "T10": 17,
    "T11": 18,
    "T12": 19,
    "L1": 20,
    "L2": 21,
    "L3": 22,
    "L4": 23,
    "L5": 24,
    "S1": 26,
    "S2": 27,
}


def vertebrae_between(first: str, last: str) -> tuple[str, ...]:
    """The vertebrae from ``first`` to ``last``, cranial to caudal (VERTEBRA_LABELS' order)."""
    names = list(VERTEBRA_LABELS)
    return tuple(names[names.index(first) : names.index(last) + 1])


NAMES_CAUDAL_TO_CRANIAL = vertebrae_between("T10", "S1")[::-1]
SACRUM = "sacrum"  # a whole-sacrum label: S1 with the fused segments below it


def disc_label(upper: str) -> int:
    return 100 + VERTEBRA_LABELS[upper]


def disc_names() -> list[str]:
    names = list(VERTEBRA_LABELS)
    return [f"{upper}-{lower}" for upper, lower in zip(names[:-1], names[1:])]


def lookup_table() -> list[tuple[int, str]]:
    rows = [(label, name) for name, label in VERTEBRA_LABELS.items()]
    rows += [(disc_label(level.split("-")[0]), level) for level in disc_names()]
    return sorted(rows)


def _spineps() -> dict[int, str]:
    # SPINEPS: label 26 holds the whole sacrum; there is no separate S2 or S1-S2 remnant
    table = {value: name for value, name in lookup_table() if name not in ("S1", "S2", "S1-S2")}
    table[VERTEBRA_LABELS["S1"]] = SACRUM
    return table


# TotalSpineSeg: T10..T12 = 30..32, L1..L5 = 41..45, sacrum 50, discs T10-T11 = 81,
# T11-T12 = 82, T12-L1 = 91, L1-L2 = 92 ... L4-L5 = 95, L5-S = 100
_TOTALSPINESEG = {
    30: "T10", 31: "T11", 32: "T12", 41: "L1", 42: "L2", 43: "L3", 44: "L4", 45: "L5",
    50: SACRUM, 81: "T10-T11", 82: "T11-T12", 91: "T12-L1", 92: "L1-L2", 93: "L2-L3",
    94: "L3-L4", 95: "L4-L5", 100: "L5-S1",
}  # fmt: skip

SCHEMES: dict[str, dict[int, str]] = {
    "spineflow": {value: name for value, name in lookup_table()},
    "spineps": _spineps(),
    "totalspineseg": _TOTALSPINESEG,
}


def scheme(name_or_mapping: str | Mapping) -> dict[int, str]:
    """A ready scheme by name, or a user mapping {value: structure name} checked for sense."""
    if isinstance(name_or_mapping, str):
        if name_or_mapping not in SCHEMES:
            raise ValueError(
                f"unknown label scheme {name_or_mapping!r}; ready ones: {sorted(SCHEMES)}"
            )
        return SCHEMES[name_or_mapping]
    known = set(VERTEBRA_LABELS) | set(disc_names()) | {SACRUM}
    mapping = {int(value): str(name) for value, name in name_or_mapping.items()}
    unknown = sorted(set(mapping.values()) - known)
    if unknown:
        raise ValueError(
            f"label mapping names unknown structures {unknown}; known: {sorted(known)}"
        )
    return mapping


def to_spineflow(labels: np.ndarray, mapping: Mapping[int, str]) -> tuple[np.ndarray, bool]:
    """Translate a label map into spineflow values; values not in the mapping become 0.

    Returns the map and whether the sacrum came as one label (then S1 is the whole sacral block
    and its segments below are not told apart: the caller finds the S1-S2 remnant itself).
    """
    out = np.zeros(labels.shape, np.int16)
    whole_sacrum = False
    for value, name in mapping.items():
        where = labels == value
        if not where.any():
            continue
        if name == SACRUM:
            whole_sacrum = True
            name = "S1"
        out[where] = disc_label(name.split("-")[0]) if "-" in name else VERTEBRA_LABELS[name]
    return out, whole_sacrum
