"""The one way genforge writes a file: whole or not at all, even across a crash or power cut.

Every file genforge writes (checkpoint files, ``config.json``, ``metrics.jsonl`` rewrites, sample
grids, plots, GIFs, latents, ``eval.json``) goes through :func:`atomic_output`: the content goes
to a fresh temporary file in the target's own folder (same file system, so the rename is atomic),
is fsynced, renamed over the target with ``os.replace``, and the folder is fsynced so that the
rename itself survives a power cut. A reader sees the old file or the new one, never half of one.

The temporary file is created exclusively (``O_EXCL | O_NOFOLLOW``): a link planted under its
name is refused instead of followed, and the rename replaces a link at the target rather than
writing through it.
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def fsync_dir(folder: str | Path) -> None:
    """Make a folder's entries (a rename, a new file) durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name (Pillow, matplotlib,
    safetensors, numpy); once the block ends without an error the file is fsynced and renamed over
    ``path``, and the folder fsynced; on an error it is removed and ``path`` is left as it was.

    The temporary name keeps ``path``'s suffix (writers pick the format by it, and numpy appends
    ``.npy`` to names without it) and starts with a dot (globs such as ``step-*.png`` skip it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644))
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (see :func:`atomic_output`); returns ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def write_json_atomic(path: str | Path, payload: Any, indent: int | None = 2) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically; returns ``path``."""
    return write_atomic(path, json.dumps(payload, indent=indent))
