"""THE training loop: batch -> phases -> EMA -> log -> sample -> checkpoint.

Every family runs through :func:`train`. The loop reads losses back from the device
only at log steps, holds the data as a uint8 tensor on the device, and can stop at
any step boundary (budget, Ctrl-C) with a checkpoint that resumes bit for bit.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from genforge import viz
from genforge.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_best, save_checkpoint
from genforge.config import OptimConfig, RunConfig
from genforge.data.datasets import load_images, resize_images
from genforge.errors import GenforgeError
from genforge.models import build_model
from genforge.models.base import Batch, Context, GenerativeModel
from genforge.runtime import BatchOrder, MetricsLog, resolve_device, rng_state, set_rng_state, set_threads

FIXED_NOISE = 64  # images in every progress grid, from one fixed noise batch


@dataclass
class RunResult:
    run_dir: Path
    step: int
    interrupted: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


def make_optimizer(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg`` (Adam, AdamW, RMSProp, Adadelta, SGD) over ``params``."""
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def attach_ema(model: GenerativeModel, decay: float) -> None:
    """Give ``model`` frozen EMA copies of its sampling networks (saved as ``ema.<net>.*``)."""
    if decay > 0 and model.ema_networks:
        model.ema = torch.nn.ModuleDict(
            {name: copy.deepcopy(getattr(model, name)).requires_grad_(False) for name in model.ema_networks})


@torch.no_grad()
def update_ema(model: GenerativeModel, decay: float) -> None:
    for name, average in getattr(model, "ema", {}).items():
        live = getattr(model, name)
        torch._foreach_lerp_(list(average.parameters()), list(live.parameters()), 1.0 - decay)
        for avg_buf, buf in zip(average.buffers(), live.buffers()):
            avg_buf.copy_(buf)


