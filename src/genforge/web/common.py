"""Small helpers the route modules share: the studio's state, a run from its id, pictures as data URLs."""

from __future__ import annotations

import base64
from pathlib import Path

from fastapi import Request

from genforge.web.safety import resolve_run


def studio(request: Request):
    return request.app.state.studio


def run_dir(request: Request, run_id: str) -> Path:
    """The run folder ``run_id`` names under the studio's runs folder (refusals in safety.resolve_run)."""
    return resolve_run(studio(request).root, run_id)


def run_id_of(root: Path, path: Path) -> str:
    return Path(path).resolve().relative_to(root.resolve()).as_posix()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def relative_name(run_path: Path, path: Path) -> str:
    """A file of the run as 'samples/step-0000010.png' (what /api/run/file takes)."""
    return Path(path).resolve().relative_to(run_path.resolve()).as_posix()
