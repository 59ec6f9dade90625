"""The model families by name, for ``genforge.config``: the one seam between the config and the models.

``genforge.config`` builds a family's config section and runs its ``check_config`` through
:func:`family`, and never imports ``genforge.models`` itself. The families are imported here,
lazily (they import torch; reading or listing recipes must not), and they import only
``genforge.fields`` of the config layer, so no import circle runs through this seam.
"""

from __future__ import annotations

from typing import Any

from genforge.errors import GenforgeError


def family(name: str) -> Any:
    """The family class called ``name`` (a ``GenerativeModel`` subclass with ``Config`` and
    ``check_config``); a clear error naming the known ones."""
    from genforge.models import FAMILIES  # lazy: the first config built imports the families

    try:
        return FAMILIES[name]
    except KeyError:
        raise GenforgeError(f"unknown model family '{name}'; known: {', '.join(FAMILIES)}") from None