@contextmanager
def stop_on_sigint():
    """First Ctrl-C asks the loop to stop at the next step boundary; a second one kills."""
    flag = {"stop": False}

    def handler(signum, frame):
        flag["stop"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. the web studio): no handler
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def train(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, data_root: str | None = None,
          progress: bool = True) -> RunResult:
    """Train ``cfg`` into ``run_dir`` (or continue it with ``resume=True``); returns the final step."""
    run_dir = Path(run_dir)
    tcfg = cfg.train

    # Set-up: device, threads and seed; the run folder with its resolved config.
    if tcfg.steps <= 0 and tcfg.minutes <= 0:
        raise GenforgeError("no budget: set train.steps (--steps) or train.minutes (--minutes)")
    device = resolve_device(tcfg.device)
    set_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    for sub in ("samples", "plots", "checkpoints"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    if not resume:
        write_json_atomic(run_dir / "config.json", cfg.to_dict())

    # Data: decoded once into a uint8 tensor on the device, batched by indexing.
    root = cfg.data.root or data_root
    train_data = load_images(cfg.data.dataset, "train", root)
    images = resize_images(train_data.images, cfg.data.image_size).to(device)  # (N, C, H, W) uint8
    labels = train_data.labels.to(device)
    order = BatchOrder(images.shape[0], tcfg.batch_size, tcfg.seed, device)
    # A second domain (DiscoGAN's B) is batched beside the first, in its own shuffled order.
    two_domains = train_data.images_b is not None
    if two_domains:
        images_b = resize_images(train_data.images_b, cfg.data.image_size).to(device)
        labels_b = train_data.labels_b.to(device)
        order_b = BatchOrder(images_b.shape[0], tcfg.batch_size, tcfg.seed + 1000, device)

    def next_batch() -> Batch:
        index = order.next()
        batch = Batch(model.prepare(images[index]), labels[index])
        if two_domains:
            index_b = order_b.next()
            batch.images_b, batch.labels_b = model.prepare(images_b[index_b]), labels_b[index_b]
        return batch

    # Networks, one optimiser per group, the phases, and EMA copies when asked for.
    model = build_model(cfg, tuple(images.shape[1:]), len(train_data.classes)).to(device)
    attach_ema(model, tcfg.ema_decay)
    optimizers = {name: make_optimizer(cfg.optim, params) for name, params in model.optimizer_groups().items()}
    phases = model.phases()

    # Resume: weights, optimiser moments, RNG and data order exactly as saved.
    step = 0
    if resume:
        ckpt = load_checkpoint(latest_checkpoint(run_dir), map_location=device)
        model.load_state_dict(ckpt.model)
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(ckpt.optimizers[name])
        set_rng_state(ckpt.rng)
        order.load(ckpt.extra["data_order"])
        if two_domains:
            order_b.load(ckpt.extra["data_order_b"])
        step = ckpt.step
    fixed_noise = model.fixed_inputs(train_data, FIXED_NOISE, torch.Generator().manual_seed(tcfg.seed + 1)).to(device)
    log = MetricsLog(run_dir, resume_step=step if resume else None)

    def snapshot(**extra) -> Checkpoint:
        return Checkpoint(
            step=step, model=model.state_dict(), rng=rng_state(),
            optimizers={name: opt.state_dict() for name, opt in optimizers.items()},
            extra={"data_order": order.state(), **({"data_order_b": order_b.state()} if two_domains else {}),
                   "config": cfg.to_dict(),
                   "image_shape": list(images.shape[1:]), "num_classes": len(train_data.classes), **extra})

    def checkpoint() -> None:
        save_checkpoint(run_dir, snapshot())

    # Optional cheap metric: FID of eval_n samples every eval_every steps, from its own RNG
    # (the training stream is untouched); the best checkpoint by it is kept as checkpoints/best.
    evaluator, best_fid = None, math.inf
    if tcfg.eval_every > 0:
        from genforge.metrics.evaluate import TrainingEval

        evaluator = TrainingEval(cfg.data.dataset, cfg.data.image_size, tcfg.eval_n, tcfg.seed, device, root)
        best_state = run_dir / "checkpoints" / "best" / "state.json"
        if resume and best_state.is_file():
            best_fid = json.loads(best_state.read_text()).get("eval_fid", math.inf)

    def sample_grid(name: str) -> Path:
        with model.inference():
            grid = model.progress_image(fixed_noise, train_data)
        log.image("samples", grid, step)
        return viz.save_grid_image(grid, run_dir / "samples" / f"{name}.png")

    # The loop: every phase (each repeat on a fresh batch), EMA, then the periodic work.
    deadline = time.monotonic() + tcfg.minutes * 60 if tcfg.minutes > 0 else math.inf
    last_step = tcfg.steps if tcfg.steps > 0 else math.inf
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    saved_step, last_log, last_time = step, step, time.monotonic()
    bar = tqdm(total=tcfg.steps or None, initial=step, disable=not progress, unit="step", dynamic_ncols=True,
               desc=cfg.recipe)
    with stop_on_sigint() as sigint:
        while step < last_step and time.monotonic() < deadline and not sigint["stop"]:
            for phase in phases:
                for _ in range(phase.repeats):
                    losses = phase.step(next_batch())
                    gate = losses.pop("gate", None)
                    if gate is None or bool(gate):
                        optimizer = optimizers[phase.optimizer]
                        optimizer.zero_grad(set_to_none=True)
                        losses["loss"].backward()
                        optimizer.step()
                        if phase.after is not None:
                            phase.after()
                    for key, value in losses.items():
                        name = f"{phase.name}/{key}"
                        sums[name] = sums.get(name, 0.0) + value.detach()
                        counts[name] = counts.get(name, 0) + 1
            update_ema(model, tcfg.ema_decay)
            step += 1
            bar.update(1)

            if step % tcfg.log_every == 0 or step == tcfg.steps:
                now = time.monotonic()
                values = {key: float(sums[key]) / counts[key] for key in sums}  # the host sync
                values["images_per_s"] = tcfg.batch_size * (step - last_log) / max(now - last_time, 1e-9)
                log.log(step, values)
                bar.set_postfix({k.split("/", 1)[-1] if k.count("/") else k: f"{v:.3g}" for k, v in values.items()})
                sums, counts, last_log, last_time = {}, {}, step, now
            if step % tcfg.sample_every == 0:
                sample_grid(f"step-{step:07d}")
            if step % tcfg.checkpoint_every == 0:
                checkpoint()
                saved_step = step
                with model.inference():
                    values = model.checkpoint_metrics(train_data, step)
                if values:
                    log.log(step, values)
            if evaluator is not None and step % tcfg.eval_every == 0:
                values, warning = evaluator(model, step)
                log.log(step, values)
                if warning:
                    tqdm.write(f"genforge: warning: {warning}", file=sys.stderr)
                if values["eval/fid"] < best_fid:
                    best_fid = values["eval/fid"]
                    save_best(run_dir, snapshot(eval_fid=best_fid))
        interrupted = sigint["stop"]
    bar.close()

    # The end: a last checkpoint, the final grid and curves, and the family's own report.
    if step != saved_step or not (run_dir / "checkpoints" / "latest").exists():
        checkpoint()
    sample_grid("final")
    rows = viz.read_metrics(log.path)
    loss_keys = sorted({k for row in rows for k in row if "/" in k and not k.startswith("eval/")})
    viz.plot_curves(rows, loss_keys, run_dir / "plots" / "losses.png", title=f"{cfg.recipe}: training losses")
    result = RunResult(run_dir, step, interrupted)
    if not interrupted:
        test_data = load_images(cfg.data.dataset, "test", root).resized(cfg.data.image_size)
        ctx = Context(run_dir, train_data, test_data, device, tcfg.eval_samples, progress)
        model.eval()
        with model.ema_weights():
            result.metrics = {f"eval/{k}": v for k, v in model.evaluate(ctx).items()}
            model.report(ctx)
        if result.metrics:
            log.log(step, result.metrics)
    log.close()
    return result


def resume_config(run_dir: str | Path, steps: int | None = None, minutes: float | None = None) -> RunConfig:
    """The saved config of a run, with a new step or time budget for its continuation."""
    from genforge.config import config_from_json

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise GenforgeError(f"{run_dir}: not a genforge run directory (no config.json)")
    cfg = config_from_json(run_dir / "config.json")
    latest_checkpoint(run_dir)  # a clear error now if there is nothing to resume from
    if steps is not None:  # a new budget replaces the old one, of either kind
        cfg.train.steps, cfg.train.minutes = steps, 0.0
    if minutes is not None:
        cfg.train.steps, cfg.train.minutes = 0, minutes
    return cfg
