"""The ``genforge`` command: a thin shell over the library (parse -> call -> print).

Nothing heavy is imported at start-up; each subcommand imports what it needs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from genforge.errors import GenforgeError

EPILOGS = {
    "train": """examples:
  genforge train mnist-vae --steps 3000
  genforge train mnist-dcgan --minutes 5 --run-dir runs/dcgan optim.lr=1e-4 train.batch_size=128
  genforge train mnist-vae model.latent_dim=2          # the classic 2-D manifold grid
  genforge train --resume runs/dcgan --steps 6000       # continue to step 6000 in total""",
    "sample": """examples:
  genforge sample runs/dcgan --n 64 --out grid.png
  genforge sample runs/vae --n 16 --out g.png --seed 3""",
    "recipes": """examples:
  genforge recipes
  genforge recipes --show mnist-dcgan""",
    "data": """examples:
  genforge data list
  genforge data fetch fashion-mnist
  genforge data fetch mnist --data-root /data/genforge""",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genforge", description="Train, sample and evaluate deep generative models.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="run `genforge COMMAND --help` for a command's options and examples")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=EPILOGS.get(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    train = command("train", "train a recipe, or resume a run")
    train.add_argument("recipe", nargs="?", help="recipe name (see `genforge recipes`)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-4")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest checkpoint")
    train.add_argument("--run-dir", help="where the run is written (default: runs/RECIPE-TIMESTAMP)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="total steps of the run (a resumed run stops at this step)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget in minutes")
    train.add_argument("--seed", type=int, help="seed (default: the recipe's, 0)")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    train.add_argument("--data-root", help="folder with datasets (default: $GENFORGE_DATA or ~/.cache/genforge)")
    train.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    sample = command("sample", "draw samples from a trained run into a PNG grid")
    sample.add_argument("run_dir", help="a run directory with a checkpoint")
    sample.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    sample.add_argument("--out", default="samples.png", help="output PNG (default samples.png)")
    sample.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    sample.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")

    recipes = command("recipes", "list the built-in recipes")
    recipes.add_argument("--show", metavar="RECIPE", help="print every config key of a recipe with its help")

    data = command("data", "list or fetch datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_list = data_sub.add_parser("list", help="known datasets and where they are")
    data_list.add_argument("--data-root", help="folder with datasets")
    fetch = data_sub.add_parser("fetch", help="download a dataset with checksum verification")
    fetch.add_argument("name", help="dataset name (mnist, fashion-mnist)")
    fetch.add_argument("--data-root", help="folder to download into (default: $GENFORGE_DATA or ~/.cache/genforge)")
    fetch.add_argument("--mirror", action="append", help="base URL to fetch from instead of the public mirrors")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _version() -> str:
    from genforge import __version__

    return f"genforge {__version__}"


def cmd_train(args: argparse.Namespace) -> int:
    from genforge.config import load_recipe
    from genforge.train import resume_config, train

    if args.resume:
        if args.recipe or args.overrides or args.run_dir or args.seed is not None:
            raise GenforgeError("--resume takes a run directory only (plus --steps/--minutes/--device); "
                                "its config is read from RUN_DIR/config.json")
        cfg = resume_config(args.resume, steps=args.steps, minutes=args.minutes)
        if args.device:
            cfg.train.device = args.device
        run_dir = Path(args.resume)
    else:
        if not args.recipe:
            raise GenforgeError("name a recipe (see `genforge recipes`) or --resume RUN_DIR")
        cfg = load_recipe(args.recipe, args.overrides)
        if args.steps is not None:
            cfg.train.steps = args.steps
        if args.minutes is not None:
            cfg.train.minutes, cfg.train.steps = args.minutes, 2**62  # the clock is the budget
        for key in ("seed", "device"):
            if getattr(args, key) is not None:
                setattr(cfg.train, key, getattr(args, key))
        run_dir = Path(args.run_dir or f"runs/{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}")
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
            raise GenforgeError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                                "or choose another --run-dir")
    if cfg.train.steps <= 0:
        raise GenforgeError(f"--steps must be positive, not {cfg.train.steps}")
    if args.dry_run:
        import json

        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    print(f"genforge: training {cfg.recipe} ({cfg.family}) into {run_dir}", file=sys.stderr)
    result = train(cfg, run_dir, resume=bool(args.resume), data_root=args.data_root, progress=not args.no_progress)
    if result.interrupted:
        print(f"genforge: interrupted at step {result.step}; checkpoint saved. "
              f"Continue with: genforge train --resume {run_dir}", file=sys.stderr)
        return 130
    for key, value in result.metrics.items():
        print(f"{key:28s} {value:.4f}")
    print(f"genforge: done at step {result.step}: {run_dir}", file=sys.stderr)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from genforge import viz
    from genforge.runs import load_model
    from genforge.runtime import resolve_device

    if args.n <= 0:
        raise GenforgeError(f"--n must be positive, not {args.n}")
    _, model, step = load_model(args.run_dir, resolve_device(args.device))
    with model.ema_weights():
        images = model.sample(args.n, torch.Generator().manual_seed(args.seed))
    path = viz.save_grid(images, args.out)
    print(f"genforge: {args.n} samples from step {step} -> {path}", file=sys.stderr)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from genforge.config import iter_fields, load_recipe, load_recipe_dict, recipe_names

    if args.show:
        cfg = load_recipe(args.show)
        print(f"{cfg.recipe} ({cfg.family}): {cfg.description}")
        for key, value, help in iter_fields(cfg):
            print(f"  {key}={value!s:<14} {help}")
        return 0
    for name in recipe_names():
        print(f"{name:22s} {load_recipe_dict(name).get('description', '')}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from genforge.data.catalog import CATALOG
    from genforge.data.datasets import dataset_status
    from genforge.data.root import data_root

    if args.data_command == "fetch":
        from genforge.data.download import fetch

        if args.name not in CATALOG:
            raise GenforgeError(f"unknown dataset '{args.name}'; fetchable: {', '.join(CATALOG)}")
        folder = fetch(CATALOG[args.name], data_root(args.data_root), mirrors=args.mirror,
                       progress=not args.no_progress)
        print(f"genforge: {args.name} ready in {folder}")
        return 0
    for row in dataset_status(getattr(args, "data_root", None)):
        print(f"{row['name']:14s} {row['where']}\n{'':14s} {row['description']}")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "recipes": cmd_recipes, "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may stand anywhere after the recipe (argparse stops a nargs="*" at the first
    # option), so the key=value words it leaves over are collected here.
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        args.overrides += [word for word in extra if "=" in word and not word.startswith("-")]
        extra = [word for word in extra if word not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "data" and args.data_command is None:
        args.data_command = "list"
    try:
        return COMMANDS[args.command](args)
    except GenforgeError as e:
        print(f"genforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
