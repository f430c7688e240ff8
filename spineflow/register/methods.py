"""Registration methods by name (config ``registration.method``).

A method maps ses-2 onto ses-1 for one participant (``RegistrationJob``): it writes the
whole-field transform, one transform per vertebra and ses-2 resampled onto ses-1, and returns
the facts for the sidecar (``Registration``, ``PerVertebra``). The config's ``registration``
section (its ``tuning`` included) is the method's own. A new method is a function here (or in
its own module) listed in ``METHODS``; what reads the transforms afterwards does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spineflow.core.anatomy import VERTEBRA_LABELS
from spineflow.register.per_vertebra import register_levels
from spineflow.register.settings import RegisterSettings
from spineflow.register.whole_field import register_rigid


@dataclass(frozen=True)
class RegistrationJob:
    fixed: Path  # ses-1's image (the reference space)
    moving: Path  # ses-2's
    fixed_dseg: Path  # their label maps
    moving_dseg: Path
    out_tfm: Path  # the whole-field transform
    level_tfms: dict[str, Path]  # one transform per vertebra, by name
    out_image: Path  # ses-2 resampled onto ses-1
    threads: int


def rigid_per_vertebra(job: RegistrationJob, section: dict | None) -> dict:
    """The whole field rigidly, then each vertebra (docs/methods/registration.md)."""
    settings = RegisterSettings.from_config(section)
    whole = register_rigid(job.fixed, job.moving, job.out_tfm, job.out_image,
                           fixed_dseg=job.fixed_dseg, moving_dseg=job.moving_dseg,
                           threads=job.threads, settings=settings)  # fmt: skip
    levels = register_levels(job.fixed, job.moving, job.fixed_dseg, job.out_tfm, job.level_tfms,
                             VERTEBRA_LABELS, moving_dseg=job.moving_dseg, threads=job.threads,
                             settings=settings)  # fmt: skip
    return {"Registration": whole, "PerVertebra": levels}


METHODS: dict[str, Callable[[RegistrationJob, dict | None], dict]] = {
    "rigid_per_vertebra": rigid_per_vertebra,
}
DEFAULT_METHOD = "rigid_per_vertebra"


def method(section: dict | None) -> Callable[[RegistrationJob, dict | None], dict]:
    """The method the config's ``registration`` section names (the default when it names none)."""
    name = (section or {}).get("method", DEFAULT_METHOD)
    if name not in METHODS:
        raise ValueError(f"registration.method {name!r}: known methods are {sorted(METHODS)}")
    return METHODS[name]
