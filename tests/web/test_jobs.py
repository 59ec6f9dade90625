"""genforge.web.jobs: the studio's sampling and evaluation jobs run on the cores other work leaves
free, the thread count checked again before each job (the server starts once and runs for hours)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import torch

from genforge import threads
from genforge.threads import CpuSample
from genforge.web import jobs


def _recorded(monkeypatch) -> list[str]:
    order: list[str] = []
    monkeypatch.setattr(jobs, "recheck_threads", lambda: order.append("recheck"))
    return order


def test_a_sampling_job_checks_the_threads_before_it_runs(monkeypatch):
    order = _recorded(monkeypatch)
    workers = jobs.Workers("sampling")
    try:
        assert asyncio.run(workers.run(lambda x, y=0: order.append("job") or x + y, 2, y=3)) == 5
    finally:
        workers.shutdown()
    assert order == ["recheck", "job"]


def test_an_evaluation_checks_the_threads_before_it_runs(monkeypatch, tmp_path):
    order = _recorded(monkeypatch)
    evals = jobs.EvalJobs(lambda run_dir, progress, **options: order.append("job") or {"fid": 1.0})
    try:
        job = evals.start("run", Path(tmp_path))
        deadline = time.monotonic() + 30
        while job.state in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        evals.shutdown()
    assert job.state == "done" and job.result == {"fid": 1.0}
    assert order == ["recheck", "job"]


def test_a_server_started_idle_drops_to_the_free_core_once_a_training_takes_one(monkeypatch):
    samples = iter([CpuSample(0.0, 0.0, 0.0), CpuSample(5.0, 5.0, 0.0)])  # then 5 s of one busy core, none ours
    monkeypatch.setattr(threads, "cpu_sample", lambda: next(samples))
    monkeypatch.setattr(threads, "cores", lambda: 2)
    clock = {"now": 0.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(threads, "_policy", threads._policy)  # this process's policy, back after the test
    before = torch.get_num_threads()
    workers = jobs.Workers("sampling")
    try:
        assert threads.apply_threads(0) == 2  # the server's start: an idle machine
        clock["now"] = 5.0  # a training beside it since
        assert asyncio.run(workers.run(torch.get_num_threads)) == 1
    finally:
        workers.shutdown()
        torch.set_num_threads(before)
