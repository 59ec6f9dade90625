"""genforge.allocator: freed memory kept for reuse, so a loop of same-sized tensors stops faulting pages in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from genforge import allocator

LOOP = """
import resource, sys, torch
from genforge.allocator import keep_freed_memory
print(keep_freed_memory())
for step in range(40):  # as a training step: the same 64 MiB of activations allocated, used and freed
    if step == 10:  # (posix_memalign's aligned blocks settle into the kept heap over the first few)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(16 << 20).fill_(1.0)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    if setting is not None:
        env[allocator.ENV] = setting
    out = subprocess.run([sys.executable, "-c", LOOP], env=env, capture_output=True, text=True, check=True).stdout
    tuned, faults = out.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not allocator._glibc(), reason="glibc's allocator only (this C library is left alone)")
def test_kept_memory_is_reused_instead_of_faulted_in_every_step():
    tuned, kept = _faults(None)
    untouched, default = _faults("default")
    assert tuned and not untouched
    assert default > 30 * (64 << 20) // 4096 // 2  # glibc's default maps and zeroes the pages every time
    assert kept * 10 < default, (kept, default)


def test_it_is_set_once_per_process_and_the_cli_sets_it(monkeypatch):
    from genforge import cli

    calls = []
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setattr(allocator, "_tune", lambda: calls.append(1) or True)
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory() and calls == [1]
    monkeypatch.setattr(allocator, "_tuned", None)
    assert cli.main(["recipes"]) == 0 and calls == [1, 1]


def test_the_opt_out_and_other_c_libraries_leave_malloc_alone(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "default")
    assert allocator._tune() is False
    monkeypatch.delenv(allocator.ENV)
    monkeypatch.setattr(allocator, "_glibc", lambda: False)
    assert allocator._tune() is False
