"""The ``genforge`` command: a thin shell over the library (parse -> call -> print).

Nothing heavy is imported at start-up; each subcommand imports what it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from genforge.errors import GenforgeError

EPILOGS = {
    "train": """examples:
  genforge train mnist-vae --steps 3000
  genforge train mnist-dcgan --minutes 5 --run-dir runs/dcgan optim.lr=1e-4 train.batch_size=128
  genforge train mnist-vae model.latent_dim=2          # the classic 2-D manifold grid
  genforge train --resume runs/dcgan --steps 6000       # continue to step 6000 in total
  genforge train --resume runs/dcgan --from step-0000500   # from an earlier checkpoint (the newest is damaged)
  genforge train ring-8 --seeds 3 --run-dir runs/ring  # 3 seeds in turn; the best by eval/modes -> runs/ring/best""",
    "sample": """examples:
  genforge sample runs/dcgan --n 64 --out grid.png
  genforge sample runs/vae --n 16 --out g.png --seed 3
  genforge sample runs/cgan --class 7 --n 16 --out sevens.png      # a conditional GAN's class
  genforge sample runs/cgan --by-class --n 10 --out classes.png    # row k = class k, 10 per row
  genforge sample runs/dcgan --n 8 --out g.png --save-z z.safetensors   # keep the noise (.safetensors or .npy)
  genforge sample runs/pokemon --n 64 --nearest --out pairs.png   # each sample beside its nearest training image
  genforge sample runs/dcgan --n 64 --reject 0.99 --out drs.png    # discriminator rejection sampling""",
    "interpolate": """examples:
  genforge interpolate runs/dcgan --steps 10 --out strip.png
  genforge interpolate runs/dcgan --steps 10 --rows 4 --slerp --out slerp.png
  genforge interpolate runs/dcgan --from a.safetensors --to b.safetensors --out ab.png""",
    "arithmetic": """examples:
  genforge sample runs/dcgan --n 3 --seed 1 --save-z a.safetensors --out a.png   # pick three samples per concept
  genforge arithmetic runs/dcgan --a a.safetensors --b b.safetensors --c c.safetensors --out abc.png""",
    "fuse": """examples:
  genforge fuse runs/pokemon-vae 1.png 4.png --out fusion.png          # a | 8 decoded steps | b
  genforge fuse runs/pokemon-vae a.png b.png --steps 12 --out ab.png   # a longer walk""",
    "bench": """examples:
  genforge bench toys --seeds 5                        # minimax / non-saturating / WGAN-GP on ring-8 and grid-25
  genforge bench toys --seeds 2 --steps 500 --toy ring-8 --config wgan-gp""",
    "recipes": """examples:
  genforge recipes
  genforge recipes --show mnist-dcgan""",
    "data": """examples:
  genforge data list
  genforge data fetch fashion-mnist
  genforge data fetch mnist --data-root /data/genforge
  genforge data fetch pokemon                   # official artwork 1..1025.png -> <data root>/pokemon/artwork
  genforge data fetch pokemon --count 151       # the first generation only""",
    "eval": """examples:
  genforge eval runs/dcgan                      # 10,000 samples; writes runs/dcgan/eval.json
  genforge eval runs/vae --n 2000 --json        # the eval.json object on stdout
  genforge eval runs/dcgan --from step-0002000  # an earlier checkpoint: writes runs/dcgan/eval-step-0002000.json
  genforge eval --real fashion-mnist            # the floor: held-out real images vs the test split
  genforge eval runs/pokemon                    # image folders: pixel-space FID/KID, colours, copy check""",
    "evaluator": """examples:
  genforge evaluator train mnist                # -> ~/.cache/genforge/extractors/mnist.safetensors (never the shipped one)
  genforge evaluator train fashion-mnist --out /tmp/fm.safetensors""",
    "translate": """examples:
  genforge translate runs/bags-shoes bag1.png photos/ --out translated      # bags -> shoes
  genforge translate runs/bags-shoes shoes/ --direction b2a --out bags
  genforge translate runs/bags-shoes --from-test --n 16 --out test-grid     # test images of domain A""",
    "compare": """examples:
  genforge compare runs/ring-gan runs/ring-recongan runs/ring-discogan --out variants.png
  genforge compare runs/bags-gan runs/bags-discogan --n 6 --out bags.png""",
    "export": """examples:
  genforge export runs/dcgan --format onnx --out dcgan-onnx          # generator.onnx: noise -> images in [0, 1]
  genforge export runs/vae --format torchscript --out vae-ts          # decoder.pt and encoder.pt for libtorch
  genforge export runs/dcgan --format folder --out dcgan-model --live # safetensors + config + model card
  genforge export runs/dcgan --format folder --out dcgan-model --force   # replace an earlier export""",
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals as one line like every other genforge error (it printed the usage
    block first, and a prefix of its own)."""

    def error(self, message: str):
        self.exit(2, f"genforge: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="genforge", description="Train, sample and evaluate deep generative models.",
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
    train.add_argument("--from", dest="from_checkpoint", metavar="step-N",
                       help="with --resume: the checkpoint to continue from, e.g. step-0000240 (default: the newest)")
    train.add_argument("--run-dir", help="where the run is written (default: runs/RECIPE-TIMESTAMP)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="total steps of the run, in place of the recipe's train.steps and "
                        "train.minutes (a resumed run stops at this step)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget in minutes, in place of the recipe's "
                        "train.steps and train.minutes")
    train.add_argument("--seed", type=int, help="seed (default: the recipe's, 0)")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    train.add_argument("--data-root", help="folder with datasets (default: $GENFORGE_DATA or ~/.cache/genforge)")
    train.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    _no_progress(train)
    train.add_argument("--seeds", type=int, help="train this many seeds in turn (seed, seed+1, ...) into "
                                                 "RUN_DIR/seed-S and copy the best to RUN_DIR/best")
    train.add_argument("--metric", help="final eval metric that picks the best seed (default: the family's first)")

    sample = command("sample", "draw samples from a trained run into a PNG grid")
    sample.add_argument("run_dir", help="a run directory with a checkpoint")
    sample.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    sample.add_argument("--out", default="samples.png", help="output PNG (default samples.png)")
    sample.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    sample.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    sample.add_argument("--class", dest="label", type=int, help="class to draw (conditional GANs)")
    sample.add_argument("--by-class", action="store_true", help="one row per class, --n per row (conditional GANs)")
    sample.add_argument("--save-z", metavar="FILE", help="also save the noise vectors (.safetensors or .npy)")
    sample.add_argument("--from", dest="from_checkpoint", metavar="step-N",
                        help="sample from this checkpoint of the run (default: the newest)")
    sample.add_argument("--reject", type=float, metavar="Q",
                        help="discriminator rejection sampling (unconditional BCE GANs): keep a sample with "
                             "probability min(1, exp(logit - t)), t the quantile Q of D's logits, e.g. 0.99; "
                             "0 = off (default: the run's model.reject)")
    sample.add_argument("--nearest", action="store_true",
                        help="show each sample beside its nearest training image (the evaluation classifier's "
                             "features for MNIST/Fashion-MNIST, else pixels at 32x32): a copy check")
    sample.add_argument("--data-root", help="folder with datasets, for --nearest (default: $GENFORGE_DATA or "
                                            "~/.cache/genforge)")

    interpolate = command("interpolate", "walk the latent space between two noise vectors into a PNG strip")
    interpolate.add_argument("run_dir", help="a run directory with a checkpoint")
    interpolate.add_argument("--steps", type=int, default=10, help="images per path (default 10)")
    interpolate.add_argument("--rows", type=int, default=1, help="paths, one per row (default 1)")
    interpolate.add_argument("--slerp", action="store_true", help="spherical instead of linear interpolation")
    interpolate.add_argument("--from", dest="start", metavar="FILE", help="start noise (first vector of a z file)")
    interpolate.add_argument("--to", dest="stop", metavar="FILE", help="end noise (first vector of a z file)")
    interpolate.add_argument("--out", default="interpolation.png", help="output PNG (default interpolation.png)")
    interpolate.add_argument("--seed", type=int, default=0, help="noise seed of the end points (default 0)")
    _device_and_data(interpolate, "for toy runs' backdrop of data points")

    arith = command("arithmetic", "latent arithmetic A - B + C on saved noise vectors (each file averaged)")
    arith.add_argument("run_dir", help="a run directory with a checkpoint")
    arith.add_argument("--a", required=True, metavar="FILE", help="noise vectors of concept A (.safetensors/.npy)")
    arith.add_argument("--b", required=True, metavar="FILE", help="noise vectors of concept B, subtracted")
    arith.add_argument("--c", required=True, metavar="FILE", help="noise vectors of concept C, added")
    arith.add_argument("--out", default="arithmetic.png", help="strip: mean A, mean B, mean C, A - B + C")
    arith.add_argument("--save-z", metavar="FILE", help="also save the result vector")
    _device_and_data(arith, "for toy runs' backdrop of data points")

    fuse = command("fuse", "fuse two images with a VAE: encode both and decode the walk between their latent codes")
    fuse.add_argument("run_dir", help="a VAE run directory with a checkpoint")
    fuse.add_argument("image_a", help="first image file (PNG, JPEG, GIF, WebP, BMP), decoded as the run's data")
    fuse.add_argument("image_b", help="second image file")
    fuse.add_argument("--steps", type=int, default=8, help="decoded images from a's code to b's (default 8)")
    fuse.add_argument("--out", default="fusion.png", help="output PNG strip: a, the steps, b (default fusion.png)")
    fuse.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")

    runs = command("runs", "list the runs in a folder: recipe, status, step, speed and headline metrics")
    runs.add_argument("root", nargs="?", help="folder of run folders (default runs/)")
    runs.add_argument("--json", action="store_true", help="print the list as one JSON array")

    bench = command("bench", "benchmarks that print figures")
    bench.add_argument("suite", choices=("toys",), help="toys: GAN losses on ring-8 and grid-25 vs PacGAN's numbers")
    bench.add_argument("--seeds", type=int, default=5, help="seeds per configuration (default 5)")
    bench.add_argument("--steps", type=int, help="training steps per run (default: the recipes')")
    bench.add_argument("--toy", action="append", help="only this toy (repeatable): ring-8, grid-25")
    bench.add_argument("--config", action="append", help="only this configuration (repeatable)")
    bench.add_argument("--out", default="runs/bench-toys", help="folder of the runs (default runs/bench-toys)")
    bench.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    bench.add_argument("--one-by-one", action="store_true", help="train each seed alone, not a configuration's "
                       "seeds as one batched model")
    bench.add_argument("--workers", type=int, default=0,
                       help="runs side by side, each in its own process (default 0: one per CPU core)")

    recipes = command("recipes", "list the built-in recipes")
    recipes.add_argument("--show", metavar="RECIPE", help="print every config key of a recipe with its help")

    data = command("data", "list or fetch datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_list = data_sub.add_parser("list", help="known datasets and where they are")
    data_list.add_argument("--data-root", help="folder with datasets")
    fetch = data_sub.add_parser("fetch", help="download a dataset with checksum verification")
    fetch.add_argument("name", help="dataset name (mnist, fashion-mnist, pokemon)")
    fetch.add_argument("--data-root", help="folder to download into (default: $GENFORGE_DATA or ~/.cache/genforge)")
    fetch.add_argument("--mirror", action="append", help="base URL to fetch from instead of the public mirrors")
    _no_progress(fetch)
    fetch.add_argument("--count", type=int, help="image folders (pokemon): fetch 1.png .. COUNT.png "
                                                 "(default: all, 1025 for pokemon)")

    evaluate = command("eval", "score a run: FID, KID, precision/recall, class coverage (+ ELBO/NLL for VAEs; "
                               "pixel-space statistics and a copy check for image folders)")
    evaluate.add_argument("run_dir", nargs="?", help="a run directory with a checkpoint")
    evaluate.add_argument("--real", metavar="DATASET", help="score held-out real images instead of a run (the floor)")
    evaluate.add_argument("--n", type=int, default=10_000, help="samples to generate (default 10000; toy points are "
                          "judged by their protocol's own count: 2,500 samples, or every test point of a DiscoGAN toy; "
                          "an image DiscoGAN translates 1,000 test images per domain)")
    evaluate.add_argument("--seed", type=int, default=0, help="sampling and subset seed (default 0)")
    evaluate.add_argument("--json", action="store_true", help="print the result as one JSON object")
    evaluate.add_argument("--nll-samples", type=int, help="importance samples per test image for VAE NLL "
                                                           "(default: the run's train.eval_samples)")
    evaluate.add_argument("--from", dest="from_checkpoint", metavar="step-N",
                          help="score this checkpoint of the run, into RUN/eval-step-N.json (default: the newest, "
                               "into RUN/eval.json, the run's final figures)")
    _device_and_data(evaluate)

    evaluator = command("evaluator", "train the feature extractors the metrics use")
    evaluator_sub = evaluator.add_subparsers(dest="evaluator_command", metavar="ACTION")
    evaluator_train = evaluator_sub.add_parser("train", help="train a domain classifier (mnist, fashion-mnist)")
    evaluator_train.add_argument("name", help="extractor name: mnist or fashion-mnist")
    evaluator_train.add_argument("--out", help="weights file (default: ~/.cache/genforge/extractors/NAME.safetensors; "
                                                "the package's own file is never overwritten)")
    evaluator_train.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    evaluator_train.add_argument("--threads", type=int, default=2, help="CPU threads; the file's bits depend on it (default 2)")
    evaluator_train.add_argument("--data-root", help="folder with datasets")
    _no_progress(evaluator_train)

    translate = command("translate", "translate images between the domains of a DiscoGAN run")
    translate.add_argument("run_dir", help="a DiscoGAN run directory with a checkpoint")
    translate.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR", help="image files or folders of them")
    translate.add_argument("--direction", choices=("a2b", "b2a"), default="a2b", help="a2b (default) or b2a")
    translate.add_argument("--out", default="translated", help="output folder (default translated/)")
    translate.add_argument("--from-test", action="store_true", help="translate test images of the source domain")
    translate.add_argument("--n", type=int, default=16, help="test images with --from-test (default 16)")
    translate.add_argument("--seed", type=int, default=0, help="which test images (default 0)")
    translate.add_argument("--invert", action="store_true", help="invert grey levels first (dark-on-light photos)")
    _device_and_data(translate, "for --from-test")

    compare = command("compare", "DiscoGAN runs side by side (e.g. the gan, recongan and discogan variants)")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="DiscoGAN run directories of one dataset")
    compare.add_argument("--out", default="compare.png", help="output image (default compare.png)")
    compare.add_argument("--n", type=int, default=8, help="test images per run for image datasets (default 8)")
    compare.add_argument("--seed", type=int, default=0, help="which test images (default 0)")
    compare.add_argument("--data-root", help="folder with datasets")

    export = command("export", "export a run's sampling networks: ONNX, TorchScript, or a model folder with a card")
    export.add_argument("run_dir", help="a run directory with a checkpoint")
    export.add_argument("--format", required=True, help="onnx, torchscript or folder (safetensors + config.json + "
                                                        "README.md model card; genforge.load reads it)")
    export.add_argument("--out", required=True, help="the folder to write (refused if it exists, without --force)")
    weights = export.add_mutually_exclusive_group()
    weights.add_argument("--ema", dest="weights", action="store_const", const="ema",
                         help="the EMA weights (the default where the run kept them; refused where it did not)")
    weights.add_argument("--live", dest="weights", action="store_const", const="live", help="the live weights")
    export.add_argument("--force", action="store_true", help="replace --out (a file, an empty folder or an earlier export)")
    export.add_argument("--from", dest="from_checkpoint", metavar="step-N",
                        help="export this checkpoint of the run (default: the newest)")

    studio = command("studio", "the local web studio: watch, train, explore and evaluate runs in the browser")
    studio.add_argument("--runs", default="runs", help="the runs folder it shows (default ./runs)")
    studio.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs a token)")
    studio.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    studio.add_argument("--token", help="token every request must carry (generated when the host is not loopback)")
    studio.add_argument("--max-trainings", type=int, help="trainings at once (default: one per CPU core)")
    studio.add_argument("--data-root", help="folder with datasets (default: $GENFORGE_DATA or ~/.cache/genforge)")
    return parser


def _no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _device_and_data(parser: argparse.ArgumentParser, why: str = "") -> None:
    """The --device and --data-root options that most commands share."""
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--data-root", help=f"folder with datasets{', ' + why if why else ''} "
                                            "(default: $GENFORGE_DATA or ~/.cache/genforge)")


def _version() -> str:
    from genforge._version import __version__

    return f"genforge {__version__}"


def _train_budget(args: argparse.Namespace) -> dict:
    return {"steps": args.steps, "minutes": args.minutes}


def cmd_train(args: argparse.Namespace) -> int:
    from genforge import api

    restart = None if args.resume or args.dry_run else api.torchrun_restart(args.run_dir)
    if args.resume:
        if args.recipe or args.run_dir or args.seed is not None or args.seeds is not None:
            raise GenforgeError("--resume takes a run directory (plus --steps/--minutes/--device and keys that do not "
                                "change the model, e.g. train.threads=1); its config is read from RUN_DIR/config.json")
        overrides = args.overrides + ([f"train.device={args.device}"] if args.device else [])
        cfg = api.resume_config(args.resume, overrides=overrides, start=args.from_checkpoint, **_train_budget(args))
        run_dir = Path(args.resume)
    elif restart:  # torchrun restarted the group (--max-restarts): go on from the run's last checkpoint
        cfg = api.resume_config(args.run_dir, **_train_budget(args))
        run_dir, args.resume = Path(args.run_dir), args.run_dir
    else:
        if args.from_checkpoint:
            raise GenforgeError("--from names the checkpoint a resume starts from: genforge train --resume RUN_DIR "
                                "--from step-N")
        if not args.recipe:
            raise GenforgeError("name a recipe (see `genforge recipes`) or --resume RUN_DIR")
        if not args.run_dir and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise GenforgeError("under torchrun, name the run directory with --run-dir (every process must "
                                "agree on it)")
        cfg = api.check_config(args.recipe, args.overrides, seed=args.seed, device=args.device, **_train_budget(args))
        fresh = not args.dry_run and restart is None  # a restart before the first checkpoint starts over in place
        run_dir = api.new_run_dir(cfg, args.run_dir) if fresh else Path(args.run_dir or "-")
    if args.dry_run:
        import json

        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if args.seeds is not None:
        from genforge.bench import SeedsInterrupted, format_seeds, train_seeds

        if args.seeds < 1:
            raise GenforgeError(f"--seeds takes a positive count, not {args.seeds}")
        try:
            best, rows = train_seeds(cfg, run_dir, args.seeds, args.metric, args.data_root, not args.no_progress,
                                     log=lambda line: print(line, file=sys.stderr))
        except SeedsInterrupted as stop:
            print(f"genforge: interrupted in {stop.folder} ({stop.started} of {stop.total} seeds begun; checkpoint "
                  f"saved, no best seed chosen). Continue it with: genforge train --resume {stop.folder}",
                  file=sys.stderr)
            return 130
        print(format_seeds(rows))
        if best is None:
            print(f"genforge: no final metric ranks {cfg.recipe}'s seeds, so none is copied to best; score each "
                  f"with genforge eval {run_dir / 'seed-S'}", file=sys.stderr)
        else:
            print(f"genforge: best seed -> {best}", file=sys.stderr)
        return 0
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 alone reports
    if args.resume:
        banner = (f"genforge: resuming {cfg.recipe} ({cfg.family}) in {run_dir} from "
                  f"{args.from_checkpoint or f'step {api.open_run(run_dir).checkpoint_step()}'}")
        newer = api.abandoned_checkpoints(run_dir, args.from_checkpoint)
        if newer:
            them = "it" if len(newer) == 1 else "them"
            banner += (f"\ngenforge: warning: this abandons the newer {', '.join(newer)}: the run's next checkpoint "
                       f"removes {them} (copy {run_dir / 'checkpoints'} aside to keep {them})")
    else:
        banner = f"genforge: training {cfg.recipe} ({cfg.family}) into {run_dir}"
    # said once the data and checkpoint passed their checks: a refused run prints its error line alone
    result = api.train_run(cfg, run_dir, resume=bool(args.resume), data_root=args.data_root,
                           progress=not args.no_progress, start=args.from_checkpoint,
                           on_start=(lambda: print(banner, file=sys.stderr)) if main_rank else None)
    if not main_rank:
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"genforge: interrupted at step {result.step}; checkpoint saved. "
              f"Continue with: genforge train --resume {run_dir}", file=sys.stderr)
        return 130
    for key, value in result.metrics.items():
        print(f"{key:28s} {value:.4f}")
    print(f"genforge: done at step {result.step}: {run_dir}", file=sys.stderr)
    return 0


def _save_picture(loaded, samples, out: str, data_root: str | None = None, nrow: int | None = None,
                  title: str = "", paths: int = 0) -> Path:
    from genforge import api, viz

    return viz.save_grid_image(api.picture(loaded, samples, data_root, nrow, title, paths), out)


def cmd_sample(args: argparse.Namespace) -> int:
    from genforge import api

    api._count(args.n)
    if args.reject is not None and args.save_z:
        raise GenforgeError("--reject chooses which noise to keep; it does not combine with --save-z")
    if args.by_class:  # they were dropped without a word (and --class 7 drew every class)
        clash = [flag for flag, given in (("--class", args.label is not None), ("--save-z", bool(args.save_z)),
                                          ("--reject", args.reject is not None)) if given]
        if clash:
            raise GenforgeError(f"--by-class draws --n samples of every class; it does not combine with "
                                f"{' or '.join(clash)}")
    loaded = api.load(args.run_dir, args.device, args.from_checkpoint)
    nrow = None
    if args.by_class:
        samples, nrow = api.class_grid(loaded, args.n, args.seed), args.n
    elif args.save_z:
        from genforge import latent

        z = api.noise(loaded, args.n, args.seed, args.label)
        samples = api.generate(loaded, z)
        print(f"genforge: noise -> {latent.save_latents(z, args.save_z)}", file=sys.stderr)
    else:
        samples = api.sample(loaded, args.n, args.seed, args.label, args.reject)
    if args.nearest:
        found = api.nearest(loaded, samples, args.data_root)
        from genforge import viz

        path = viz.save_grid_image(viz.pair_grid(samples, found.images, nrow), args.out)
        closest = int(found.distances.argmin())
        print(f"genforge: {samples.shape[0]} samples from step {loaded.step}, each beside its nearest training image "
              f"({found.space}; mean distance {float(found.distances.mean()):.4g}, closest pair "
              f"{float(found.distances[closest]):.4g}: sample {closest} ~ {_quoted(found.names[closest])}) -> {path}",
              file=sys.stderr)
        return 0
    kept = f" ({samples.shape[0]} kept by rejection)" if args.reject else ""
    drawn = f"{samples.shape[0]} samples ({args.n} per class)" if args.by_class else f"{args.n} samples"
    path = _save_picture(loaded, samples, args.out, args.data_root, nrow,
                         title=f"{loaded.cfg.recipe}: {samples.shape[0]} samples, step {loaded.step}")
    print(f"genforge: {drawn}{kept} from step {loaded.step} -> {path}", file=sys.stderr)
    return 0


def _quoted(name: str) -> str:
    """A file name as printed: control characters escaped, so a name cannot forge an output line."""
    return name if name.isprintable() else repr(name)


def cmd_interpolate(args: argparse.Namespace) -> int:
    from genforge import api, latent

    if bool(args.start) != bool(args.stop):
        raise GenforgeError("give both --from and --to, or neither")
    loaded = api.load(args.run_dir, args.device)
    ends = (latent.load_latents(args.start)[0], latent.load_latents(args.stop)[0]) if args.start else None
    samples = api.interpolate(loaded, args.steps, args.rows, args.slerp, args.seed, ends)
    kind = "spherical" if args.slerp else "linear"
    path = _save_picture(loaded, samples, args.out, args.data_root, nrow=args.steps, paths=args.rows,
                         title=f"{loaded.cfg.recipe}: {args.rows} {kind} latent path(s)")
    print(f"genforge: {args.rows} {kind} path(s) of {args.steps} from step {loaded.step} -> {path}", file=sys.stderr)
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from genforge import api, viz

    loaded = api.load(args.run_dir, args.device)
    api.check_fusion(loaded)  # a GAN or toy run is refused for what it is, not for its images
    images = []
    for name in (args.image_a, args.image_b):
        try:
            data = Path(name).read_bytes()
        except OSError as e:
            raise GenforgeError(f"{_quoted(name)}: cannot read it ({e.strerror or e})") from None
        images.append(api.decode_image_bytes(data, loaded, name))
    strip = api.fuse(loaded, images[0], images[1], args.steps)
    path = viz.save_grid(strip, args.out, nrow=strip.shape[0], scale=3)
    print(f"genforge: {_quoted(args.image_a)} -> {_quoted(args.image_b)} in {args.steps} steps from step "
          f"{loaded.step} -> {path}", file=sys.stderr)
    return 0


def cmd_arithmetic(args: argparse.Namespace) -> int:
    from genforge import api, latent

    loaded = api.load(args.run_dir, args.device)
    a, b, c = (latent.load_latents(path) for path in (args.a, args.b, args.c))
    samples = api.arithmetic(loaded, a, b, c)
    path = _save_picture(loaded, samples, args.out, args.data_root, nrow=4, paths=1,
                         title=f"{loaded.cfg.recipe}: mean A -> mean B -> mean C -> A - B + C")
    if args.save_z:
        latent.save_latents(latent.arithmetic(a, b, c), args.save_z)
    print(f"genforge: mean A, mean B, mean C, A - B + C from step {loaded.step} -> {path}", file=sys.stderr)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from genforge import api

    if args.root is not None and not Path(args.root).is_dir():  # the default runs/ may not exist yet: no error
        raise GenforgeError(f"{_quoted(args.root)}: {'not a folder' if Path(args.root).exists() else 'no such folder'}")
    args.root = args.root or "runs"
    runs = api.list_runs(args.root)
    if args.json:
        print(json.dumps([run.to_dict() for run in runs]))
        return 0
    if not runs:
        print(f"genforge: no runs under {args.root}", file=sys.stderr)
        return 0
    print(f"{'run':34s} {'recipe':18s} {'status':11s} {'step':>13s} {'img/s':>8s}  headline")
    for run in runs:
        budget = f"/{run.total_steps}" if run.total_steps else ""
        speed = f"{run.images_per_s:8.0f}" if run.images_per_s is not None else f"{'-':>8s}"
        headline = run.problem or ", ".join(f"{k.removeprefix('eval/')} {v:.4g}" for k, v in list(run.headline.items())[:3])
        print(f"{_quoted(run.id)[:34]:34s} {run.recipe[:18]:18s} {run.status:11s} {f'{run.step}{budget}':>13s} "
              f"{speed}  {headline}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from genforge.bench import TOY_CONFIGS, TOYS, format_bench, toy_bench

    for toy in args.toy or ():
        if toy not in TOYS:
            raise GenforgeError(f"unknown toy '{toy}'; use {', '.join(TOYS)}")
    for name in args.config or ():
        if name not in TOY_CONFIGS:
            raise GenforgeError(f"unknown configuration '{name}'; use {', '.join(TOY_CONFIGS)}")
    if args.seeds < 1:
        raise GenforgeError(f"--seeds must be positive, not {args.seeds}")
    if args.workers < 0 or args.threads < 1:
        raise GenforgeError("--workers must be 0 (one per core) or more, and --threads 1 or more")
    from genforge.threads import cores

    workers = args.workers or max(1, cores() // args.threads)
    start = time.monotonic()
    rows = toy_bench(args.out, args.seeds, args.steps, args.toy or TOYS, args.config, threads=args.threads,
                     workers=workers, log=lambda line: print(line, file=sys.stderr), batched=not args.one_by_one)
    print(format_bench(rows))
    print(f"genforge: {sum(len(r.seconds) for r in rows)} runs in {(time.monotonic() - start) / 60:.1f} min "
          f"-> {args.out}", file=sys.stderr)
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
    from genforge.data.catalog import CATALOG, FOLDER_SETS
    from genforge.data.datasets import dataset_status
    from genforge.data.root import data_root

    if args.data_command == "fetch":
        from genforge.data.download import fetch

        specs = {**CATALOG, **FOLDER_SETS}
        if args.name not in specs:
            raise GenforgeError(f"unknown dataset '{args.name}'; fetchable: {', '.join(specs)}")
        folder = fetch(specs[args.name], data_root(args.data_root), mirrors=args.mirror, count=args.count,
                       progress=not args.no_progress)
        manifest = f" (SHA-256 of every file in {folder / FOLDER_SETS[args.name].manifest})" \
            if args.name in FOLDER_SETS else ""
        print(f"genforge: {args.name} ready in {folder}{manifest}")
        return 0
    for row in dataset_status(getattr(args, "data_root", None)):
        print(f"{row['name']:14s} {row['where']}\n{'':14s} {row['description']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from genforge import api
    from genforge.metrics.evaluate import format_table

    if bool(args.run_dir) == bool(args.real):
        raise GenforgeError("name a run directory or --real DATASET (one of them)")
    if args.real and args.from_checkpoint:
        raise GenforgeError("--from names a checkpoint of a run; --real scores real images, which have none")
    if args.real:
        result = api.real_floor(args.real, args.n, args.seed, args.device, args.data_root)
    else:
        result = api.evaluate(args.run_dir, args.n, args.seed, args.device, args.data_root, args.nll_samples,
                              show_progress=not args.json, checkpoint=args.from_checkpoint)
    if args.json:
        print(json.dumps(result))
        return 0
    print(format_table(result))
    written = api.eval_file_name(result["step"] if args.from_checkpoint else None)
    where = f" -> {Path(args.run_dir) / written}" if args.run_dir else ""
    extractor = f", extractor {result['extractor']} ({result['extractor_sha256'][:12]})" if "extractor" in result else ""
    print(f"genforge: {result.get('samples', '?')} samples vs {result.get('reference', '?')}{extractor}{where}",
          file=sys.stderr)
    return 0


def cmd_evaluator(args: argparse.Namespace) -> int:
    from genforge.metrics import EXTRACTOR_SHA256
    from genforge.metrics.extractor import train_extractor

    if args.evaluator_command != "train":
        raise GenforgeError("name an action: genforge evaluator train mnist|fashion-mnist")
    out = args.out or _user_extractor_path(args.name)  # never the file shipped inside the package
    result = train_extractor(args.name, out, args.data_root, args.seed, args.threads, not args.no_progress)
    print(f"genforge: {args.name}: test accuracy {100 * result['test_accuracy']:.2f}% on {result['test_set']}, "
          f"trained on {result['train_set']} in {result['seconds']:.0f} s -> {result['path']}")
    if result["sha256"] == EXTRACTOR_SHA256.get(args.name):
        print(f"genforge: sha256 {result['sha256']} matches the recorded one")
    else:
        print(f"genforge: sha256 {result['sha256']} differs from the recorded one; to ship this file, set "
              f"EXTRACTOR_SHA256['{args.name}'] in src/genforge/metrics/__init__.py")
    return 0


def _user_extractor_path(name: str) -> Path:
    """Where `genforge evaluator train` writes by default: the user's cache, not the installed package."""
    from genforge.data.root import cache_dir

    folder = cache_dir("extractors")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.safetensors"


