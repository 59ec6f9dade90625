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
    "eval": """examples:
  genforge eval runs/dcgan                      # 10,000 samples; writes runs/dcgan/eval.json
  genforge eval runs/vae --n 2000 --json        # the eval.json object on stdout
  genforge eval --real fashion-mnist            # the floor: held-out real images vs the test split""",
    "evaluator": """examples:
  genforge evaluator train mnist                # rewrites the shipped metrics/weights/mnist.safetensors
  genforge evaluator train fashion-mnist --out /tmp/fm.safetensors""",
    "translate": """examples:
  genforge translate runs/bags-shoes bag1.png photos/ --out translated      # bags -> shoes
  genforge translate runs/bags-shoes shoes/ --direction b2a --out bags
  genforge translate runs/bags-shoes --from-test --n 16 --out test-grid     # test images of domain A""",
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

    evaluate = command("eval", "score a run: FID, KID, precision/recall, class coverage (+ ELBO/NLL for VAEs)")
    evaluate.add_argument("run_dir", nargs="?", help="a run directory with a checkpoint")
    evaluate.add_argument("--real", metavar="DATASET", help="score held-out real images instead of a run (the floor)")
    evaluate.add_argument("--n", type=int, default=10_000, help="samples to generate (default 10000)")
    evaluate.add_argument("--seed", type=int, default=0, help="sampling and subset seed (default 0)")
    evaluate.add_argument("--json", action="store_true", help="print the result as one JSON object")
    evaluate.add_argument("--nll-samples", type=int, help="importance samples per test image for VAE NLL "
                                                           "(default: the run's train.eval_samples)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    evaluate.add_argument("--data-root", help="folder with datasets (default: $GENFORGE_DATA or ~/.cache/genforge)")

    evaluator = command("evaluator", "train the feature extractors the metrics use")
    evaluator_sub = evaluator.add_subparsers(dest="evaluator_command", metavar="ACTION")
    evaluator_train = evaluator_sub.add_parser("train", help="train a domain classifier (mnist, fashion-mnist)")
    evaluator_train.add_argument("name", help="extractor name: mnist or fashion-mnist")
    evaluator_train.add_argument("--out", help="weights file (default: the one shipped in the package)")
    evaluator_train.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    evaluator_train.add_argument("--threads", type=int, default=2, help="CPU threads; the file's bits depend on it (default 2)")
    evaluator_train.add_argument("--data-root", help="folder with datasets")
    evaluator_train.add_argument("--no-progress", action="store_true", help="no progress bar")

    translate = command("translate", "translate images between the domains of a DiscoGAN run")
    translate.add_argument("run_dir", help="a DiscoGAN run directory with a checkpoint")
    translate.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR", help="image files or folders of them")
    translate.add_argument("--direction", choices=("a2b", "b2a"), default="a2b", help="a2b (default) or b2a")
    translate.add_argument("--out", default="translated", help="output folder (default translated/)")
    translate.add_argument("--from-test", action="store_true", help="translate test images of the source domain")
    translate.add_argument("--n", type=int, default=16, help="test images with --from-test (default 16)")
    translate.add_argument("--seed", type=int, default=0, help="which test images (default 0)")
    translate.add_argument("--invert", action="store_true", help="invert grey levels first (dark-on-light photos)")
    translate.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    translate.add_argument("--data-root", help="folder with datasets (for --from-test)")
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
            cfg.train.minutes, cfg.train.steps = args.minutes, 0  # the clock is the only budget
        for key in ("seed", "device"):
            if getattr(args, key) is not None:
                setattr(cfg.train, key, getattr(args, key))
        run_dir = Path(args.run_dir or f"runs/{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}")
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
            raise GenforgeError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                                "or choose another --run-dir")
    if args.steps is not None and args.steps <= 0:
        raise GenforgeError(f"--steps must be positive, not {args.steps}")
    if args.minutes is not None and args.minutes <= 0:
        raise GenforgeError(f"--minutes must be positive, not {args.minutes}")
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


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from genforge.metrics.evaluate import evaluate_real, evaluate_run, format_table
    from genforge.runtime import resolve_device

    if args.n < 2:
        raise GenforgeError(f"--n must be at least 2, not {args.n}")
    if bool(args.run_dir) == bool(args.real):
        raise GenforgeError("name a run directory or --real DATASET (one of them)")
    device = resolve_device(args.device)
    if args.real:
        result = evaluate_real(args.real, args.n, args.seed, root=args.data_root, device=device)
    else:
        result = evaluate_run(args.run_dir, args.n, args.seed, device, args.data_root, args.nll_samples,
                              progress=not args.json)
    if args.json:
        print(json.dumps(result))
        return 0
    print(format_table(result))
    where = f" -> {Path(args.run_dir) / 'eval.json'}" if args.run_dir else ""
    print(f"genforge: {result['samples']} samples vs {result['reference']}, extractor {result['extractor']} "
          f"({result['extractor_sha256'][:12]}){where}", file=sys.stderr)
    return 0


def cmd_evaluator(args: argparse.Namespace) -> int:
    from genforge.metrics import EXTRACTOR_SHA256
    from genforge.metrics.extractor import train_extractor

    if args.evaluator_command != "train":
        raise GenforgeError("name an action: genforge evaluator train mnist|fashion-mnist")
    result = train_extractor(args.name, args.out, args.data_root, args.seed, args.threads, not args.no_progress)
    print(f"genforge: {args.name}: test accuracy {100 * result['test_accuracy']:.2f}% on {result['test_set']}, "
          f"trained on {result['train_set']} in {result['seconds']:.0f} s -> {result['path']}")
    if result["sha256"] == EXTRACTOR_SHA256.get(args.name):
        print(f"genforge: sha256 {result['sha256']} matches the recorded one")
    else:
        print(f"genforge: sha256 {result['sha256']} differs from the recorded one; to ship this file, set "
              f"EXTRACTOR_SHA256['{args.name}'] in src/genforge/metrics/__init__.py")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from genforge.runtime import resolve_device
    from genforge.translate import translate_files, translate_test

    device = resolve_device(args.device)
    if args.from_test == bool(args.inputs):
        raise GenforgeError("name image files/folders or --from-test (one of them)")
    if args.from_test:
        result = translate_test(args.run_dir, args.n, args.direction, args.out, args.seed, device, args.data_root)
    else:
        result = translate_files(args.run_dir, args.inputs, args.direction, args.out, device, args.invert)
    for path, why in result.skipped:
        print(f"genforge: skipped {path}: {why}", file=sys.stderr)
    count = len(result.written) - 1
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    print(f"genforge: {count} image{'s' if count != 1 else ''} translated {args.direction}{skipped} -> {result.out_dir} "
          f"(grid: {result.grid})", file=sys.stderr)
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "recipes": cmd_recipes, "data": cmd_data,
            "eval": cmd_eval, "evaluator": cmd_evaluator, "translate": cmd_translate}


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
