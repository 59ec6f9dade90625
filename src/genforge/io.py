"""The one way genforge writes a file: into a fresh temporary file beside it, fsynced, renamed
over the target, then the folder fsynced. A crash leaves the old file or the new one, never a
torn one; and nothing is written through a link planted in a run folder (the temporary file is
created exclusively without following links, and the rename replaces a link at the target
rather than writing where it points).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fresh_temporary(path: Path, suffix: str = "") -> tuple[int, Path]:
    """An exclusively created temporary file beside ``path`` (never an existing file or link), ending in ``suffix``."""
    for attempt in range(100):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{attempt}{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: no free temporary name beside it")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to (for writers that take a file name, such as
    Pillow's ``save`` or safetensors' ``save_file``); on success it is fsynced and renamed over ``path``,
    on an error removed. The temporary name keeps ``path``'s suffix, so format sniffing still works."""
    path = Path(path)
    fd, tmp = _fresh_temporary(path, path.suffix)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically (see the module doc); returns ``path``."""
    path = Path(path)
    fd, tmp = _fresh_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: Any, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=indent))
