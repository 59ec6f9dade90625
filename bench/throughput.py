"""Training throughput of genforge's recipes, measured through the real training loop.

    python bench/throughput.py                      # mnist-vae and mnist-dcgan
    python bench/throughput.py --recipe mnist-dcgan --steps 300 --json

Each recipe trains for --steps steps into a temporary run directory (no sample grids or
checkpoints inside the timed window); the loop logs images/s every --steps/10 steps and
the figure printed is the median of those windows after the first (which includes warm-up).
Prints figures, never pass/fail: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

from genforge import viz
from genforge.config import load_recipe
from genforge.train import train

DEFAULT_RECIPES = ("mnist-vae", "mnist-dcgan")


def measure(recipe: str, steps: int, threads: int) -> dict:
    every = max(1, steps // 10)
    cfg = load_recipe(recipe, [f"train.steps={steps}", f"train.log_every={every}", f"train.threads={threads}",
                               f"train.sample_every={10 * steps}", f"train.checkpoint_every={10 * steps}",
                               "train.eval_samples=1"])
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        train(cfg, run_dir, progress=False)
        wall = time.perf_counter() - start
        rates = [row["images_per_s"] for row in viz.read_metrics(os.path.join(run_dir, "metrics.jsonl"))
                 if "images_per_s" in row]
    steady = rates[1:] or rates
    return {"recipe": recipe, "batch_size": cfg.train.batch_size, "steps": steps,
            "images_per_s": statistics.median(steady), "images_per_s_min": min(steady),
            "images_per_s_max": max(steady), "wall_s_including_setup_and_eval": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", help="recipe to measure (repeatable); default both MNIST recipes")
    parser.add_argument("--steps", type=int, default=0, help="steps per recipe (default: 2000 VAE, 300 GAN)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    results = []
    for recipe in args.recipe or DEFAULT_RECIPES:
        steps = args.steps or (2000 if "vae" in recipe else 300)
        results.append(measure(recipe, steps, args.threads))
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=2))
        return
    print(f"# {machine}", file=sys.stderr)
    print(f"{'recipe':14s} {'batch':>5s} {'images/s':>10s} {'(min-max)':>18s}")
    for r in results:
        print(f"{r['recipe']:14s} {r['batch_size']:5d} {r['images_per_s']:10.0f} "
              f"{r['images_per_s_min']:8.0f}-{r['images_per_s_max']:<8.0f}")


if __name__ == "__main__":
    main()
