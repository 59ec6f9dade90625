"""Small helpers the route modules share: the studio's state, a run from its id, pictures as data URLs."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from genforge.web.safety import resolve_run


class Body(BaseModel):
    """A request body the studio takes: numbers must be finite (JSON's NaN and Infinity, which Python's
    parser accepts, are refused with a 422 naming the field instead of reaching a model as a blank picture)."""

    model_config = ConfigDict(allow_inf_nan=False)


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


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(payload: Any) -> str:
    """JSON text of ``payload`` with NaN and infinities as null: a diverged run logs them, and JSON (the
    browser's JSON.parse) cannot carry them."""
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_finite(payload), allow_nan=False, separators=(",", ":"))


class StudioJSON(JSONResponse):
    """The studio's JSON answers: :func:`dumps`. Routes that answer big payloads (a lab frame, a run's
    metrics) return it themselves, skipping FastAPI's element-by-element encoder (13 ms of a 40 ms frame)."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


_RULES = {"greater_than_equal": "must be at least {ge}", "greater_than": "must be more than {gt}",
          "less_than_equal": "must be at most {le}", "less_than": "must be less than {lt}",
          "int_parsing": "must be a whole number", "int_from_float": "must be a whole number",
          "float_parsing": "must be a number", "bool_parsing": "must be true or false", "missing": "is required",
          "too_short": "needs at least {min_length}", "too_long": "takes at most {max_length}",
          "json_invalid": "is not valid JSON"}


def validation_line(errors: list[dict]) -> str:
    """FastAPI's refusal of a request's fields (pydantic's error list) as one line a person reads:
    'steps: must be at least 1 (got -5)'."""
    parts = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
        name = "the request body" if error.get("type") == "json_invalid" else ".".join(loc) or "the request"
        rule = _RULES.get(error.get("type", ""))
        ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in error.get("ctx", {}).items()}
        try:
            said = rule.format(**ctx) if rule else None
        except (KeyError, IndexError):
            said = None
        said = said or str(error.get("msg", "is refused")).removeprefix("Value error, ")
        if said[:1].isupper() and not said[:2].isupper():
            said = said[0].lower() + said[1:]
        given = error.get("input")
        shown = f" (got {given!r})" if isinstance(given, (int, float, str)) and len(repr(given)) <= 40 \
            and error.get("type") != "missing" else ""
        if isinstance(given, list) and error.get("type") in ("too_short", "too_long"):
            shown = f" (got {len(given)})"
        parts.append(f"{name}: {said}{shown}")
    return " ".join("; ".join(parts).split()) or "the request was refused"  # one line, whatever the fields held
