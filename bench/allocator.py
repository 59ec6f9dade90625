"""Freed memory kept (genforge.allocator) against glibc's defaults: the same training, side by side.

    python bench/allocator.py                          # mnist-vae and mnist-dcgan, 600 steps, 2 rounds
    python bench/allocator.py --recipe mnist-vae --steps 300 --rounds 3

Each figure is one fresh `genforge train RECIPE --steps N` process (its start-up and the evaluation
at its end included, as a user runs it), with ``GENFORGE_MALLOC=default`` (glibc's own settings) or
without (genforge's: freed memory kept for reuse). The settings alternate, round after round, so a
shared machine's drift falls on both. Printed per process: wall seconds, user and system CPU seconds
and minor page faults (from the child's own resource usage), then the medians and their ratio. The
CPU is named first (bench/throughput.py's machine_info) and the load average beside every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {"glibc default": "default", "kept (genforge)": None}


def measure(recipe: str, steps: int, setting: str | None, extra: list[str]) -> dict[str, float]:
    """One training in its own process; its wall time and resource usage."""
    env = {k: v for k, v in os.environ.items() if k != "GENFORGE_MALLOC"}
    if setting is not None:
        env["GENFORGE_MALLOC"] = setting
    with tempfile.TemporaryDirectory(prefix="genforge-alloc-") as folder:
        argv = [sys.executable, "-m", "genforge", "train", recipe, "--steps", str(steps), "--no-progress",
                "--run-dir", str(Path(folder) / "run"), *extra]
        log = Path(folder) / "stderr.txt"
        with log.open("w") as err:  # a file, not a pipe: a chatty child cannot fill it and stall
            start = time.monotonic()
            child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(child.pid, 0)  # the child's own CPU time and page faults
            wall = time.monotonic() - start
        child.returncode = code = os.waitstatus_to_exitcode(status)
        error = log.read_text(errors="replace")
    if code != 0:
        raise SystemExit(f"bench/allocator.py: {' '.join(argv[2:])} failed ({code}): "
                         f"{error.strip().splitlines()[-1] if error.strip() else 'no message'}")
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "minor_faults": usage.ru_minflt}


def uptime() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import machine_info  # noqa: E402 (beside this file)

    import torch

    print(json.dumps(machine_info(torch.device("cpu"))), flush=True)
    for recipe in args.recipe or ["mnist-vae", "mnist-dcgan"]:
        results: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
        for _ in range(args.rounds):
            for name, setting in SETTINGS.items():
                result = measure(recipe, args.steps, setting, args.override)
                results[name].append(result)
                print(f"{recipe:12s} {name:16s} wall {result['wall_s']:7.1f} s  user {result['user_s']:7.1f} s  "
                      f"sys {result['sys_s']:6.1f} s  minor faults {result['minor_faults']:>11,}  | {uptime()}",
                      flush=True)
        median = {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
                  for name, rows in results.items()}
        default, kept = median["glibc default"], median["kept (genforge)"]
        print(f"{recipe:12s} medians over {args.rounds} rounds, {args.steps} steps: wall {default['wall_s']:.1f} s -> "
              f"{kept['wall_s']:.1f} s ({default['wall_s'] / kept['wall_s']:.2f}x faster), system "
              f"{default['sys_s']:.1f} s -> {kept['sys_s']:.1f} s, minor faults {default['minor_faults']:,.0f} -> "
              f"{kept['minor_faults']:,.0f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", help="recipe to train (repeatable; default mnist-vae and "
                        "mnist-dcgan)")
    parser.add_argument("--steps", type=int, default=600, help="steps per training (default 600)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both settings, in turn (default 2)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every training (repeatable)")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
