"""The toy lab's update rate: training steps per second of a `genforge.lab.ToyLab`, with a
state() (the studio's frame: heatmap, arrows, manifold, mode metrics) every few steps, as the
studio's play button runs it. Prints figures; it never passes or fails.

    python bench/lab_rate.py [--recipe ring-8] [--steps 300] [--state-every 5] [--rounds 3] [--threads 0]

One update = one training step of every phase (D's, then G's), through genforge.train.train_step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import cpu_name  # noqa: E402

from genforge.lab import LAB_RECIPES, LAB_THREADS, ToyLab  # noqa: E402


def measure(lab: ToyLab, steps: int, state_every: int, grid: int, arrows: int) -> dict[str, float]:
    """Updates per second over ``steps`` steps with a state() every ``state_every``, and the mean
    milliseconds of one step and of one state() measured inside the same run."""
    step_s = state_s = 0.0
    frames = 0
    start = time.perf_counter()
    for done in range(1, steps + 1):
        t = time.perf_counter()
        lab.step()
        step_s += time.perf_counter() - t
        if state_every and done % state_every == 0:
            t = time.perf_counter()
            json.dumps(lab.state(grid=grid, arrows=arrows))  # what the server sends
            state_s += time.perf_counter() - t
            frames += 1
    total = time.perf_counter() - start
    return {"updates_per_s": steps / total, "step_ms": 1000 * step_s / steps,
            "state_ms": 1000 * state_s / max(frames, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="ring-8", choices=LAB_RECIPES)
    parser.add_argument("--steps", type=int, default=300, help="steps per round")
    parser.add_argument("--state-every", type=int, default=5, help="a state() every this many steps (0 = none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grid", type=int, default=40)
    parser.add_argument("--arrows", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="the process's torch threads (a server's); 0 = torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lab = ToyLab(args.recipe, seed=0)
    measure(lab, 20, args.state_every, args.grid, args.arrows)  # warm-up
    rounds = [measure(lab, args.steps, args.state_every, args.grid, args.arrows) for _ in range(args.rounds)]
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"cpu: {cpu_name()}, {torch.get_num_threads()} torch threads in the process (the lab computes on "
          f"{LAB_THREADS}), torch {torch.__version__}")
    print(f"{args.recipe}: {median['updates_per_s']:.1f} updates/s (median of {args.rounds} x {args.steps} steps, "
          f"state() every {args.state_every} at grid {args.grid} with {args.arrows} arrows); "
          f"step {median['step_ms']:.2f} ms, state() {median['state_ms']:.2f} ms")
    print("rounds: " + ", ".join(f"{r['updates_per_s']:.1f}" for r in rounds) + " updates/s")


if __name__ == "__main__":
    main()
