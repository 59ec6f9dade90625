"""Typed config fields and their allowed ranges: the bottom layer that every config section uses.

The families' config dataclasses (in ``genforge.models``) and the run's own sections (in
``genforge.config``) are built from :func:`opt`; both check their values with :func:`check_ranges`.
A module of its own, importing nothing of genforge but its errors, so that the families never
import ``genforge.config`` (which reads the families through ``genforge.registry``): no circle.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from genforge.errors import GenforgeError


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config field with its help line (and allowed values, for strings)."""
    meta = {"help": help}
    if choices:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


_COMPARISONS = {">=": float.__ge__, ">": float.__gt__, "<=": float.__le__, "<": float.__lt__}


def allows(rule: str, value: float) -> bool:
    """Whether ``value`` lies in ``rule``: an interval such as "[0, 1)" or a bound such as ">= 1"."""
    if rule[0] in "[(":
        low, high = (float(part) for part in rule[1:-1].split(","))
        above = value >= low if rule[0] == "[" else value > low
        return above and (value <= high if rule[-1] == "]" else value < high)
    for symbol, compare in _COMPARISONS.items():
        if rule.startswith(symbol):
            return compare(float(value), float(rule[len(symbol):]))
    raise ValueError(f"not a range rule: {rule!r}")  # pragma: no cover - the tables are written by hand


def check_ranges(section: Any, rules: dict[str, str], prefix: str = "") -> None:
    """Refuse the first field of ``section`` outside its rule (``rules``: field name -> rule), with one
    line naming the key, the value and what is allowed."""
    for name, rule in rules.items():
        value = getattr(section, name)
        if not allows(rule, value):
            allowed = f"in {rule}" if rule[0] in "[(" else rule
            raise GenforgeError(f"{prefix}{name}={value}: must be {allowed}")
