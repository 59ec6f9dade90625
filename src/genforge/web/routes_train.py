"""Train from the browser: recipes and their config schema, validation, start / stop / resume.

Trainings are child processes started by ``genforge.api`` (the same ``genforge train``), so the studio
stays responsive and outlives a crashed run; at most ``max_trainings`` run at once (one per core).
"""

from __future__ import annotations

import threading
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from genforge import api
from genforge.errors import GenforgeError
from genforge.web.common import Body, run_dir, run_id_of, studio
from genforge.web.safety import Refused, check_run_name

router = APIRouter(prefix="/api")


class TrainRequest(Body):
    recipe: str
    overrides: dict[str, str] = Field(default_factory=dict)
    steps: int | None = Field(None, ge=1)
    minutes: float | None = Field(None, gt=0)
    name: str | None = None  # the run folder's name under the runs folder (default RECIPE-TIMESTAMP)


class RunRequest(Body):
    run: str
    steps: int | None = Field(None, ge=1)
    minutes: float | None = Field(None, gt=0)


def _overrides(values: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in values.items()]


def _error_key(message: str, keys) -> str | None:
    """The config key an error names (the longest one that appears), so the form shows it beside that field."""
    named = [key for key in keys if key in message]
    return max(named, key=len) if named else None


def _invalid(error: GenforgeError, keys) -> JSONResponse:
    return JSONResponse({"error": str(error), "key": _error_key(str(error), keys)}, status_code=400)


@router.get("/recipes")
def recipes():
    return {"recipes": [info.to_dict() for info in api.recipes()]}


@router.get("/recipes/{name}")
def recipe_schema(name: str):
    return api.recipe_schema(name).to_dict()


def _new_run_folder(request: Request, name: str | None, recipe: str):
    """Where a run named ``name`` (default RECIPE-TIMESTAMP) goes under the runs folder, or Refused."""
    s = studio(request)
    name = check_run_name(name or f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}")
    target = s.root / name
    if target.exists():
        raise Refused(409, f"a folder '{name}' exists already under the runs folder; pick another name")
    return target


@router.post("/check")
def check(request: Request, body: TrainRequest):
    """The same validation as ``genforge train --dry-run``, and the run name's as Start's: ok, or the
    error and the key it names."""
    if body.name:
        _new_run_folder(request, body.name, body.recipe)
    try:
        api.check_config(body.recipe, _overrides(body.overrides), steps=body.steps, minutes=body.minutes)
    except GenforgeError as error:
        return _invalid(error, body.overrides)
    return {"ok": True}


def _check_room(request: Request) -> None:
    s = studio(request)
    live = [run for run in api.list_runs(s.root) if run.status == "training"]
    if len(live) >= s.max_trainings:
        raise Refused(429, f"{len(live)} trainings are running already, the most this studio runs at once "
                           f"(one per CPU core: {s.max_trainings}); stop one first, or start the studio "
                           "with --max-trainings N")


# The checks that a run is free and the spawn of its child happen under one lock: two requests a moment
# apart both passed the checks and both spawned (the child that lost the run's lock failed, and
# process.json named it).
_SPAWNING = threading.Lock()


@router.post("/train")
def train(request: Request, body: TrainRequest):
    with _SPAWNING:
        return _train(request, body)


def _train(request: Request, body: TrainRequest):
    s = studio(request)
    _check_room(request)
    target = _new_run_folder(request, body.name, body.recipe)
    try:
        process = api.start_training(body.recipe, _overrides(body.overrides), run_dir=target, steps=body.steps,
                                     minutes=body.minutes, data_root=s.data_root)
    except GenforgeError as error:
        return _invalid(error, body.overrides)
    return {"run": run_id_of(s.root, process.run_dir), "pid": process.pid}


@router.post("/stop")
def stop(request: Request, body: RunRequest):
    """Asks the run's process to checkpoint at its next step and exit (False: no live process)."""
    return {"stopped": api.stop_training(run_dir(request, body.run))}


@router.post("/resume")
def resume(request: Request, body: RunRequest):
    with _SPAWNING:
        return _resume(request, body)


def _resume(request: Request, body: RunRequest):
    path = run_dir(request, body.run)
    if api.open_run(path).status() == "training":
        raise Refused(409, f"run '{body.run}' is training already; stop it first")
    _check_room(request)
    process = api.resume_training(path, steps=body.steps, minutes=body.minutes, data_root=studio(request).data_root)
    return {"run": body.run, "pid": process.pid}
