"""The thread policy (genforge.threads): a short OpenMP spin from genforge's import, threads from the
cores other work leaves free (measured from the kernel's CPU accounting), and train.threads=N as asked."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from genforge import threads
from genforge.threads import CpuSample, ThreadPolicy, busy_elsewhere, free_threads


def run_python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in (threads.WAIT_POLICY, threads.SPIN_COUNT)}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_genforge_sets_a_short_openmp_spin_before_torch_loads():
    out = run_python("import sys, os, genforge, genforge.threads as t; "
                     "print(os.environ['GOMP_SPINCOUNT'], 'OMP_WAIT_POLICY' in os.environ, 'torch' in sys.modules, "
                     "t.WAITING)")
    assert out == "10000 False False GOMP_SPINCOUNT=10000"


@pytest.mark.parametrize("key,value", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "0")])
def test_a_wait_policy_the_user_chose_is_kept(key, value):
    out = run_python("import os, genforge.threads as t; print(os.environ.get('GOMP_SPINCOUNT'), t.WAITING)",
                     **{key: value})
    assert out == f"{value if key == 'GOMP_SPINCOUNT' else None} {key}={value} (as set)"


def test_torch_imported_first_is_too_late_for_this_process_but_children_get_it():
    out = run_python("import os, torch, genforge.threads as t; print(os.environ['GOMP_SPINCOUNT'], t.WAITING)")
    assert out == "10000 libgomp's default spin (torch was imported before genforge)"


@pytest.mark.parametrize("others,processes,cores,expected", [
    (0.0, 1, 2, 2),    # an idle machine: every core
    (1.0, 1, 2, 1),    # one busy loop beside us: the other core
    (0.9, 1, 2, 1),    # a second training on one thread
    (8.0, 1, 2, 1),    # a crowded machine: still one thread
    (0.0, 2, 4, 2),    # torchrun's 2 processes share 4 idle cores
    (1.0, 2, 4, 1),    # ... and one core busy elsewhere
    (0.4, 1, 2, 2),    # a little background noise does not cost a core
    (-0.3, 1, 2, 2),   # the load average less our own threads can dip below 0
])
def test_free_threads_are_the_cores_other_work_leaves(others, processes, cores, expected):
    assert free_threads(others, processes, available=cores) == expected


def test_busy_elsewhere_is_the_busy_time_less_ours_per_second():
    before = CpuSample(wall=10.0, busy=100.0, own=30.0)
    after = CpuSample(wall=12.0, busy=104.0, own=33.0)  # 4 busy seconds in 2, 3 of them ours
    assert busy_elsewhere(before, after) == pytest.approx(0.5)
    assert busy_elsewhere(before, after, processes=2) == 0.0  # a sibling rank used as much as we did
    assert busy_elsewhere(after, after) == 0.0


@pytest.mark.skipif(threads.cpu_sample() is None, reason="no /proc/stat on this system")
def test_a_busy_loop_in_another_process_is_measured_as_a_busy_core():
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # running
        before = threads.cpu_sample()
        time.sleep(1.0)
        after = threads.cpu_sample()
    finally:
        loop.kill()
        loop.wait()
    # the loop holds a core (more where the machine is shared: other work counts too); our sleep is not busy
    assert busy_elsewhere(before, after) >= 0.6
    assert after.own - before.own < 0.2


def test_train_threads_n_is_used_as_given_whatever_the_load(monkeypatch):
    monkeypatch.setattr(threads, "load_average", lambda: 50.0)
    monkeypatch.setattr(threads, "cpu_sample", lambda: None)
    before = torch.get_num_threads()
    try:
        policy = ThreadPolicy(requested=2)
        assert policy.apply() == 2 and torch.get_num_threads() == 2
        assert policy.recheck() == 2
        automatic = ThreadPolicy(requested=0)
        assert automatic.apply() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_automatic_threads_follow_the_load_average_where_nothing_is_measured(monkeypatch):
    before = torch.get_num_threads()
    load = {"now": 0.0}
    monkeypatch.setattr(threads, "load_average", lambda: load["now"])
    monkeypatch.setattr(threads, "cpu_sample", lambda: None)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    try:
        policy = ThreadPolicy(requested=0)
        assert policy.apply(now=0.0) == 2
        load["now"] = 2.0 + 1.0  # our 2 threads and a busy loop
        policy.checked_at = -threads.RECHECK_SECONDS  # the last check is old enough
        assert policy.recheck() == 1 and torch.get_num_threads() == 1
        load["now"] = 1.0  # the busy loop ended
        policy.checked_at = -threads.RECHECK_SECONDS
        assert policy.recheck() == 2
    finally:
        torch.set_num_threads(before)


def test_automatic_threads_follow_the_measured_busy_cores_not_the_lagging_load_average(monkeypatch):
    before = torch.get_num_threads()
    samples = iter([CpuSample(0.0, 0.0, 0.0), CpuSample(0.5, 1.5, 1.0),    # 0.5 others' seconds in 0.5: one busy core
                    CpuSample(2.5, 5.5, 3.0),                              # 2 others' seconds in 2: still one
                    CpuSample(4.5, 9.5, 7.0)])                             # all the busy time ours: none
    monkeypatch.setattr(threads, "cpu_sample", lambda: next(samples))
    monkeypatch.setattr(threads, "load_average", lambda: 1.5)  # a minute's lag after other work stopped: ignored
    monkeypatch.setattr(threads, "cores", lambda: 2)
    clock = {"now": 0.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["now"])
    try:
        policy = ThreadPolicy(requested=0)
        assert policy.apply() == 2  # nothing measured yet: every core
        clock["now"] = 0.3
        assert policy.recheck() == 2  # the first interval is not over
        clock["now"] = 0.5
        assert policy.recheck() == 1 and torch.get_num_threads() == 1  # measured after half a second
        clock["now"] = 1.5
        assert policy.recheck() == 1  # then every 2 seconds
        clock["now"] = 2.5
        assert policy.recheck() == 1
        clock["now"] = 4.5
        assert policy.recheck() == 2 and torch.get_num_threads() == 2  # measured: idle, whatever the load says
    finally:
        torch.set_num_threads(before)
