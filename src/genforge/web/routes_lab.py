"""The toy lab: GAN Lab's view on genforge's toys, over ``genforge.lab.ToyLab`` kept in memory.

A lab lives in the server process (a few at most, the least recently used dropped); each step and
state runs in the toy-lab worker, one lab at a time under its lock. The page plays by asking for
``n`` steps and the new state in one request, as fast as answers come.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import APIRouter, Query, Request
from pydantic import Field

from genforge.config import TRAIN_SEED_MAX
from genforge.web.common import Body, StudioJSON, studio
from genforge.web.safety import Refused, read_capped

router = APIRouter(prefix="/api/lab")
MAX_LABS = 6


@dataclass
class Session:
    lab: object  # genforge.lab.ToyLab
    lock: threading.Lock = field(default_factory=threading.Lock)
    used: float = field(default_factory=time.time)


class LabSessions:
    """Labs by id; past MAX_LABS the least recently used one is dropped."""

    def __init__(self):
        self._labs: OrderedDict[str, Session] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, lab) -> str:
        with self._lock:
            lab_id = str(next(self._ids))
            self._labs[lab_id] = Session(lab)
            while len(self._labs) > MAX_LABS:
                self._labs.popitem(last=False)
        return lab_id

    def get(self, lab_id: str) -> Session:
        with self._lock:
            session = self._labs.get(lab_id)
            if session is None:
                raise Refused(404, f"no toy lab {lab_id!r} (labs unused for a while are dropped): start a new one")
            self._labs.move_to_end(lab_id)
            session.used = time.time()
            return session


class NewLab(Body):
    recipe: str = "ring-8"
    overrides: dict[str, str] = Field(default_factory=dict)
    points: list[list[float]] | None = Field(None, min_length=8, max_length=20_000)  # drawn points
    seed: int = Field(0, ge=0, le=TRAIN_SEED_MAX)  # a training seed, as train.seed (Explore's seeds are noise seeds)


class StepRequest(Body):
    which: str = Field("both", pattern="^(both|d|g)$")
    n: int = Field(1, ge=1, le=200)
    grid: int = Field(40, ge=8, le=80)
    arrows: int = Field(100, ge=0, le=400)


class SetRequest(Body):
    loss: str | None = None
    lr_d: float | None = Field(None, gt=0)
    lr_g: float | None = Field(None, gt=0)
    d_steps: int | None = Field(None, ge=1, le=20)


def _build(body: NewLab, csv: bytes | None = None):
    import torch

    from genforge import lab

    if body.recipe not in lab.LAB_RECIPES:
        raise Refused(400, f"the toy lab takes {', '.join(lab.LAB_RECIPES)}, not {body.recipe!r}")
    points = None
    if csv is not None:
        points = lab.parse_points_csv(csv, source="upload")
    elif body.points is not None:
        if any(len(p) != 2 for p in body.points):
            raise Refused(400, "drawn points need two numbers each (x, y)")
        points = torch.tensor(body.points, dtype=torch.float32)
    overrides = [f"{k}={v}" for k, v in body.overrides.items()]
    toy = lab.ToyLab(body.recipe, overrides=overrides, points=points, seed=body.seed)
    return toy, toy.state()


async def _create(request: Request, body: NewLab, csv: bytes | None = None) -> dict:
    toy, state = await studio(request).lab_workers.run(_build, body, csv)
    return StudioJSON({"id": request.app.state.labs.add(toy), "state": state})


@router.get("/recipes")
def lab_recipes():
    from genforge import lab

    return {"recipes": list(lab.LAB_RECIPES)}


@router.post("")
async def new_lab(request: Request, body: NewLab):
    return await _create(request, body)


@router.post("/csv")
async def new_lab_from_csv(request: Request, recipe: str = "ring-8", seed: int = Query(0, ge=0, le=TRAIN_SEED_MAX)):
    """A lab on an uploaded CSV of 2-D points (one 'x,y' a line)."""
    return await _create(request, NewLab(recipe=recipe, seed=seed), await read_capped(request))


@router.post("/{lab_id}/step")
async def step(request: Request, lab_id: str, body: StepRequest):
    session = request.app.state.labs.get(lab_id)

    def work():
        with session.lock:
            losses = session.lab.step(body.which, body.n)
            return {"losses": losses, "state": session.lab.state(grid=body.grid, arrows=body.arrows)}

    return StudioJSON(await studio(request).lab_workers.run(work))


@router.post("/{lab_id}/set")
async def change(request: Request, lab_id: str, body: SetRequest):
    session = request.app.state.labs.get(lab_id)

    def work():
        with session.lock:
            session.lab.set(loss=body.loss, lr_d=body.lr_d, lr_g=body.lr_g, d_steps=body.d_steps)
            return {"state": session.lab.state()}

    return StudioJSON(await studio(request).lab_workers.run(work))


@router.get("/{lab_id}/state")
async def state(request: Request, lab_id: str, grid: int = 40, arrows: int = 100):
    session = request.app.state.labs.get(lab_id)

    def work():
        with session.lock:
            return session.lab.state(grid=max(8, min(grid, 80)), arrows=max(0, min(arrows, 400)))

    return StudioJSON(await studio(request).lab_workers.run(work))
