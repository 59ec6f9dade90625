"""Model work off the event loop, with limits: the studio keeps answering while it samples or evaluates.

Sampling, decoding and the toy lab run in small thread pools; each pool takes at most ``max_waiting``
jobs at once and refuses more (503, try again) instead of queueing without end. Evaluation is a
job with a progress record that the page polls.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from genforge.errors import GenforgeError
from genforge.threads import recheck_threads
from genforge.web.safety import Refused


def on_free_cores(fn: Callable[..., Any], /, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` on the cores other work leaves free: the server's thread count checked
    again first (a clock read unless a check is due), as a training checks at every step."""
    recheck_threads()
    return fn(*args, **kwargs)


class Workers:
    """``threads`` threads for blocking work; more than ``max_waiting`` jobs in hand is refused (503)."""

    def __init__(self, name: str, threads: int = 1, max_waiting: int = 8):
        self.name = name
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"studio-{name}")
        self._lock = threading.Lock()
        self._in_hand = 0

    async def run(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        with self._lock:
            if self._in_hand >= self.max_waiting:
                raise Refused(503, f"the studio's {self.name} workers are busy ({self._in_hand} jobs in hand); "
                                   "try again in a moment")
            self._in_hand += 1
        try:
            future = self._executor.submit(on_free_cores, fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        with self._lock:
            self._in_hand -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ModelCache:
    """The last few loaded models, keyed by run folder and its newest checkpoint (a new one reloads)."""

    def __init__(self, load: Callable[[Path], Any], size: int = 4):
        self._load = load
        self._size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_dir: Path) -> Any:
        checkpoints = run_dir / "checkpoints"
        key = (str(run_dir), checkpoints.stat().st_mtime_ns if checkpoints.exists() else 0)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        loaded = self._load(run_dir)  # outside the lock: loading takes a while
        with self._lock:
            self._items[key] = loaded
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return loaded


@dataclass
class EvalJob:
    """One evaluation's progress as the page sees it."""

    id: str
    run_id: str
    state: str = "queued"  # queued | running | done | failed
    stage: str = ""
    done: int = 0
    total: int = 0
    result: dict | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("id", "run_id", "state", "stage", "done", "total", "result", "error")}


class EvalJobs:
    """Evaluations one at a time in their own thread; one per run and ``max_waiting`` in all."""

    def __init__(self, evaluate: Callable[..., dict], max_waiting: int = 2):
        self._evaluate = evaluate
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="studio-eval")
        self._jobs: dict[str, EvalJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.max_waiting = max_waiting

    def start(self, run_id: str, run_dir: Path, **options) -> EvalJob:
        with self._lock:
            active = [j for j in self._jobs.values() if j.state in ("queued", "running")]
            if any(j.run_id == run_id for j in active):
                raise Refused(409, f"run '{run_id}' is already being evaluated; watch its progress bar")
            if len(active) >= self.max_waiting:
                raise Refused(503, f"{len(active)} evaluations are queued already; try again when one ends")
            job = EvalJob(id=str(next(self._ids)), run_id=run_id)
            self._jobs[job.id] = job
        self._executor.submit(self._work, job, run_dir, options)
        return job

    def _work(self, job: EvalJob, run_dir: Path, options: dict) -> None:
        def progress(stage: str, done: int, total: int) -> None:
            job.stage, job.done, job.total = stage, int(done), int(total)

        job.state = "running"
        try:
            job.result = on_free_cores(self._evaluate, run_dir, progress=progress, **options)
            job.state = "done"
        except GenforgeError as e:
            job.error, job.state = str(e), "failed"
        except Exception as e:  # a crash in one evaluation must not take the studio with it
            job.error, job.state = f"evaluation failed: {type(e).__name__}: {e}", "failed"

    def get(self, job_id: str) -> EvalJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise Refused(404, f"no evaluation job {job_id!r}")
        return job

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
