"""THE training loop: batch -> phases -> EMA -> log -> sample -> checkpoint.

Every family runs through :func:`train`. The loop reads losses back from the device
only at log steps, holds the data as a uint8 tensor on the device, and can stop at
any step boundary (budget, Ctrl-C) with a checkpoint that resumes bit for bit.

Fast paths (``train.precision``, ``channels_last``, ``compile``, ``optim.fused``) are
switches on the same loop, resolved per device by :func:`genforge.runtime.choose_fast_paths`.
Under ``torchrun`` every rank runs this loop on its own slice of each global batch, with
the phases behind one ``DistributedDataParallel``; rank 0 alone writes the run directory.
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
from genforge.data.augment import augment
from genforge.data.datasets import load_data
from genforge.errors import GenforgeError
from genforge.models import build_model
from genforge.models.base import Batch, Context, GenerativeModel
from genforge.runtime import (BatchOrder, Distributed, MetricsLog, NullLog, choose_fast_paths, init_distributed,
                              resolve_device, rng_state, set_rng_state, set_threads)

FIXED_NOISE = 64  # images in every progress grid, from one fixed noise batch


@dataclass
class RunResult:
    run_dir: Path
    step: int
    interrupted: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


def make_optimizer(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg`` (Adam, AdamW, RMSProp, Adadelta, SGD) over ``params``:
    fused kernels for Adam/AdamW and multi-tensor ones for the rest when ``cfg.fused``, else the
    per-parameter loop most published code runs."""
    kernels = {"fused": True} if cfg.fused and cfg.name in ("adam", "adamw") else {"foreach": cfg.fused}
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                                **kernels)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                                 **kernels)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kernels)
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kernels)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kernels)


def lr_factor(cfg: OptimConfig, progress: float) -> float:
    """The learning-rate multiplier at ``progress`` (the share of train.steps done) under ``cfg.schedule``:
    1 throughout (constant), or from 1 down to ``cfg.final_lr`` at the end linearly or along a half cosine."""
    if cfg.schedule == "constant":
        return 1.0
    progress = min(max(progress, 0.0), 1.0)
    shape = 1.0 - progress if cfg.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.final_lr + (1.0 - cfg.final_lr) * shape


class PhaseRunner(torch.nn.Module):
    """The phases behind one module, so that ``DistributedDataParallel`` can wrap all of a model's
    networks at once: ``runner(i, batch)`` runs phase ``i``. Each phase uses some networks only
    (D's step never differentiates G), hence ``find_unused_parameters=True``."""

    def __init__(self, model: GenerativeModel, steps: list):
        super().__init__()
        self.model, self.steps = model, steps

    def forward(self, index: int, batch: Batch) -> dict[str, torch.Tensor]:
        return self.steps[index](batch)


@torch.no_grad()
def weight_fingerprint(model: torch.nn.Module) -> torch.Tensor:
    """One float64 sum per parameter: equal on two ranks iff (almost surely) equal weights. Buffers
    (BN running statistics) are left out: each rank updates them from its own batches, and DDP
    broadcasts rank 0's at every forward."""
    return torch.stack([p.detach().double().sum() for p in model.parameters()])


def like_params(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimiser moments their parameter's memory layout (checkpoints store them
    contiguous; a fused step over channels-last weights with contiguous moments differs)."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


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
def update_ema(model: GenerativeModel, decay: float, step: int | None = None) -> None:
    """Move the EMA copies towards the live weights. With ``step`` (updates done so far) the
    decay ramps up as min(decay, (1 + step) / (10 + step)), so early averages are not held
    back by the random initial weights (a 0.999 average would still be 37% initial weights
    after 1,000 steps)."""
    if step is not None:
        decay = min(decay, (1.0 + step) / (10.0 + step))
    for name, average in getattr(model, "ema", {}).items():
        live = getattr(model, name)
        torch._foreach_lerp_(list(average.parameters()), list(live.parameters()), 1.0 - decay)
        for avg_buf, buf in zip(average.buffers(), live.buffers()):
            avg_buf.copy_(buf)


@contextmanager
def stop_on_sigint():
    """First Ctrl-C (or SIGTERM, which torchrun sends its workers) asks the loop to stop at the
    next step boundary, with a checkpoint; a second Ctrl-C kills."""
    flag = {"stop": False}

    def handler(signum, frame):
        flag["stop"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = signal.signal(signal.SIGINT, handler)
        previous_term = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. the web studio): no handler
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


