"""BIDS identifiers: a participant's or session's label with or without its prefix ('sub-01'
or '01', 'ses-1' or 1), the one place the prefix is added or taken off."""

from __future__ import annotations


def bare(value: str | int, prefix: str) -> str:
    """'sub-01' or '01' -> '01' (prefix 'sub')."""
    text = str(value).strip()
    return text.removeprefix(prefix + "-")


def prefixed(value: str | int, prefix: str) -> str:
    """'01' or 'sub-01' -> 'sub-01' (prefix 'sub')."""
    return f"{prefix}-{bare(value, prefix)}"
