"""The thread policy (genforge.threads): passive OpenMP waiting from genforge's import, threads from
the cores other work leaves free, and train.threads=N as asked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from genforge import threads
from genforge.threads import ThreadPolicy, free_threads


def run_python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_genforge_asks_openmp_to_wait_passively_before_torch_loads():
    out = run_python("import sys, os, genforge, genforge.threads as t; "
                     "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules, t.PASSIVE_AT_START)")
    assert out == "PASSIVE False True"


def test_a_wait_policy_the_user_chose_is_kept():
    assert run_python("import os, genforge; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_torch_imported_first_is_too_late_for_this_process_but_children_get_it():
    out = run_python("import os, torch, genforge.threads as t; print(t.PASSIVE_AT_START, os.environ['OMP_WAIT_POLICY'])")
    assert out == "False PASSIVE"


@pytest.mark.parametrize("load,own,processes,cores,expected", [
    (0.0, 0, 1, 2, 2),    # an idle machine: every core
    (1.0, 0, 1, 2, 1),    # one busy loop beside us: the other core
    (3.0, 2, 1, 2, 1),    # our own 2 threads are in the load: one other process
    (2.0, 2, 1, 2, 2),    # the load is ours alone
    (8.0, 1, 1, 2, 1),    # a crowded machine: still one thread
    (0.0, 0, 2, 4, 2),    # torchrun's 2 processes share 4 idle cores
    (0.4, 0, 1, 2, 2),    # a little background noise does not cost a core
])
def test_free_threads_are_the_cores_other_work_leaves(load, own, processes, cores, expected):
    assert free_threads(own, processes, load=load, available=cores) == expected


def test_train_threads_n_is_used_as_given_whatever_the_load(monkeypatch):
    monkeypatch.setattr(threads, "load_average", lambda: 50.0)
    before = torch.get_num_threads()
    try:
        policy = ThreadPolicy(requested=2)
        assert policy.apply() == 2 and torch.get_num_threads() == 2
        assert policy.recheck() == 2
        automatic = ThreadPolicy(requested=0)
        assert automatic.apply() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_automatic_threads_follow_the_load_at_rechecks(monkeypatch):
    before = torch.get_num_threads()
    load = {"now": 0.0}
    monkeypatch.setattr(threads, "load_average", lambda: load["now"])
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
