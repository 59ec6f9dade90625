"""Runs: the list (and its event stream), one run's summary, metrics (and their stream), pictures, compare."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from genforge import api
from genforge.runs import checkpoint_every
from genforge.web.common import StudioJSON, relative_name, run_dir, studio
from genforge.web.safety import run_file
from genforge.web.sse import event_stream

router = APIRouter(prefix="/api")


def runs_snapshot(root: Path) -> list[dict]:
    """Every run's summary, JSON-safe, with its newest sample as a name /api/run/file takes."""
    rows = []
    for summary in api.list_runs(root):
        row = summary.to_dict()
        sample = summary.newest_sample
        row["newest_sample"] = relative_name(summary.path, sample) if sample else None
        row.pop("path", None)
        rows.append(row)
    return rows


class RunsSnapshot:
    """The run list read at most once every ``max_age`` seconds however many pages ask at once: sixteen
    clients polling must not read every run folder sixteen times while a training shares the CPU."""

    def __init__(self, root: Path, max_age: float = 0.5):
        self.root, self.max_age = root, max_age
        self._rows: list[dict] = []
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def get(self) -> list[dict]:
        with self._lock:  # one reader at a time; the others wait for its answer
            if time.monotonic() - self._read_at > self.max_age:
                self._rows = runs_snapshot(self.root)
                self._read_at = time.monotonic()
            return self._rows


@router.get("/runs")
def runs_list(request: Request):
    return StudioJSON({"runs": request.app.state.runs.get(), "max_trainings": studio(request).max_trainings})


@router.get("/events/runs")
def runs_events(request: Request, limit: int | None = Query(None, ge=1), interval: float = Query(1.0, ge=0.05, le=60)):
    snapshot, last = request.app.state.runs, [None]

    def poll():
        rows = snapshot.get()
        if rows == last[0]:
            return None
        last[0] = rows
        return {"runs": rows}

    return event_stream(request, poll, interval, limit)


def run_details(root: Path, path: Path) -> dict:
    run = api.open_run(path)
    found = run.summary(root.resolve())
    summary = found.to_dict()
    summary.pop("path", None)
    sample = found.newest_sample
    summary["newest_sample"] = relative_name(path, sample) if sample else None
    return {
        "summary": summary,
        "config": run.raw_config,  # a run still starting: what process.json says (recipe, family, budget)
        "config_written": (path / "config.json").is_file(),
        "checkpoint_step": run.checkpoint_step(),  # None: nothing to resume, explore or export yet
        "checkpoint_every": checkpoint_every(run.raw_config),
        "timeline": [{"step": step, "name": relative_name(path, p)} for step, p in run.timeline()],
        "plots": [relative_name(path, p) for p in run.plots()],
        "eval": run.eval_result(),
        "log_tail": run.log_tail(20),
    }


@router.get("/run")
def run_page(request: Request, run: str):
    return run_details(studio(request).root, run_dir(request, run))


@router.get("/run/metrics")
def run_metrics(request: Request, run: str, since: int | None = None):
    return StudioJSON({"rows": api.open_run(run_dir(request, run)).metrics(since=since)})


@router.get("/events/metrics")
def metrics_events(request: Request, run: str, after: int = Query(0, ge=0), limit: int | None = Query(None, ge=1),
                   interval: float = Query(1.0, ge=0.05, le=60)):
    """The metrics rows past the first ``after`` (the rows the page has) as they are written, with the
    run's status and step (sent when either changes).

    Rows are counted, not filtered by step: a training-time eval row shares its step with the loss row
    before it, and a resume rewrites the log from its checkpoint's step. When the log no longer begins
    with the rows sent (a resume cut it), the event says ``reset`` and carries every row."""
    opened = api.open_run(run_dir(request, run))
    state: dict = {"count": after, "last": None, "status": None}

    def poll():
        rows = opened.metrics()
        status = opened.status()
        count = state["count"]
        if state["last"] is None and 0 < count <= len(rows):
            state["last"] = rows[count - 1]  # the page's newest row, as it was when the stream began
        reset = count > len(rows) or (count > 0 and rows[count - 1] != state["last"])
        new = rows if reset else rows[count:]
        if not new and not reset and status == state["status"]:
            return None
        state.update(count=len(rows), last=rows[-1] if rows else None, status=status)
        return {"rows": new, "reset": reset, "status": status, "step": opened.step(rows)}

    return event_stream(request, poll, interval, limit)


@router.get("/run/file")
def run_picture(request: Request, run: str, name: str):
    return FileResponse(run_file(run_dir(request, run), name), headers={"Cache-Control": "max-age=5"})


@router.get("/compare")
def compare(request: Request, runs: list[str] = Query(..., min_length=2, max_length=6)):
    """Several runs side by side: each one's metrics, timeline and config, and the config keys that differ."""
    paths = [run_dir(request, run_id) for run_id in runs]
    details = [run_details(studio(request).root, path) for path in paths]
    flat = [_flatten(d["config"]) for d in details]
    keys = sorted(set().union(*flat))
    diff = [{"key": k, "values": [f.get(k) for f in flat]} for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1]
    metrics = [api.open_run(path).metrics() for path in paths]
    return {"runs": [{"id": run_id, **d, "metrics": m} for run_id, d, m in zip(runs, details, metrics)], "diff": diff}


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