def rank_rng(ranks: Distributed) -> dict[str, torch.Tensor]:
    """The RNG state to checkpoint: this process's, or under torchrun every rank's as ``rankR.KEY``."""
    if not ranks.active:
        return rng_state()
    states = ranks.gather_objects({k: v.cpu() for k, v in rng_state().items()})
    return {f"rank{r}.{k}": v for r, state in enumerate(states) for k, v in state.items()}


def restore_rank_rng(state: dict[str, torch.Tensor], ranks: Distributed) -> bool:
    """Set this rank's RNG from a checkpoint; False when it holds no state for this rank
    (saved by a different number of processes: the run continues, not bit for bit)."""
    if not ranks.active and "torch" in state:
        set_rng_state(state)
        return True
    prefix = f"rank{ranks.rank}."
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    saved_world = len({k.split(".", 1)[0] for k in state if k.startswith("rank")})
    if not own or saved_world != ranks.world:
        return False
    set_rng_state(own)
    return True


def train(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, data_root: str | None = None,
          progress: bool = True) -> RunResult:
    """Train ``cfg`` into ``run_dir`` (or continue it with ``resume=True``); returns the final step."""
    run_dir = Path(run_dir)
    tcfg = cfg.train

    # Set-up: device, threads and seed; the run folder with its resolved config.
    if tcfg.steps <= 0 and tcfg.minutes <= 0:
        raise GenforgeError("no budget: set train.steps (--steps) or train.minutes (--minutes)")
    if cfg.optim.schedule != "constant" and tcfg.steps <= 0:
        raise GenforgeError(f"optim.schedule={cfg.optim.schedule} decays the learning rate by train.steps: "
                            "set train.steps (--steps), or optim.schedule=constant for a --minutes run")
    ranks, device_name = init_distributed(tcfg.device)
    device = resolve_device(device_name)
    set_threads(tcfg.threads, ranks.local_world)
    torch.manual_seed(tcfg.seed)
    if ranks.main:
        for sub in ("samples", "plots", "checkpoints"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        if not resume:
            write_json_atomic(run_dir / "config.json", cfg.to_dict())

    # Data: decoded once into a uint8 tensor on the device, batched by indexing.
    root = cfg.data.root or data_root
    train_data = load_data(cfg.data, "train", root)  # named sets resized, image folders decoded (cached)
    images = train_data.images.to(device)  # (N, C, H, W) uint8 at data.image_size
    labels = train_data.labels.to(device)
    # Every rank draws the same global batch order (batch_size per rank) and takes its own slice.
    global_batch, mine = tcfg.batch_size * ranks.world, slice(ranks.rank * tcfg.batch_size,
                                                               (ranks.rank + 1) * tcfg.batch_size)
    order = BatchOrder(images.shape[0], global_batch, tcfg.seed, device)
    # A second domain (DiscoGAN's B) is batched beside the first, in its own shuffled order.
    two_domains = train_data.images_b is not None
    if two_domains:
        images_b = train_data.images_b.to(device)
        labels_b = train_data.labels_b.to(device)
        order_b = BatchOrder(images_b.shape[0], global_batch, tcfg.seed + 1000, device)
    long_run = tcfg.steps >= 2000 or tcfg.minutes >= 10 or (tcfg.steps <= 0 and tcfg.minutes <= 0)
    fast = choose_fast_paths(tcfg.precision, tcfg.channels_last, tcfg.compile, cfg.optim.fused, device,
                             images=images.ndim == 4, long_run=long_run)
    layout = torch.channels_last if fast.channels_last else torch.contiguous_format

    def next_batch() -> Batch:
        index = order.next()[mine]
        x = augment(model.prepare(images[index]), cfg.data, output_range=model.output_range)  # off: x itself
        batch = Batch(x.contiguous(memory_format=layout), labels[index])
        if two_domains:
            index_b = order_b.next()[mine]
            batch.images_b = model.prepare(images_b[index_b]).contiguous(memory_format=layout)
            batch.labels_b = labels_b[index_b]
        return batch

    # Networks, one optimiser per group, the phases, and EMA copies when asked for.
    model = build_model(cfg, tuple(images.shape[1:]), len(train_data.classes)).to(device, memory_format=layout)
    attach_ema(model, tcfg.ema_decay)
    optimizers = {name: make_optimizer(cfg.optim, params) for name, params in model.optimizer_groups().items()}
    phases = model.phases()
    # float16 needs loss scaling (one scaler per optimiser); bfloat16 has float32's range.
    scalers = ({name: torch.amp.GradScaler(device.type) for name in optimizers}
               if fast.dtype is torch.float16 else {})
    steps = [torch.compile(phase.step) if fast.compile else phase.step for phase in phases]
    if ranks.active:
        from torch.nn.parallel import DistributedDataParallel

        # broadcast_buffers stays on (rank 0's BN statistics at every forward): turned off, it bought
        # no measurable speed, and a rank then aborted at exit in 4 of 38 two-process runs.
        ddp = DistributedDataParallel(PhaseRunner(model, steps), find_unused_parameters=True,
                                      device_ids=[device.index] if device.type == "cuda" else None)
        run_phase = ddp.__call__
        # The same weights everywhere (seeded, and DDP broadcasts rank 0's); its own noise per rank.
        torch.manual_seed(tcfg.seed + 7919 * ranks.rank)
    else:
        def run_phase(index: int, batch: Batch) -> dict[str, torch.Tensor]:
            return steps[index](batch)

    # Resume: weights, optimiser moments, RNG and data order exactly as saved.
    step = 0
    if resume:
        ckpt = load_checkpoint(latest_checkpoint(run_dir), map_location=device)
        model.load_state_dict(ckpt.model)
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(ckpt.optimizers[name])
            like_params(optimizer)
        exact = restore_rank_rng(ckpt.rng, ranks)
        if not exact and ranks.main:
            tqdm.write(f"genforge: warning: {run_dir}: saved by a different number of processes; "
                       "the run continues, but not bit for bit", file=sys.stderr)
        order.load(ckpt.extra["data_order"])
        if two_domains:
            order_b.load(ckpt.extra["data_order_b"])
        for name, scaler in scalers.items():
            if name in ckpt.extra.get("grad_scalers", {}):
                scaler.load_state_dict(ckpt.extra["grad_scalers"][name])
        step = ckpt.step
    fixed_noise = model.fixed_inputs(train_data, FIXED_NOISE, torch.Generator().manual_seed(tcfg.seed + 1)).to(device)
    log = MetricsLog(run_dir, resume_step=step if resume else None) if ranks.main else NullLog()

    def snapshot(**extra) -> Checkpoint:
        """The full training state; under torchrun a collective (every rank's RNG is gathered)."""
        return Checkpoint(
            step=step, model=model.state_dict(), rng=rank_rng(ranks),
            optimizers={name: opt.state_dict() for name, opt in optimizers.items()},
            extra={"data_order": order.state(), **({"data_order_b": order_b.state()} if two_domains else {}),
                   "config": cfg.to_dict(), "processes": ranks.world,
                   **({"grad_scalers": {k: v.state_dict() for k, v in scalers.items()}} if scalers else {}),
                   "image_shape": list(images.shape[1:]), "num_classes": len(train_data.classes), **extra})

    def checkpoint() -> None:
        state = snapshot()
        if ranks.main:
            save_checkpoint(run_dir, state)
        if ranks.active:  # DDP keeps every rank's weights identical: check it at each checkpoint
            prints = ranks.gather(weight_fingerprint(model).to(device)[None])
            in_sync = bool((prints == prints[0]).all())
            log.log(step, {"ddp/ranks_in_sync": float(in_sync)})
            if not in_sync and ranks.main:
                tqdm.write(f"genforge: warning: step {step}: the ranks' weights differ", file=sys.stderr)

    # Optional cheap metric: FID of eval_n samples every eval_every steps, from its own RNG
    # (the training stream is untouched); the best checkpoint by it is kept as checkpoints/best.
    evaluator, best_fid = None, math.inf
    if tcfg.eval_every > 0:
        from genforge.metrics.evaluate import TrainingEval

        evaluator = TrainingEval(cfg.data.dataset, cfg.data.image_size, tcfg.eval_n, tcfg.seed, device, root,
                                 ranks=ranks)
        best_state = run_dir / "checkpoints" / "best" / "state.json"
        if resume and best_state.is_file():
            best_fid = json.loads(best_state.read_text()).get("eval_fid", math.inf)

    def sample_grid(name: str) -> None:
        if not ranks.main:
            return
        with model.inference():
            grid = model.progress_image(fixed_noise, train_data)
        log.image("samples", grid, step)
        viz.save_grid_image(grid, run_dir / "samples" / f"{name}.png")

    # The loop: every phase (each repeat on a fresh batch), EMA, then the periodic work.
    deadline = time.monotonic() + tcfg.minutes * 60 if tcfg.minutes > 0 else math.inf
    last_step = tcfg.steps if tcfg.steps > 0 else math.inf
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    saved_step, last_log, last_time = step, step, time.monotonic()
    show = progress and ranks.main
    if ranks.main:
        where = f"{ranks.world} processes on {device.type}" if ranks.active else str(device)
        tqdm.write(f"genforge: {cfg.recipe} on {where}: {fast.describe()}", file=sys.stderr)
    bar = tqdm(total=tcfg.steps or None, initial=step, disable=not show, unit="step", dynamic_ncols=True,
               desc=cfg.recipe)
    first_step_at = None
    with stop_on_sigint() as sigint:
        while step < last_step:
            # Ranks stop together: under torchrun they agree at log steps (the only syncs).
            if not ranks.active or step % tcfg.log_every == 0:
                if ranks.any(time.monotonic() >= deadline or sigint["stop"], device):
                    break
            model.progress = step / tcfg.steps if tcfg.steps else 0.0
            if cfg.optim.schedule != "constant":  # a plain float per group: no host sync
                lr = cfg.optim.lr * lr_factor(cfg.optim, model.progress)
                for optimizer in optimizers.values():
                    for group in optimizer.param_groups:
                        group["lr"] = lr
            for index, phase in enumerate(phases):
                optimizer = optimizers[phase.optimizer]
                scaler = scalers.get(phase.optimizer)
                for _ in range(phase.repeats):
                    with fast.autocast():
                        losses = run_phase(index, next_batch())
                    gate = losses.pop("gate", None)
                    update = gate is None or ranks.any(bool(gate), device)
                    if update or ranks.active:  # a DDP rank joins every backward, skipped or not
                        optimizer.zero_grad(set_to_none=True)
                        loss = losses["loss"] if update else losses["loss"] * 0.0
                        (scaler.scale(loss) if scaler else loss).backward()
                    if update:
                        if scaler:
                            scaler.step(optimizer)
                            scaler.update()
                        else:
                            optimizer.step()
                        if phase.after is not None:
                            phase.after()
                    for key, value in losses.items():
                        name = f"{phase.name}/{key}"
                        sums[name] = sums.get(name, 0.0) + value.detach()
                        counts[name] = counts.get(name, 0) + 1
            update_ema(model, tcfg.ema_decay, step)
            step += 1
            bar.update(1)
            if first_step_at is None and fast.compile:
                first_step_at = time.monotonic()
                if show:
                    tqdm.write(f"genforge: torch.compile and the first step took {first_step_at - last_time:.1f} s",
                               file=sys.stderr)
                log.log(step, {"compile_s": first_step_at - last_time})
                last_log, last_time = step, first_step_at

            if step % tcfg.log_every == 0 or step == tcfg.steps:
                now = time.monotonic()
                values = {key: float(sums[key]) / counts[key] for key in sums}  # the host sync
                values["images_per_s"] = global_batch * (step - last_log) / max(now - last_time, 1e-9)
                log.log(step, values)
                bar.set_postfix({k.split("/", 1)[-1] if k.count("/") else k: f"{v:.3g}" for k, v in values.items()})
                sums, counts, last_log, last_time = {}, {}, step, now
            if step % tcfg.sample_every == 0:
                sample_grid(f"step-{step:07d}")
            if step % tcfg.checkpoint_every == 0:
                checkpoint()
                saved_step = step
                if ranks.main:
                    with model.inference():
                        values = model.checkpoint_metrics(train_data, step)
                    if values:
                        log.log(step, values)
            if evaluator is not None and step % tcfg.eval_every == 0:
                values, warning = evaluator(model, step)  # samples split across the ranks
                log.log(step, values)
                if warning and ranks.main:
                    tqdm.write(f"genforge: warning: {warning}", file=sys.stderr)
                if values["eval/fid"] < best_fid:
                    best_fid = values["eval/fid"]
                    state = snapshot(eval_fid=best_fid)
                    if ranks.main:
                        save_best(run_dir, state)
        interrupted = sigint["stop"]
    bar.close()

    # The end: a last checkpoint, the final grid and curves, and the family's own report.
    missing = ranks.main and not (run_dir / "checkpoints" / "latest").exists()
    if ranks.any(step != saved_step or missing, device):
        checkpoint()
    if ranks.active:  # the ranks leave together
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if not ranks.main:  # rank 0 draws, evaluates and reports
        return RunResult(run_dir, step, interrupted)
    sample_grid("final")
    rows = viz.read_metrics(log.path)
    loss_keys = sorted({k for row in rows for k in row if "/" in k and not k.startswith("eval/")})
    viz.plot_curves(rows, loss_keys, run_dir / "plots" / "losses.png", title=f"{cfg.recipe}: training losses")
    result = RunResult(run_dir, step, interrupted)
    if not interrupted:
        test_data = load_data(cfg.data, "test", root)
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
