"""The GAN theory bench on the standard toys (recipes R4), and multi-seed training.

``toy_bench`` trains each configuration of :data:`TOY_CONFIGS` on ``ring-8`` and ``grid-25``
for several seeds through the one training loop, and tabulates modes captured, % high-quality
samples and reverse KL (2,500 samples, :mod:`genforge.metrics.modes`) beside the numbers
PacGAN (Lin et al. 2018, Table 2; 10 trials) published.

``train_seeds`` trains one recipe with several seeds and keeps the best by a metric.

Both train a configuration's seeds as one batched model where the family's step allows it
(:mod:`genforge.batched`: each seed's run folder, RNG stream, checkpoints and metrics its own),
and one by one otherwise, after a line that says why.
"""

from __future__ import annotations

import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from genforge.errors import GenforgeError

TOYS = ("ring-8", "grid-25")

# name -> overrides on top of the toy's recipe (every configuration on the same MLPs; the recipe's
# 3,000 steps unless the configuration sets its own budget).
TOY_CONFIGS: dict[str, tuple[str, ...]] = {
    "gan-minimax": ("model.loss=minimax",),
    "gan-nonsaturating": ("model.loss=nonsaturating",),
    "wgan-gp": ("model.loss=wgan-gp", "model.d_steps=5", "optim.lr=1e-4", "optim.beta1=0.5", "optim.beta2=0.9"),
    # genforge's best found: PacGAN's 2-D noise and batch-norm G; top-k G updates (Sinha et al. 2020: G learns
    # from the half of its fakes D finds most real), which keeps every mode in G's samples; the learning
    # rate decayed linearly to 0 over 20,000 steps; and discriminator rejection sampling (Azadi et al. 2019),
    # which drops the samples strung between the modes. (2-D noise and the decay alone reached 22.8 modes on
    # the grid; PacGAN2's packing 8 modes on the ring but blurred grid samples; 15,000 steps missed a ring mode.)
    "gan-ns-z2-bn-topk-drs": ("model.loss=nonsaturating", "model.latent_dim=2", "model.g_norm=batch", "model.top_k=0.5",
                              "optim.schedule=linear", "train.steps=20000", "model.reject=0.999"),
}

# PacGAN Table 2 (10 trials): modes, % high quality, reverse KL.
PUBLISHED: dict[str, dict[str, tuple[float, float, float]]] = {
    "ring-8": {"GAN (PacGAN paper)": (6.3, 98.2, 0.45), "PacGAN4 (PacGAN paper)": (7.8, 95.9, 0.07)},
    "grid-25": {"GAN (PacGAN paper)": (17.3, 94.8, 0.70), "PacGAN4 (PacGAN paper)": (24.8, 93.6, 0.04)},
}
METRIC_KEYS = ("modes", "hq", "reverse_kl")


@dataclass
class BenchRow:
    toy: str
    config: str
    values: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in METRIC_KEYS})
    seconds: list[float] = field(default_factory=list)


def _mean_spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {spread:.2f}"


def _why_not_batched(toy: str, overrides: list[list[str]]) -> str | None:
    from genforge.batched import why_not_batched
    from genforge.config import load_recipe

    return why_not_batched([load_recipe(toy, one) for one in overrides])


def _bench_one(toy: str, overrides: list[str], run_dir: Path) -> list[tuple[dict[str, float], float]]:
    """One seed alone (in a worker process), as :func:`_bench_group` returns a group."""
    return [_bench_run(toy, overrides, run_dir)]


def _bench_run(toy: str, overrides: list[str], run_dir: Path) -> tuple[dict[str, float], float]:
    """One bench run (in a worker process): its final metrics and wall seconds."""
    from genforge.config import load_recipe
    from genforge.api import train_run as train

    cfg = load_recipe(toy, overrides)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    start = time.monotonic()
    result = train(cfg, run_dir, progress=False)
    return result.metrics, time.monotonic() - start


def _bench_group(toy: str, overrides: list[list[str]], run_dirs: list[Path]) -> list[tuple[dict[str, float], float]]:
    """One configuration's seeds as one batched model (in a worker process), or one by one where the
    batched step does not take the configuration: each seed's final metrics and its share of the wall seconds."""
    from genforge.batched import train_batched
    from genforge.config import load_recipe

    cfgs = [load_recipe(toy, one) for one in overrides]
    for run_dir in run_dirs:
        if run_dir.exists():
            shutil.rmtree(run_dir)
    start = time.monotonic()
    results = train_batched(cfgs, run_dirs, progress=False)
    seconds = (time.monotonic() - start) / len(results)
    return [(result.metrics, seconds) for result in results]


