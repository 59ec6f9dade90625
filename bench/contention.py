"""Training beside other work: images/s at 1 and 2 threads and at the default, idle and beside a competitor.

    python bench/contention.py                      # mnist-dcgan and fashion-discogan, beside a busy loop
    python bench/contention.py --competitor training --seconds 20
    GENFORGE_DATA=/work/shared/datasets python bench/contention.py --recipe fashion-discogan

Each figure is one fresh process training a recipe through the loop's own set-up (prepare_run, so
``train.threads`` goes through genforge's thread policy) and steps for ``--seconds`` after 3 warm-up
steps, re-checking the thread count at every step as the loop does (a check is due every 2 seconds). The settings:

- ``1 thread`` / ``2 threads``: ``train.threads=1`` / ``2``, with genforge's short OpenMP spin
  (``GOMP_SPINCOUNT=10000``, set at genforge's import);
- ``default``: ``train.threads=0`` (the cores other work leaves free, measured as the loop does), the
  short spin;
- ``2 threads, passive``: ``OMP_WAIT_POLICY=PASSIVE``, threads that never spin (genforge's earlier setting,
  issue 21's first round);
- ``2 threads, spinning``: libgomp's own policy (``OMP_WAIT_POLICY`` set empty: 300,000 turns of
  spinning at every barrier before sleeping; what genforge did before issue 21).

Each runs idle (nothing of ours beside it) and beside a competitor: a busy loop on one core, or a second
training of the same recipe at the default. The machine's load average is printed with every figure, and
the "done" ratio of issue 21: the default against the best of 1 and 2 threads, per condition.
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

SETTINGS = {"1 thread": ("1", {}), "2 threads": ("2", {}), "default": ("0", {}),
            "2 threads, passive": ("2", {"OMP_WAIT_POLICY": "PASSIVE"}),
            "2 threads, spinning": ("2", {"OMP_WAIT_POLICY": ""})}
BUSY_LOOP = "while True:\n    pass\n"


def worker(recipe: str, threads: int, seconds: float) -> None:
    """In the measuring process: train ``recipe`` for ``seconds`` after warm-up; print one JSON line."""
    from genforge.config import load_recipe  # genforge first: its import sets the wait policy before torch loads
    from genforge.threads import recheck_threads
    from genforge.train import prepare_run

    import torch

    cfg = load_recipe(recipe, [f"train.threads={threads}"])
    with tempfile.TemporaryDirectory() as run_dir:
        run = prepare_run(cfg, Path(run_dir), False, None)
        for _ in range(3):  # warm-up, re-checking the threads as the loop does from its first step
            run.step()
            recheck_threads()
        steps, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            logged = run.step()
            recheck_threads()
            steps += 1
            if steps % 10 == 0:
                float(next(iter(logged.values())))  # the loop's host sync at a log step
        float(next(iter(logged.values())))
        elapsed = time.monotonic() - start
    print(json.dumps({"images_per_s": steps * run.batches.global_batch / elapsed, "steps": steps,
                      "threads_at_end": torch.get_num_threads()}))


def measure(recipe: str, setting: str, seconds: float) -> dict:
    threads, wait = SETTINGS[setting]
    env = {**{k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}, **wait}
    out = subprocess.run([sys.executable, __file__, "--worker", recipe, threads, str(seconds)], env=env,
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def start_competitor(kind: str, recipe: str, seconds: float) -> subprocess.Popen | None:
    if kind == "none":
        return None
    if kind == "busy":
        return subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    return subprocess.Popen([sys.executable, __file__, "--worker", recipe, "0", str(10 * seconds)],
                            stdout=subprocess.DEVNULL)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import machine_info  # noqa: E402 (beside this file)

    import torch

    print(json.dumps(machine_info(torch.device("cpu"))))
    for recipe in args.recipe or ["mnist-dcgan", "fashion-discogan"]:
        for condition in ("none", args.competitor):
            rates: dict[str, list[float]] = {}
            competitor = start_competitor(condition, recipe, args.seconds)
            try:
                time.sleep(2 if competitor else 0)  # the competitor running before we measure
                for _ in range(args.rounds):  # settings in turn, round after round: a shared machine's load drifts
                    for setting in args.setting or SETTINGS:
                        result = measure(recipe, setting, args.seconds)
                        rates.setdefault(setting, []).append(result["images_per_s"])
                        print(f"{recipe:17s} beside {condition:8s} {setting:20s} {result['images_per_s']:9.1f} img/s "
                              f"(threads at end {result['threads_at_end']})  | {uptime()}", flush=True)
            finally:
                if competitor:
                    competitor.kill()
                    competitor.wait()
            medians = {setting: statistics.median(values) for setting, values in rates.items()}
            best = max(medians.get("1 thread", 0.0), medians.get("2 threads", 0.0))
            if best and "default" in medians:
                print(f"{recipe:17s} beside {condition:8s} medians over {args.rounds} rounds: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in medians.items())
                      + f"; default / best of 1 and 2 threads: {medians['default'] / best:.2f}x", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", help="recipe to measure (repeatable; default mnist-dcgan "
                        "and fashion-discogan)")
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS), help="thread setting (repeatable)")
    parser.add_argument("--competitor", choices=("busy", "training"), default="busy",
                        help="what runs beside the training: a busy loop on one core, or a second training")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per figure (default 15)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every setting, in turn (default 2; "
                        "the ratio is of the medians)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
