"""The model families by name, filled by ``genforge.models`` and read by ``genforge.config``.

A module of its own so that the config never imports the models (the family files import
``genforge.config`` for their typed fields): ``config`` builds a family's config section and
runs its ``check_config`` through this table, and importing ``genforge.models`` fills it.
"""

from __future__ import annotations

from typing import Any

from genforge.errors import GenforgeError

FAMILIES: dict[str, Any] = {}  # family name -> its GenerativeModel subclass (with .Config and .check_config)


def register_family(cls: Any) -> Any:
    """Add a family class (its ``family`` name, ``Config`` dataclass and ``check_config``); returns it."""
    FAMILIES[cls.family] = cls
    return cls


def family(name: str) -> Any:
    """The registered family class called ``name``; a clear error naming the known ones."""
    if not FAMILIES:  # a programming error, not bad input: nothing imported the families yet
        raise RuntimeError("no model family is registered: import genforge.models (or genforge.api) first")
    try:
        return FAMILIES[name]
    except KeyError:
        raise GenforgeError(f"unknown model family '{name}'; known: {', '.join(FAMILIES)}") from None