def toy_bench(out_dir: str | Path, seeds: int = 5, steps: int | None = None, toys: Sequence[str] = TOYS,
              configs: Sequence[str] | None = None, extra: Sequence[str] = (), threads: int = 1, workers: int = 1,
              log: Callable[[str], None] = print, batched: bool = True) -> list[BenchRow]:
    """Train every (toy, config, seed) into ``out_dir/TOY/CONFIG/seed-S`` and collect the final metrics.

    ``steps`` overrides the recipes' step budget; ``extra`` are overrides applied to every run.
    ``batched``: a configuration's seeds train as one batched model where its family's step allows
    (:mod:`genforge.batched`; the s/run column is then the group's seconds over its seeds), else
    each seed alone. ``workers`` runs that many trainings (or batched groups) side by side in their
    own processes (``threads`` each); every run is seeded on its own, so the numbers do not depend on it.
    """
    out_dir = Path(out_dir)
    _check_bench_out(out_dir, toys, configs or list(TOY_CONFIGS), seeds, steps, extra, threads, log)
    rows, jobs = [], []
    for toy in toys:
        for name in configs or TOY_CONFIGS:
            rows.append(BenchRow(toy, name))
            group = []
            for seed in range(seeds):
                overrides = [*TOY_CONFIGS[name], f"train.seed={seed}", f"train.threads={threads}",
                             "train.sample_every=1000000", "train.checkpoint_every=1000000", *extra]
                if steps is not None:
                    overrides.append(f"train.steps={steps}")
                group.append((seed, overrides, out_dir / toy / name / f"seed-{seed}"))
            why = _why_not_batched(toy, [o for _, o, _ in group]) if batched else "--one-by-one"
            if why is None:
                jobs.append((rows[-1], [seed for seed, _, _ in group],
                             (_bench_group, (toy, [o for _, o, _ in group], [d for _, _, d in group]))))
            else:  # each seed its own job, so that the workers share a configuration's seeds
                if batched:
                    log(f"{toy:8s} {name:24s} seeds one by one: {why}")
                jobs += [(rows[-1], [seed], (_bench_one, (toy, o, d))) for seed, o, d in group]

    def record(row: BenchRow, seeds_done: list[int], results: list[tuple[dict[str, float], float]]) -> None:
        for seed, (metrics, seconds) in zip(seeds_done, results):
            row.seconds.append(seconds)
            for key in METRIC_KEYS:
                row.values[key].append(metrics.get(f"eval/{key}", math.nan))
            log(f"{row.toy:8s} {row.config:24s} seed {seed}: " + "  ".join(
                f"{k} {row.values[k][-1]:.2f}" for k in METRIC_KEYS) + f"  ({seconds:.0f} s)")

    if workers <= 1:
        for row, seeds_done, (function, args) in jobs:
            record(row, seeds_done, function(*args))
        return rows
    for (row, seeds_done, _), results in zip(jobs, side_by_side([job for _, _, job in jobs], workers)):
        record(row, seeds_done, results)  # in job order, so every row lists its seeds 0, 1, ...
    return rows


def _check_bench_out(out_dir: Path, toys: Sequence[str], configs: Sequence[str], seeds: int, steps: int | None,
                     extra: Sequence[str], threads: int, log: Callable[[str], None]) -> None:
    """Before anything is printed or written: every configuration is valid, ``out_dir`` is not inside a
    run, and no run it would replace is training now. Runs of an earlier bench there are replaced (the
    bench's own folders), and a line says so."""
    from genforge.api import budget_overrides, check_config
    from genforge.runs import enclosing_run, read_status

    folder = enclosing_run(out_dir)
    if folder is not None:
        raise GenforgeError(f"--out {out_dir} is inside the run {folder}: the bench writes its runs into a "
                            "folder of their own; choose another --out")
    earlier = 0
    for toy in toys:
        for name in configs:
            items = [*TOY_CONFIGS[name], f"train.threads={threads}", *extra]
            if steps is not None:  # --steps replaces a configuration's own budget, as in its runs
                dropped = set(budget_overrides(items))
                items = [item for item in items if item.strip() not in dropped]
            check_config(toy, items, steps=steps)
            for seed in range(seeds):
                run_dir = out_dir / toy / name / f"seed-{seed}"
                if not run_dir.exists():
                    continue
                if (run_dir / "config.json").is_file() and read_status(run_dir) == "training":
                    raise GenforgeError(f"{run_dir} is being trained now (its lock is held); wait for it or "
                                        "choose another --out")
                earlier += 1
    if earlier:
        log(f"genforge: replacing {earlier} run(s) of an earlier bench under {out_dir}")


