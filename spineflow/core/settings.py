"""Settings from the configuration: a stage's frozen dataclass, its defaults overridden by the
keys its config section gives (a tuple where the default is one), an unknown key an error."""

from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

T = TypeVar("T")


def from_config(cls: type[T], section: dict | None, where: str) -> T:
    """``cls`` with the defaults that ``section`` (the config's ``where``) overrides."""
    section = dict(section or {})
    defaults = {f.name: f.default for f in fields(cls)}
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(defaults)}")
    values = {k: tuple(v) if isinstance(defaults[k], tuple) else v for k, v in section.items()}
    return cls(**values)
