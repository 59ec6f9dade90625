"""Where datasets live: ``--data-root``, else ``$GENFORGE_DATA``, else the user cache.

System installs are searched too (Debian's ``dataset-fashion-mnist`` package puts the
canonical files in ``/usr/share/datasets/fashion-mnist/``), so ``find_files`` looks in
every candidate folder, while downloads always go to the primary root.
"""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_ROOTS = (Path("/usr/share/datasets"),)


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The primary data root, where ``genforge data fetch`` writes.

    Order: ``explicit`` (the ``--data-root`` flag), ``$GENFORGE_DATA``,
    ``$XDG_CACHE_HOME/genforge``, ``~/.cache/genforge``.
    """
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("GENFORGE_DATA")
    if env:
        return Path(env).expanduser()
    return user_cache()


def user_cache() -> Path:
    """``$XDG_CACHE_HOME/genforge``, else ``~/.cache/genforge``."""
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "genforge"


def cache_dir(kind: str) -> Path:
    """Where genforge keeps derived files of one ``kind`` (``eval``, ``folders``): ``$GENFORGE_CACHE``
    if set (``eval`` files directly in it, other kinds in a sub-folder), else ``user_cache() / kind``.

    Not the data root itself: shared dataset folders are often read-only.
    """
    env = os.environ.get("GENFORGE_CACHE")
    if env:
        return Path(env).expanduser() / ("" if kind == "eval" else kind)
    return user_cache() / kind


def search_roots(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Every folder a dataset may be found in: the primary root first, then system installs."""
    roots = [data_root(explicit)]
    roots += [r for r in SYSTEM_ROOTS if r not in roots]
    return roots