def _job_process(send, function: Callable, args: tuple) -> None:
    """A worker process's one job: ``function(*args)``'s result (or the exception it raised) sent back."""
    try:
        outcome = ("ok", function(*args))
    except BaseException as e:  # noqa: BLE001 - the parent re-raises it
        outcome = ("error", e)
    send.send(outcome)
    send.close()


def side_by_side(jobs: Sequence[tuple[Callable, tuple]], workers: int):
    """Run ``jobs`` ((function, args), picklable) in up to ``workers`` processes at once, one process per
    job, and yield their results in job order as they become available; a job's exception is raised
    here. A SIGTERM or Ctrl-C stops every worker (SIGTERM first: a training stops at a step; SIGKILL
    after 30 s) before it propagates. One pipe per job and no shared queue: multiprocessing.Pool's
    terminate() could hang for good when a signal to the whole process group killed an idle worker
    that held its task queue's lock."""
    import multiprocessing
    import signal
    import threading
    from multiprocessing.connection import wait

    def stop(signum, frame):  # a SIGTERM ends the bench like Ctrl-C: the workers are stopped too
        raise KeyboardInterrupt

    context = multiprocessing.get_context("spawn")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    running: dict[Any, tuple[int, Any]] = {}  # the pipe a job answers on -> (its index, its process)
    done: dict[int, Any] = {}
    started = reported = 0
    try:
        while reported < len(jobs):
            while started < len(jobs) and len(running) < workers:
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_job_process, args=(send, *jobs[started]), daemon=True)
                process.start()
                send.close()  # the child holds the sending end: its death reads as EOF here
                running[receive] = (started, process)
                started += 1
            for receive in wait(list(running)):
                index, process = running.pop(receive)
                try:
                    outcome = receive.recv()
                except EOFError:  # it died before it answered
                    outcome = None
                receive.close()
                process.join()
                done[index] = outcome or ("error", RuntimeError(f"a bench worker stopped with exit code "
                                                                f"{process.exitcode} before it answered"))
            while reported in done:
                kind, value = done.pop(reported)
                if kind == "error":
                    raise value
                yield value
                reported += 1
    finally:
        for _, process in running.values():  # no worker outlives the bench
            process.terminate()
        for _, process in running.values():
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def format_bench(rows: Sequence[BenchRow]) -> str:
    """The bench table: mean ± standard deviation over seeds, the published rows beside them."""
    lines = [f"{'toy':8s} {'config':24s} {'seeds':>5s} {'modes':>14s} {'% high quality':>16s} {'reverse KL':>14s}"
             f" {'s/run':>6s}"]
    for toy in dict.fromkeys(row.toy for row in rows):
        for row in (r for r in rows if r.toy == toy):
            lines.append(f"{toy:8s} {row.config:24s} {len(row.seconds):5d} {_mean_spread(row.values['modes']):>14s} "
                         f"{_mean_spread(row.values['hq']):>16s} {_mean_spread(row.values['reverse_kl']):>14s} "
                         f"{statistics.fmean(row.seconds):6.0f}")
        for name, (modes, hq, kl) in PUBLISHED.get(toy, {}).items():
            lines.append(f"{toy:8s} {name:24s} {10:5d} {modes:14.1f} {hq:16.1f} {kl:14.2f} {'':>6s}")
    return "\n".join(lines)


# --- several seeds, keep the best ---------------------------------------------------------

# Metrics where larger is better; any other eval/* metric is taken as lower-is-better.
HIGHER_IS_BETTER = {"modes", "hq", "class_accuracy", "elbo", "classes_covered", "class_entropy"}


class SeedsInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`train_seeds` in ``folder`` (with a checkpoint), after ``started`` of ``total``
    seeds had begun; no best run is chosen."""

    def __init__(self, folder: Path, started: int, total: int):
        super().__init__(f"interrupted in {folder}")
        self.folder, self.started, self.total = folder, started, total


def train_seeds(cfg, run_dir: str | Path, seeds: int, metric: str | None = None, data_root: str | None = None,
                progress: bool = True, log: Callable[[str], None] = print) -> tuple[Path | None, list[dict]]:
    """Train ``cfg`` with seeds cfg.train.seed, +1, ... into ``run_dir/seed-S`` (as one batched model
    where :mod:`genforge.batched` takes the configuration, else in turn); the best run by
    ``metric`` (default: the first final eval/* metric) is copied to ``run_dir/best``; a metric the
    recipe's final metrics lack is refused before any training. Returns (the best run's folder, or None
    where no final metric ranks the seeds, one row per seed: seed, step, its eval metrics)."""
    import copy

    from genforge.batched import train_batched

    run_dir = Path(run_dir)
    cfgs, folders = [], []
    for offset in range(seeds):
        seed_cfg = copy.deepcopy(cfg)
        seed_cfg.train.seed = cfg.train.seed + offset
        cfgs.append(seed_cfg)
        folders.append(run_dir / f"seed-{seed_cfg.train.seed}")
    taken = [folder for folder in [*folders, run_dir / "best"] if folder.exists()]
    if taken:  # never train over earlier seeds' runs (their checkpoints would stay beside the new ones)
        raise GenforgeError(f"{taken[0]} already exists: train the seeds into another --run-dir, or continue a "
                            f"seed with genforge train --resume {folders[0]}")
    if metric is not None:  # as the runs log and print it (eval/modes) or bare (modes)
        metric = metric.strip().removeprefix("eval/")
    figures = final_figures(cfg, data_root)
    if metric is not None and metric not in figures:  # refused before any training, not after it
        raise GenforgeError(f"--metric {metric} is not among {cfg.recipe}'s final metrics "
                            f"({', '.join(figures) if figures else 'none: score its runs with genforge eval'})")
    for seed_cfg, folder in zip(cfgs, folders):
        log(f"genforge: seed {seed_cfg.train.seed} -> {folder}")
    results = train_batched(cfgs, folders, data_root, progress, log)
    stopped = next((folder for folder, result in zip(folders, results) if result.interrupted), None)
    if stopped is not None:
        raise SeedsInterrupted(stopped, len(results), len(cfgs))
    rows = [{"seed": seed_cfg.train.seed, "run_dir": str(folder), "step": result.step,
             **{k.removeprefix("eval/"): v for k, v in result.metrics.items()}}
            for seed_cfg, folder, result in zip(cfgs, folders, results)]
    names = [k for k in rows[0] if k not in ("seed", "run_dir", "step")]
    if metric is not None and not any(metric in row for row in rows):
        raise GenforgeError(f"--metric {metric} is not among the runs' final metrics ({', '.join(names) or 'none'}); "
                            f"the seeds' runs are kept under {run_dir}")
    metric = metric or (names[0] if names else None)
    for row in rows:
        row["best"] = False
    if metric is None:  # nothing ranks the seeds: no run is called the best
        return None, rows
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    best = max(rows, key=lambda r: sign * r.get(metric, -math.inf * sign))
    best["best"] = True
    target = run_dir / "best"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(best["run_dir"], target, symlinks=True)  # checkpoints/latest stays a link, as genforge reads it
    return target, rows


def final_figures(cfg, data_root: str | None = None) -> list[str]:
    """The figures training's end gives for ``cfg`` (the metrics :func:`train_seeds` can rank by), from
    its data and an untrained model; the global RNG is left as it was."""
    import torch

    from genforge.data.datasets import load_data
    from genforge.metrics.evaluate import final_figures as figures_of
    from genforge.models import build_model

    data = load_data(cfg.data, "train", cfg.data.root or data_root)
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg, tuple(data.images.shape[1:]), len(data.classes))
    return figures_of(model, data.name)


def format_seeds(rows: Sequence[dict]) -> str:
    keys = [k for k in rows[0] if k not in ("seed", "run_dir", "step", "best")]
    lines = [f"{'seed':>4s} {'step':>7s} " + " ".join(f"{k:>14s}" for k in keys)]
    for row in rows:
        values = " ".join(f"{row.get(k, math.nan):14.4f}" for k in keys)
        lines.append(f"{row['seed']:4d} {row['step']:7d} {values}{'   <- best' if row['best'] else ''}")
    return "\n".join(lines)
