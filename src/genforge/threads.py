"""How many CPU threads torch uses, and how its OpenMP threads wait: training on a busy machine.

Two things made a 2-core run beside other work (a browser, the studio, a second training) 6-13x
slower with two threads than with one (issue 21), and both are set here:

- **How threads wait.** torch's CPU build runs its intra-op threads on GNU OpenMP (libgomp,
  ``torch.__config__.parallel_info()``), whose threads *spin* at the barrier ending every parallel
  operation. When another process holds one of the cores, the spinning thread burns its time
  slice waiting for a partner that is not running: the step slows by far more than the CPU share
  lost. ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep instead. libgomp reads it once, when torch is
  imported, so :func:`passive_waiting` sets it at genforge's import (before torch) unless the user
  set it; child processes (bench workers, the studio's trainings) inherit it.
- **How many threads.** ``train.threads=0`` (the default) takes the cores this process may run on
  (its affinity mask) less the ones other work keeps busy (the 1-minute load average, less this
  process's own threads), at least one, shared by the processes ``torchrun`` started; the loop
  re-checks it at log steps (:func:`recheck_threads`), so a run follows the machine as other work
  starts and stops. ``train.threads=N`` is used as given.

Nothing here imports torch at module level (genforge's import must stay light and come first).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

WAIT_POLICY = "OMP_WAIT_POLICY"
RECHECK_SECONDS = 2.0  # the load average moves over a minute: checking more often only costs syscalls


def passive_waiting() -> bool:
    """Ask OpenMP to let waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``), unless the user chose a
    policy; True when passive waiting is in effect for this process. Too late (False) when torch was
    imported first: its OpenMP runtime has read the environment then (children still get it)."""
    torch_loaded = "torch" in sys.modules
    if WAIT_POLICY not in os.environ:
        os.environ[WAIT_POLICY] = "PASSIVE"
        return not torch_loaded
    return os.environ[WAIT_POLICY].strip().upper() == "PASSIVE"


PASSIVE_AT_START = passive_waiting()  # at genforge's import: genforge/__init__.py imports this module first


def cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def load_average() -> float:
    """Runnable threads on the machine, averaged over the last minute (0 where the OS has no figure)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return 0.0


def free_threads(own_threads: int, processes: int = 1, load: float | None = None, available: int | None = None) -> int:
    """The threads each of ``processes`` genforge processes should run: the cores not kept busy by
    other work, shared evenly, at least 1. ``own_threads`` are the threads each of our processes runs
    now, already counted in the load average (0 before the run starts)."""
    available = cores() if available is None else available
    processes = max(1, processes)
    load = load_average() if load is None else load
    others = max(0.0, load - own_threads * processes)
    share = (available - others) / processes
    return max(1, min(available // processes, int(share + 0.5)))


@dataclass
class ThreadPolicy:
    """The thread count of one training process: ``requested`` (train.threads; 0 = follow the free
    cores) among ``processes`` processes on this machine."""

    requested: int
    processes: int = 1
    current: int = 0
    checked_at: float = -1e9

    def choose(self) -> int:
        if self.requested > 0:
            return self.requested
        return free_threads(self.current, self.processes)

    def apply(self, now: float | None = None) -> int:
        """Set torch's thread count to :meth:`choose` (only when it changed); the count."""
        import torch

        now = time.monotonic() if now is None else now
        threads = self.choose()
        if threads != self.current or torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self.current, self.checked_at = threads, now
        return threads

    def recheck(self) -> int:
        """:meth:`apply` again if the count follows the load and the last check is old enough."""
        now = time.monotonic()
        if self.requested > 0 or now - self.checked_at < RECHECK_SECONDS:
            return self.current
        return self.apply(now)


_policy: ThreadPolicy | None = None


def apply_threads(threads: int, processes: int = 1) -> int:
    """Start this process's thread policy (``train.threads``; 0 = the free cores) and set torch's count."""
    global _policy
    _policy = ThreadPolicy(threads, processes)
    return _policy.apply()


def recheck_threads() -> int:
    """At a log step: follow the free cores if the run's threads are automatic; the count in use."""
    return _policy.recheck() if _policy is not None else 0


def describe_threads() -> str:
    """One line for a run's banner: the thread count and how it was chosen."""
    if _policy is None:
        return ""
    how = "as asked" if _policy.requested > 0 else f"free of {cores()} cores, load {load_average():.1f}"
    wait = "passive" if PASSIVE_AT_START else os.environ.get(WAIT_POLICY, "spinning").lower()
    return f"threads={_policy.current} ({how}; OpenMP waits {wait})"
