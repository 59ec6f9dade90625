"""Evaluate a run from its page: a job in its own thread whose progress the page polls."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import Field

from genforge import api
from genforge.web.common import Body, run_dir, studio

router = APIRouter(prefix="/api/eval")


class EvalRequest(Body):
    run: str
    n: int = Field(2000, ge=10, le=50_000)
    seed: int = Field(0, ge=api.SEED_RANGE[0], le=api.SEED_RANGE[1])


@router.post("")
def start(request: Request, body: EvalRequest):
    s = studio(request)
    job = s.evals.start(body.run, run_dir(request, body.run), n=body.n, seed=body.seed, data_root=s.data_root)
    return job.to_dict()


@router.get("/job")
def job(request: Request, id: str):
    return studio(request).evals.get(id).to_dict()
