"""Time to quality: genforge's loop and the plain reference, the same wall-clock budget each.

    python bench/time_to_quality.py                     # mnist-dcgan, 10 minutes each, FID every minute
    python bench/time_to_quality.py --minutes 4 --every 1 --set data.image_size=32

The plain reference (``bench/plain.py``: float32 eager, per-item DataLoader) trains first,
pausing every ``--every`` minutes of training time for an FID check; then genforge's loop
trains the recipe in ``--every``-minute chunks (each chunk a resume of the run, so the
figure includes checkpointing). Both train the recipe's networks on the same data and batch;
the plain reference trains them with the published DCGAN optimiser (Radford et al.: Adam
2e-4, betas 0.5 / 0.999; ``--plain-set`` changes it), as the code people copy does, and
genforge with its recipe's own settings, so the figure is what a user gets from either.
FID is genforge's own (MNIST extractor, ``--n`` samples against the test split); only
training time counts on the clock. Prints FID over time for both and when genforge first
reaches the plain reference's final FID.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain import PlainTrainer  # noqa: E402
from throughput import machine_info  # noqa: E402

from genforge import api  # noqa: E402
from genforge.config import load_recipe  # noqa: E402
from genforge.metrics.evaluate import TrainingEval  # noqa: E402
from genforge.runtime import set_threads  # noqa: E402

PUBLISHED = ("optim.lr=2e-4", "optim.beta1=0.5", "optim.beta2=0.999")  # Radford et al.'s Adam


def plain_curve(cfg, minutes: float, every: float, fid) -> list[tuple[float, int, float]]:
    trainer = PlainTrainer(cfg)
    points, trained, steps = [], 0.0, 0
    while trained < minutes * 60 - 1e-6:
        chunk_end = min(minutes * 60, trained + every * 60)
        start = time.perf_counter()
        while trained + (time.perf_counter() - start) < chunk_end:
            trainer.step()
            steps += 1
        trained += time.perf_counter() - start
        points.append((trained / 60, steps, fid(trainer.model, steps)))
        print(f"plain     {trained / 60:5.1f} min  step {steps:6d}  FID {points[-1][2]:.2f}", file=sys.stderr)
    return points


def genforge_curve(cfg, minutes: float, every: float, fid, run_dir: Path) -> list[tuple[float, int, float]]:
    points, trained = [], 0.0
    cfg.train.steps, cfg.train.minutes = 0, every
    while trained < minutes - 1e-6:
        chunk = min(every, minutes - trained)
        if trained == 0:
            cfg.train.minutes = chunk
            api.train_run(cfg, run_dir, progress=False)
        else:
            api.train_run(api.resume_config(run_dir, minutes=chunk), run_dir, resume=True, progress=False)
        trained += chunk
        loaded = api.load(run_dir)
        step = loaded.step
        points.append((trained, step, fid(loaded.model, step)))
        print(f"genforge  {trained:5.1f} min  step {step:6d}  FID {points[-1][2]:.2f}", file=sys.stderr)
    return points


def configs(recipe: str, sets: list[str], plain_set: tuple[str, ...], threads: int = 0):
    """(genforge's config: the recipe with ``sets``; the plain reference's: also ``plain_set``)."""
    common = [f"train.threads={threads}", "train.device=cpu", "train.sample_every=100000000"]
    return load_recipe(recipe, [*sets, *common]), load_recipe(recipe, [*sets, *plain_set, *common])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="mnist-dcgan")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for both sides")
    parser.add_argument("--plain-set", action="append", default=None, metavar="KEY=VALUE",
                        help=f"the plain reference's own overrides (default: {' '.join(PUBLISHED)})")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each side")
    parser.add_argument("--every", type=float, default=1.0, help="minutes of training between FID checks")
    parser.add_argument("--n", type=int, default=5000, help="samples per FID")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    plain_set = PUBLISHED if args.plain_set is None else tuple(args.plain_set)
    cfg, plain_cfg = configs(args.recipe, args.set, plain_set, args.threads)
    set_threads(args.threads)
    evaluator = TrainingEval(cfg.data.dataset, cfg.data.image_size, args.n, 0, torch.device("cpu"))

    def fid(model, step: int) -> float:
        return evaluator(model, step)[0]["eval/fid"]

    plain = plain_curve(plain_cfg, args.minutes, args.every, fid)
    with tempfile.TemporaryDirectory() as run_dir:
        ours = genforge_curve(cfg, args.minutes, args.every, fid, Path(run_dir))
    target = plain[-1][2]
    reached = next((m for m, _, f in ours if f <= target), None)
    result = {"machine": machine_info(torch.device("cpu")), "recipe": args.recipe, "overrides": args.set,
              "plain_overrides": plain_set, "minutes": args.minutes, "samples": args.n, "plain": plain,
              "genforge": ours, "plain_final_fid": target, "genforge_minutes_to_plain_final": reached}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"# {result['machine']}")
    print(f"# plain: {args.recipe} {' '.join([*args.set, *plain_set])}  (lr {plain_cfg.optim.lr:g}, "
          f"betas {plain_cfg.optim.beta1:g}/{plain_cfg.optim.beta2:g})")
    print(f"# genforge: {args.recipe} {' '.join(args.set)}  (lr {cfg.optim.lr:g}, betas {cfg.optim.beta1:g}/"
          f"{cfg.optim.beta2:g})")
    print(f"{'minutes':>7s} {'plain step':>10s} {'plain FID':>9s} {'genforge step':>13s} {'genforge FID':>12s}")
    for (m, ps, pf), (_, gs, gf) in zip(plain, ours):
        print(f"{m:7.1f} {ps:10d} {pf:9.2f} {gs:13d} {gf:12.2f}")
    if reached is None:
        print(f"genforge did not reach the plain reference's final FID {target:.2f} within {args.minutes} minutes")
    else:
        print(f"genforge reached the plain reference's {args.minutes:g}-minute FID {target:.2f} after {reached:g} "
              f"minutes ({reached / args.minutes:.2f} of the time)")


if __name__ == "__main__":
    main()
