"""How many CPU threads torch uses, and how its OpenMP threads wait: training on a busy machine.

A 2-core run beside other work (a browser, the studio, a second training) was 6-13x slower with two
threads than with one (issue 21). Two settings decide it, and both are made here:

- **How many threads.** Two threads beside a process that holds one of the cores collapse, whatever
  OpenMP's wait policy (``bench/contention.py``: ``mnist-dcgan`` at 458 img/s with 2 passive threads
  beside a busy loop, 2,838 with one): each parallel operation waits at its barrier for a partner the
  OS is not running. So ``train.threads=0`` (the default) takes the cores this process may run on (its
  affinity mask) less the ones other work keeps busy, at least one, shared by the processes ``torchrun``
  started; the loop re-checks it every few seconds (:func:`recheck_threads`), so a run follows the
  machine as other work starts and stops. "Busy" is measured, not guessed: from the CPU time the
  kernel counts on those cores (``/proc/stat``, steal time included) less this process's own, over the
  seconds since the last check; a run starts on every core and takes its first measurement after half
  a second. The load average is the fallback where the kernel's accounting cannot be read (macOS,
  Windows); it lags a minute behind (a run just after another would start on one core), so it is not
  used where a measurement can be made. ``train.threads=N`` is used as given.
- **How threads wait.** torch's CPU build runs its threads on GNU OpenMP (libgomp), whose threads
  spin at the barrier ending every parallel operation before they sleep: 300,000 turns by default,
  which burns a competitor's core; never spinning (``OMP_WAIT_POLICY=PASSIVE``) costs a futex wake-up
  per operation, which made the toy MLPs' small operations 2-3x slower on an idle machine than one
  thread. ``GOMP_SPINCOUNT=10000`` (a few microseconds) keeps back-to-back operations on running
  threads and sleeps soon after. libgomp reads it once, when torch is imported, so
  :func:`wait_policy` sets it at genforge's import (before torch) unless the user chose
  ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``; child processes (bench workers, the studio's trainings)
  inherit it.

Nothing here imports torch at module level (genforge's import must stay light and come first).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field

WAIT_POLICY, SPIN_COUNT = "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"
SPIN = "10000"  # libgomp's turns at a barrier before sleeping (its default: 300,000; PASSIVE: 0)
RECHECK_SECONDS = 2.0  # the measured interval: shorter ones are a few clock ticks (10 ms each) only
FIRST_CHECK_SECONDS = 0.5  # the first interval, from the start: the run starts on every core until then


def wait_policy() -> str:
    """Set libgomp's short spin (``GOMP_SPINCOUNT``) unless the user chose how OpenMP waits; says how
    this process's OpenMP threads wait. Too late when torch was imported first: its OpenMP runtime has
    read the environment then (children still get the setting)."""
    chosen = [f"{key}={os.environ[key]}" for key in (WAIT_POLICY, SPIN_COUNT) if key in os.environ]
    if chosen:
        return ", ".join(chosen) + " (as set)"
    os.environ[SPIN_COUNT] = SPIN
    if "torch" in sys.modules:
        return "libgomp's default spin (torch was imported before genforge)"
    return f"{SPIN_COUNT}={SPIN}"


WAITING = wait_policy()  # at genforge's import: genforge/__init__.py imports this module first


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


@dataclass(frozen=True)
class CpuSample:
    """The kernel's CPU accounting at one moment: seconds busy on this process's cores (every process,
    steal time included: the hypervisor ran something else), and this process's own CPU seconds."""

    wall: float
    busy: float
    own: float


def cpu_sample() -> CpuSample | None:
    """Now's :class:`CpuSample` from ``/proc/stat``; None where there is none (macOS, Windows)."""
    try:
        mask = os.sched_getaffinity(0)
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        ticks_per_second = os.sysconf("SC_CLK_TCK")
    except (AttributeError, OSError, ValueError):
        return None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in mask:
            # user nice system idle iowait irq softirq steal ... (guest time is already in user)
            counts = [int(x) for x in fields[:8]] + [0] * (8 - len(fields[:8]))
            busy += sum(counts[:3]) + sum(counts[5:8])
    own = os.times()
    return CpuSample(time.monotonic(), busy / ticks_per_second, own.user + own.system)


def busy_elsewhere(before: CpuSample, after: CpuSample, processes: int = 1) -> float:
    """Cores other work kept busy between two samples: all the busy time less ours (``processes``
    genforge processes alike, as torchrun's siblings on this machine are), per second."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    return max(0.0, (after.busy - before.busy) - (after.own - before.own) * max(1, processes)) / wall


def free_threads(others: float, processes: int = 1, available: int | None = None) -> int:
    """The threads each of ``processes`` genforge processes should run when other work keeps ``others``
    cores busy: the cores left, shared evenly, at least 1 (a little background noise costs no core)."""
    available = cores() if available is None else available
    processes = max(1, processes)
    share = (available - max(0.0, others) + 0.5) / processes  # half a core of noise is forgiven, once
    return max(1, min(available // processes, int(share)))


@dataclass
class ThreadPolicy:
    """The thread count of one training process: ``requested`` (train.threads; 0 = follow the free
    cores) among ``processes`` processes on this machine."""

    requested: int
    processes: int = 1
    current: int = 0
    checked_at: float = -1e9
    sample: CpuSample | None = field(default=None, repr=False)
    measured: int = 0  # checks made (the first starts the first interval)

    def others(self) -> float:
        """Cores other work keeps busy: measured since the last check; before the first measured
        interval none where the kernel's accounting can be read (the first check comes after
        FIRST_CHECK_SECONDS), else the load average less our own threads (which it counts)."""
        before, self.sample = self.sample, cpu_sample()
        if self.sample is None:
            return load_average() - self.current * self.processes
        return busy_elsewhere(before, self.sample, self.processes) if before is not None else 0.0

    def choose(self) -> int:
        if self.requested > 0:
            return self.requested
        return free_threads(self.others(), self.processes)

    def apply(self, now: float | None = None) -> int:
        """Set torch's thread count to :meth:`choose` (only when it changed); the count."""
        import torch

        now = time.monotonic() if now is None else now
        threads = self.choose()
        self.measured += 1
        if threads != self.current or torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self.current, self.checked_at = threads, now
        return threads

    def recheck(self) -> int:
        """:meth:`apply` again if the count follows the load and the last check is old enough."""
        now = time.monotonic()
        due = FIRST_CHECK_SECONDS if self.measured < 2 else RECHECK_SECONDS
        if self.requested > 0 or now - self.checked_at < due:
            return self.current
        return self.apply(now)


_policy: ThreadPolicy | None = None
_recheck_lock = threading.Lock()


def apply_threads(threads: int, processes: int = 1) -> int:
    """Start this process's thread policy (``train.threads``; 0 = the free cores) and set torch's count."""
    global _policy
    _policy = ThreadPolicy(threads, processes)
    return _policy.apply()


def recheck_threads() -> int:
    """Each step (and before each of the studio's jobs): follow the free cores if this process's
    threads are automatic; the count in use. Safe from several threads (the studio's worker pools)."""
    if _policy is None:
        return 0
    with _recheck_lock:
        return _policy.recheck()


def describe_threads() -> str:
    """One line for a run's banner: the thread count and how it was chosen."""
    if _policy is None:
        return ""
    how = "as asked" if _policy.requested > 0 else f"the free ones of {cores()} cores"
    return f"threads={_policy.current} ({how}; OpenMP waits with {WAITING})"