def cmd_translate(args: argparse.Namespace) -> int:
    from genforge.api import translate_files, translate_test
    from genforge.runtime import resolve_device

    device = resolve_device(args.device)
    if args.from_test == bool(args.inputs):
        raise GenforgeError("name image files/folders or --from-test (one of them)")
    if args.from_test:
        result = translate_test(args.run_dir, args.n, args.direction, args.out, args.seed, device, args.data_root)
    else:
        result = translate_files(args.run_dir, args.inputs, args.direction, args.out, device, args.invert)
    for path, why in result.skipped:
        print(f"genforge: skipped {_quoted(path)}: {why}", file=sys.stderr)
    count = len(result.written) - 1
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    print(f"genforge: {count} image{'s' if count != 1 else ''} translated {args.direction}{skipped} -> {result.out_dir} "
          f"(grid: {result.grid})", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from genforge.api import compare_runs

    if args.n <= 0:
        raise GenforgeError(f"--n must be positive, not {args.n}")
    path = compare_runs(args.run_dirs, args.out, args.n, args.seed, args.data_root)
    print(f"genforge: {len(args.run_dirs)} runs side by side -> {path}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from genforge import api

    result = api.export(args.run_dir, args.format, args.out, weights=args.weights or "auto", force=args.force,
                        checkpoint=args.from_checkpoint)
    print(f"genforge: exported {result.line()}", file=sys.stderr)
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    try:
        from genforge.web.server import serve
    except ImportError as e:
        raise GenforgeError(f"the studio needs the web extra ({e.name} is missing): pip install -e '.[web]'") from None
    if args.max_trainings is not None and args.max_trainings < 1:
        raise GenforgeError(f"--max-trainings must be at least 1, not {args.max_trainings}")
    serve(args.runs, host=args.host, port=args.port, token=args.token, data_root=args.data_root,
          max_trainings=args.max_trainings)
    return 0


LATENT_SUFFIXES = (".safetensors", ".npy")  # genforge.latent's (not imported here: it loads torch)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# what each command writes: (option, the suffixes it takes, or None for a folder)
OUTPUTS = {"sample": [("out", IMAGE_SUFFIXES), ("save_z", LATENT_SUFFIXES)],
           "interpolate": [("out", IMAGE_SUFFIXES)], "fuse": [("out", IMAGE_SUFFIXES)],
           "arithmetic": [("out", IMAGE_SUFFIXES), ("save_z", LATENT_SUFFIXES)],
           "compare": [("out", (*IMAGE_SUFFIXES, ".pdf", ".svg"))], "translate": [("out", None)],
           "export": [("out", None)]}
RUN_FILES = ("checkpoints", "config.json", "status.json", "metrics.jsonl", "lock", "eval.json", "samples", "plots")


def check_output(path: str, option: str, suffixes: tuple[str, ...] | None) -> None:
    """Refuse, before any work, an output the command could not write or must not: a file name
    with a suffix it cannot write, a folder where a file is wanted, or a run's own files (its
    checkpoints, config, records), which an output would overwrite."""
    target = Path(path)
    flag = f"--{option.replace('_', '-')}"
    if suffixes is not None:
        if target.is_dir():
            raise GenforgeError(f"{flag} {_quoted(path)} is a folder: name a file in it, e.g. "
                                f"{_quoted(str(target / ('out' + suffixes[0])))}")
        if target.suffix.lower() not in suffixes:
            listed = ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else suffixes[0]
            raise GenforgeError(f"{flag} {_quoted(path)}: the file name must end in {listed}")
    from genforge.runs import enclosing_run

    resolved = target.resolve()
    folder = enclosing_run(resolved.parent)  # the nearest run the output lies in
    if folder is not None:
        part = resolved.relative_to(folder).parts[0]
        if part in RUN_FILES:
            raise GenforgeError(f"{flag} {_quoted(path)} would overwrite the run {_quoted(str(folder))}'s own "
                                f"{part}: write it elsewhere")


def _interrupted(error: BaseException) -> bool:
    """Whether Ctrl-C is behind ``error`` (a library import that fails because it was interrupted)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def os_error_line(error: OSError) -> str:
    """An operating-system refusal (read-only disk, a file where a folder is wanted, no permission) as
    one line naming the path; a hidden temporary file genforge writes beside a target names its folder."""
    name = error.filename
    what = error.strerror or str(error)
    if name is None:
        return what
    path = Path(os.fsdecode(name))
    if path.name.startswith(".") and ".tmp" in path.name:  # atomic_output's temporary beside the target
        return f"cannot write into {_quoted(str(path.parent))}: {what}"
    return f"{_quoted(str(path))}: {what}"


COMMANDS = {"compare": cmd_compare, "runs": cmd_runs, "train": cmd_train, "sample": cmd_sample, "recipes": cmd_recipes, "data": cmd_data,
            "eval": cmd_eval, "evaluator": cmd_evaluator, "translate": cmd_translate,
            "interpolate": cmd_interpolate, "arithmetic": cmd_arithmetic, "bench": cmd_bench, "studio": cmd_studio,
            "export": cmd_export, "fuse": cmd_fuse}


def _answer_sigint() -> None:
    """A training answers SIGINT (Ctrl-C, the studio's Stop) from its start, even when the process that
    started it ignored the signal (a job sent to the background, a service): Python then leaves it
    ignored, and a Stop during the start-up was lost while the run trained on. Its loop installs its
    own handler regardless (one checkpoint, then exit)."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _check_data_root(args: argparse.Namespace) -> None:
    """A --data-root that is not a folder is a slip (a typo): every command but `data fetch`, which makes
    it, only reads datasets from it, and `data list` said every dataset was missing."""
    root = getattr(args, "data_root", None)
    if not root or (args.command == "data" and args.data_command == "fetch"):
        return
    path = Path(root).expanduser()
    if path.is_file():
        raise GenforgeError(f"--data-root {root}: a file, not a folder of datasets")
    if not path.is_dir():
        raise GenforgeError(f"--data-root {root}: no such folder (`genforge data fetch NAME --data-root {root}` "
                            "makes it and downloads into it)")


def main(argv: list[str] | None = None) -> int:
    from genforge.allocator import keep_freed_memory

    keep_freed_memory()  # a step's freed tensors are reused, not faulted in again (GENFORGE_MALLOC=default: not)
    parser = _parser()
    # Overrides may stand anywhere after the recipe (argparse stops a nargs="*" at the first
    # option), so the key=value words it leaves over are collected here.
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        _answer_sigint()
        # a dotted word without "=" (`optim.lr`) is an override missing its value: config's line says so
        args.overrides += [word for word in extra if not word.startswith("-") and ("=" in word or "." in word)]
        extra = [word for word in extra if word not in args.overrides]
        if args.resume and args.recipe and "=" in args.recipe:  # `--resume RUN key=value`: no recipe, a key
            args.overrides.insert(0, args.recipe)
            args.recipe = None
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "data" and args.data_command is None:
        args.data_command = "list"
    try:
        for option, suffixes in OUTPUTS.get(args.command, []):
            if getattr(args, option, None):
                check_output(getattr(args, option), option, suffixes)
        _check_data_root(args)
        return COMMANDS[args.command](args)
    except GenforgeError as e:
        print(f"genforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `genforge recipes | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if _interrupted(e):  # Ctrl-C during a library's import surfaces as its ImportError
            print("genforge: interrupted", file=sys.stderr)
            return 130
        if isinstance(e, OSError) and e.filename is not None:  # the disk or the path, not genforge
            print(f"genforge: error: {os_error_line(e)}", file=sys.stderr)
            return 2
        return _internal_error()


def _internal_error() -> int:
    """Not bad input but a bug: show where, and ask for a report."""
    import traceback

    traceback.print_exc()
    print("genforge: internal error: this is a bug in genforge, not in your input; please report it with "
          "the lines above and the command you ran", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
