"""THE training loop: batch -> phases -> EMA -> log -> sample -> checkpoint.

Every family runs through :func:`train`; one step of it is :func:`train_step` (every phase,
with gates, loss scaling and DDP), the function the tests and the toy lab call too. The loop
reads losses back from the device only at log steps, holds the data as a uint8 tensor on the device, and can stop at
any step boundary (budget, Ctrl-C) with a checkpoint that resumes bit for bit.

Fast paths (``train.precision``, ``channels_last``, ``compile``, ``optim.fused``) are
switches on the same loop, resolved per device by :func:`genforge.runtime.choose_fast_paths`.
Under ``torchrun`` every rank runs this loop on its own slice of each global batch, with
the phases behind one ``DistributedDataParallel``; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import copy
import errno
import json
import math
import re
import signal
import sys
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

import torch
from tqdm import tqdm

from genforge import registry, viz
from genforge.allocator import keep_freed_memory
from genforge.atomic import write_json_atomic
from genforge.checkpoint import (Checkpoint, check_optimizers, check_run_state, check_weights, latest_checkpoint, load_checkpoint, refuse,
                                 save_best, save_checkpoint, write_error)
from genforge.config import OptimConfig, RunConfig, validate
from genforge.data.augment import augment
from genforge.data.datasets import load_data
from genforge.errors import GenforgeError
from genforge.metrics.evaluate import checkpoint_metrics
from genforge.models import build_model
from genforge.models.base import Batch, Context, GenerativeModel, Phase
from genforge.nets import exact_grad_strides
from genforge.runtime import (FINAL_ROW, BatchOrder, Distributed, FastPaths, MetricsLog, NullLog, choose_fast_paths,
                              init_distributed, resolve_device, rng_state, set_rng_state, set_threads)
from genforge.threads import recheck_threads

FIXED_NOISE = 64  # images in every progress grid, from one fixed noise batch


@dataclass
class RunResult:
    run_dir: Path
    step: int
    interrupted: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


def make_optimizer(cfg: OptimConfig, params: list[torch.nn.Parameter],
                   lr: float | None = None) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg`` (Adam, AdamW, RMSProp, Adadelta, SGD) over ``params`` at learning
    rate ``lr`` (default ``cfg.lr``): fused kernels for Adam/AdamW and multi-tensor ones for the rest
    when ``cfg.fused``, else the per-parameter loop most published code runs."""
    kernels = {"fused": True} if cfg.fused and cfg.name in ("adam", "adamw") else {"foreach": cfg.fused}
    lr = cfg.lr if lr is None else lr
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                                **kernels)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                                 **kernels)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=cfg.weight_decay, **kernels)
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=cfg.weight_decay, **kernels)
    return torch.optim.SGD(params, lr=lr, weight_decay=cfg.weight_decay, **kernels)


GENERATOR_GROUPS = ("generator", "translator")  # optimiser groups at optim.lr_g
DISCRIMINATOR_GROUPS = ("discriminator", "critic")  # optimiser groups at optim.lr_d


def group_lr(cfg: OptimConfig, group: str) -> float:
    """The learning rate of optimiser group ``group``: ``optim.lr_g`` for a generator or translator,
    ``optim.lr_d`` for a discriminator or critic (Heusel et al. 2017's two time scales), each
    ``optim.lr`` when 0; ``optim.lr`` for every other group (a VAE's)."""
    own = cfg.lr_g if group in GENERATOR_GROUPS else cfg.lr_d if group in DISCRIMINATOR_GROUPS else 0.0
    return own or cfg.lr


def make_optimizers(model: GenerativeModel, optim_cfg: OptimConfig) -> dict[str, torch.optim.Optimizer]:
    """One optimiser per parameter group the family names (``model.optimizer_groups()``), each made
    by :func:`make_optimizer` from ``optim_cfg`` at its :func:`group_lr`:
    {"generator": Adam(lr_g), "discriminator": Adam(lr_d)}."""
    return {name: make_optimizer(optim_cfg, params, group_lr(optim_cfg, name))
            for name, params in model.optimizer_groups().items()}


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


SINGLE = Distributed()  # one process: no collectives


class NanGuard:
    """``train.on_nan=skip``: an update whose gradients are not finite is skipped and counted (one
    host sync per phase; under DDP every rank skips it alike, as the gradients are reduced)."""

    def __init__(self, limit: int):
        self.limit, self.skipped = limit, 0

    def finite(self, optimizer: torch.optim.Optimizer, ranks: Distributed, device: torch.device) -> bool:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = bool(torch.stack([g.isfinite().all() for g in grads]).all()) if grads else True
        if ranks.any(not finite, device):
            self.skipped += 1
            return False
        return True


def _update(phase: Phase, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
            losses: dict[str, torch.Tensor], gate: torch.Tensor | None, ranks: Distributed,
            guard: NanGuard | None = None) -> bool:
    """Backpropagate one phase's loss and step its optimiser, unless its gate is false on every rank;
    False when ``guard`` skipped the update for non-finite gradients."""
    update = gate is None or ranks.any(bool(gate), losses["loss"].device)  # bool(): the gate's host sync
    if update or ranks.active:  # a DDP rank joins every backward, skipped or not
        optimizer.zero_grad(set_to_none=True)
        loss = losses["loss"] if update else losses["loss"] * 0.0
        (scaler.scale(loss) if scaler else loss).backward()
    if not update:
        return True
    if guard is not None and scaler is None and not guard.finite(optimizer, ranks, losses["loss"].device):
        return False
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if phase.after is not None:
        phase.after()
    return True


def train_step(model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer], phases: list[Phase],
               next_batch: Callable[[], Batch], *, only: Collection[str] | None = None,
               run_phase: Callable[[int, Batch], dict[str, torch.Tensor]] | None = None,
               scalers: dict[str, torch.amp.GradScaler] | None = None,
               autocast: Callable[[], AbstractContextManager] | None = None,
               ranks: Distributed | None = None, guard: NanGuard | None = None) -> dict[str, torch.Tensor]:
    """One training step of ``model``: every phase of ``phases`` (``model.phases()``) in order, each of
    its ``repeats`` on a fresh batch from ``next_batch()``, then its optimiser's update. This is the
    one implementation of a step: :func:`train` runs it, and so do the tests and the toy lab.

    A phase whose losses hold a false ``"gate"`` skips its update (one host sync; only gated
    schedules have a gate); under DDP (``ranks`` with several processes) a rank that skips still
    joins the backward with a zero loss, since DDP reduces gradients over every rank. With a
    GradScaler for the phase's optimiser in ``scalers`` (float16) the loss is scaled; after each
    update the phase's ``after`` hook runs (e.g. WGAN's weight clipping).

    only: names of the phases to run (None = every phase), e.g. {"d"} for a critic-only step.
    run_phase: ``run_phase(index, batch)`` runs phase ``index`` (the loop passes its compiled or
      DDP-wrapped steps); None = ``phases[index].step(batch)``.
    autocast: returns the context each phase runs in (the loop's precision); None = float32.
    ranks: this process among torchrun's (None = one process).
    guard: ``train.on_nan=skip``'s :class:`NanGuard` (None = every update is made; the loop then
      stops on a non-finite loss at its next log step).
    Returns {"<phase>/<key>": detached tensor, the mean over the phase's repeats}, read back from
    the device by nobody here (no host sync)."""
    ranks, scalers = ranks or SINGLE, scalers or {}
    logged: dict[str, torch.Tensor] = {}
    for index, phase in enumerate(phases):
        if only is not None and phase.name not in only:
            continue
        sums: dict[str, torch.Tensor] = {}
        made = 0
        for _ in range(phase.repeats):
            with autocast() if autocast is not None else nullcontext():
                batch = next_batch()
                losses = run_phase(index, batch) if run_phase is not None else phase.step(batch)
            gate = losses.pop("gate", None)
            if not _update(phase, optimizers[phase.optimizer], scalers.get(phase.optimizer), losses, gate, ranks,
                           guard):
                continue  # a skipped non-finite update: its losses are not logged either
            made += 1
            for key, value in losses.items():
                sums[key] = sums[key] + value.detach() if key in sums else value.detach()
        for key, total in sums.items():
            logged[f"{phase.name}/{key}"] = total / made if made > 1 else total
    return logged


class BatchStream:
    """The training batches: index batches into the uint8 images on the device, augmented and laid
    out for the networks; a two-domain dataset's B is batched beside A in its own shuffled order.

    Every rank draws the same global batch order and takes its own slice. A dataset smaller than a
    global batch trains with the batch cut to what it holds (one warning), the same cut on resume."""

    def __init__(self, data: Any, cfg: RunConfig, model: GenerativeModel, ranks: Distributed, device: torch.device,
                 layout: torch.memory_format):
        self.images, self.labels = data.images.to(device), data.labels.to(device)  # (N, C, H, W) uint8
        self.two_domains = data.images_b is not None
        sizes = [self.images.shape[0], *([data.images_b.shape[0]] if self.two_domains else [])]
        self.per_rank = self._batch_size(cfg.train.batch_size, min(sizes), ranks)
        self.mine = slice(ranks.rank * self.per_rank, (ranks.rank + 1) * self.per_rank)
        self.global_batch = self.per_rank * ranks.world
        self.order = BatchOrder(sizes[0], self.global_batch, cfg.train.seed, device)
        if self.two_domains:
            self.images_b, self.labels_b = data.images_b.to(device), data.labels_b.to(device)
            self.order_b = BatchOrder(sizes[1], self.global_batch, cfg.train.seed + 1000, device)
        self.data_cfg, self.model, self.layout = cfg.data, model, layout

    @staticmethod
    def _batch_size(asked: int, size: int, ranks: Distributed) -> int:
        """train.batch_size, or less where the dataset holds fewer items than a global batch."""
        if size >= asked * ranks.world:
            return asked
        if size < ranks.world:
            raise GenforgeError(f"the dataset has {size} items, fewer than the {ranks.world} processes")
        cut = size // ranks.world
        if ranks.main:
            tqdm.write(f"genforge: warning: the dataset has {size} items, fewer than train.batch_size={asked}"
                       f"{f' x {ranks.world} processes' if ranks.active else ''}: training with batches of {cut}",
                       file=sys.stderr)
        return cut

    def _images(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """One domain's batch: prepared, augmented (each domain alike) and laid out for the networks."""
        x = augment(self.model.prepare(images[index]), self.data_cfg, output_range=self.model.output_range)
        return x.contiguous(memory_format=self.layout)

    def __call__(self) -> Batch:
        index = self.order.next()[self.mine]
        batch = Batch(self._images(self.images, index), self.labels[index])
        if self.two_domains:
            index_b = self.order_b.next()[self.mine]
            batch.images_b, batch.labels_b = self._images(self.images_b, index_b), self.labels_b[index_b]
        return batch

    def state(self) -> dict[str, dict[str, int]]:
        return {"data_order": self.order.state(), **({"data_order_b": self.order_b.state()} if self.two_domains else {})}

    def load(self, extra: dict[str, Any]) -> None:
        self.order.load(extra["data_order"])
        if self.two_domains:
            self.order_b.load(extra["data_order_b"])


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
def stop_on_sigint(run_dir: Path | None = None):
    """First Ctrl-C (or SIGTERM, which torchrun sends its workers) asks the loop to stop at the
    next step boundary, with a checkpoint; a second Ctrl-C kills. With ``run_dir``, a stop asked in
    writing before the handler was in place (RUN_DIR/stop.json, :func:`genforge.runs.request_stop`)
    counts too: the studio's Stop can reach a child whose start-up ignored the signal."""
    from genforge.runs import clear_stop, stop_requested

    flag = {"stop": False}

    def handler(signum, frame):
        flag["stop"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = signal.signal(signal.SIGINT, handler)
        previous_term = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. the web studio): no handler
        previous = previous_term = None
    try:
        if run_dir is not None and stop_requested(run_dir):  # read after the handler is in place
            flag["stop"] = True
        yield flag
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)
        if run_dir is not None:
            clear_stop(run_dir, only_mine=True)


def rank_rng(ranks: Distributed) -> dict[str, torch.Tensor]:
    """The RNG state to checkpoint: this process's, or under torchrun every rank's as ``rankR.KEY``."""
    if not ranks.active:
        return rng_state()
    states = ranks.gather_objects({k: v.cpu() for k, v in rng_state().items()})
    return {f"rank{r}.{k}": v for r, state in enumerate(states) for k, v in state.items()}


def restore_rank_rng(state: dict[str, torch.Tensor], ranks: Distributed) -> bool:
    """Set this rank's RNG from a checkpoint (checked by :func:`genforge.checkpoint.check_rng`); False
    when it was saved by a different number of processes: the RNG is left as seeded, and the run
    continues, not bit for bit."""
    saved_world = len({k.split(".", 1)[0] for k in state if k.startswith("rank")}) or 1
    if saved_world != ranks.world:
        return False
    if not ranks.active:
        set_rng_state(state)
        return True
    prefix = f"rank{ranks.rank}."
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if "torch" not in own:
        return False
    set_rng_state(own)
    return True


def phase_runner(model: GenerativeModel, phases: list[Phase], fast: FastPaths, ranks: Distributed,
                 device: torch.device, seed: int) -> Callable[[int, Batch], dict[str, torch.Tensor]] | None:
    """How :func:`train_step` runs phase ``i`` here: compiled when ``fast.compile``, and under torchrun
    behind one ``DistributedDataParallel``; None = each phase's own step, as it is."""
    steps = [torch.compile(phase.step) if fast.compile else phase.step for phase in phases]
    if not ranks.active:
        return (lambda index, batch: steps[index](batch)) if fast.compile else None
    from torch.nn.parallel import DistributedDataParallel

    exact_grad_strides(model)  # DDP's buckets take each weight's strides; a grey layer's gradients differ
    # broadcast_buffers stays on (rank 0's BN statistics at every forward): turned off, it bought
    # no measurable speed, and a rank then aborted at exit in 4 of 38 two-process runs.
    ddp = DistributedDataParallel(PhaseRunner(model, steps), find_unused_parameters=True,
                                  device_ids=[device.index] if device.type == "cuda" else None)
    # The same weights everywhere (seeded, and DDP broadcasts rank 0's); its own noise per rank.
    torch.manual_seed(seed + 7919 * ranks.rank)
    return ddp.__call__


class NumericalFault(GenforgeError):
    """A non-finite loss or weight stopped the run (the CLI prints it as one error line)."""


def numerical_problem(values: dict[str, float], model: torch.nn.Module, guard: NanGuard | None) -> str | None:
    """What is not finite: the first logged loss ("phase/name"), else the weights, else too many
    skipped updates; None when all is well. Reading the weights is one host sync."""
    for key, value in values.items():
        if "/" in key and not math.isfinite(value):
            return f"the loss {key} of phase {key.split('/', 1)[0]} is {value}"
    with torch.no_grad():
        named = [(k, t) for k, t in model.state_dict().items() if t.is_floating_point()]
        finite = torch.stack([t.isfinite().all() for _, t in named]) if named else torch.ones(1, dtype=torch.bool)
        if not bool(finite.all()):
            key = named[int((~finite).nonzero()[0])][0]
            return f"the weight {key} of the {key.split('.', 1)[0]} network is no longer finite"
    if guard is not None and guard.skipped > guard.limit:
        return f"{guard.skipped} updates skipped for non-finite gradients, more than train.nan_skips={guard.limit}"
    return None


class TrainingRun:
    """One training run's objects, set up by :func:`prepare_run`: the config, the data as batches,
    the networks, their optimisers and phases, and how each phase runs (compiled, behind DDP). It
    steps (:meth:`step`), saves and restores exactly what a checkpoint holds, and draws the
    progress grid; :func:`train` runs the loop over it."""

    def __init__(self, cfg: RunConfig, run_dir: Path, ranks: Distributed, device: torch.device, fast: FastPaths,
                 train_data: Any, root: str | None):
        self.cfg, self.run_dir, self.ranks, self.device, self.fast = cfg, run_dir, ranks, device, fast
        self.train_data, self.root = train_data, root
        self.item_shape = tuple(train_data.images.shape[1:])  # (C, H, W) images at data.image_size, or (D,) points
        self.num_classes = len(train_data.classes)
        layout = torch.channels_last if fast.channels_last else torch.contiguous_format
        self.model = build_model(cfg, self.item_shape, self.num_classes).to(device, memory_format=layout)
        self.batches = BatchStream(train_data, cfg, self.model, ranks, device, layout)
        attach_ema(self.model, cfg.train.ema_decay)
        self.optimizers = make_optimizers(self.model, cfg.optim)
        self.phases = self.model.phases()
        # float16 needs loss scaling (one scaler per optimiser); bfloat16 has float32's range.
        self.scalers = ({name: torch.amp.GradScaler(device.type) for name in self.optimizers}
                        if fast.dtype is torch.float16 else {})
        self.run_phase = phase_runner(self.model, self.phases, fast, ranks, device, cfg.train.seed)
        self.guard = NanGuard(cfg.train.nan_skips) if cfg.train.on_nan == "skip" else None
        self.resumed_window: dict[str, Any] | None = None  # the checkpoint's loss window, once restored
        self.fixed_inputs = self.model.fixed_inputs(train_data, FIXED_NOISE,
                                                    torch.Generator().manual_seed(cfg.train.seed + 1)).to(device)

    def step(self) -> dict[str, torch.Tensor]:
        """One :func:`train_step` of every phase, as this run's fast paths and ranks run it."""
        return train_step(self.model, self.optimizers, self.phases, self.batches, run_phase=self.run_phase,
                          scalers=self.scalers, autocast=self.fast.autocast, ranks=self.ranks, guard=self.guard)

    def check_finite(self, step: int, values: dict[str, float] | None = None) -> None:
        """Stop the run (:class:`NumericalFault`) when a logged loss or a weight is not finite, or
        train.on_nan=skip has skipped more than train.nan_skips updates; every rank stops alike."""
        problem = numerical_problem(values or {}, self.model, self.guard)
        if not self.ranks.any(problem is not None, self.device):
            return
        try:
            kept = (f"the last finite checkpoint, {latest_checkpoint(self.run_dir).name}, is kept (genforge train "
                    f"--resume {self.run_dir} continues from it)")
        except GenforgeError:
            kept = "no checkpoint was written before it"
        raise NumericalFault(f"step {step}: {problem or 'another process met a non-finite value'}; the run stopped "
                             f"(train.on_nan={self.cfg.train.on_nan}) and wrote no non-finite weights; {kept}; a lower "
                             f"optim.lr, or {'a larger train.nan_skips' if self.guard else 'train.on_nan=skip'}, in a "
                             "new run may get past it")

    def snapshot(self, step: int, **extra: Any) -> Checkpoint:
        """The full training state; under torchrun a collective (every rank's RNG is gathered)."""
        scalers = {"grad_scalers": {k: v.state_dict() for k, v in self.scalers.items()}} if self.scalers else {}
        return Checkpoint(
            step=step, model=self.model.state_dict(), rng=rank_rng(self.ranks),
            optimizers={name: opt.state_dict() for name, opt in self.optimizers.items()},
            extra={**self.batches.state(), "config": self.cfg.to_dict(), "processes": self.ranks.world, **scalers,
                   "image_shape": list(self.item_shape), "num_classes": self.num_classes, **extra})

    def restore(self, start: str | None = None) -> int:
        """Weights, optimiser moments, RNG, data order and loss scales of the newest checkpoint (or the
        one named ``start``, e.g. step-0000240); its step. Everything is checked against this run's
        model, optimisers and data first (:func:`check_restorable`): a damaged checkpoint is refused
        before any of it is used or anything is written."""
        folder = latest_checkpoint(self.run_dir, start)
        ckpt = load_checkpoint(folder, map_location=self.device)
        self.check_restorable(folder, ckpt)
        self.model.load_state_dict(ckpt.model)
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(ckpt.optimizers[name])
            like_params(optimizer)
        if not restore_rank_rng(ckpt.rng, self.ranks) and self.ranks.main:
            tqdm.write(f"genforge: warning: {self.run_dir}: saved by {ckpt.extra.get('processes', 'another number of')} "
                       f"processes, resumed by {self.ranks.world}; the run continues, but not bit for bit",
                       file=sys.stderr)
        self.batches.load(ckpt.extra)
        self.resumed_window = ckpt.extra.get("loss_window")
        for name, scaler in self.scalers.items():
            if name in ckpt.extra.get("grad_scalers", {}):
                scaler.load_state_dict(ckpt.extra["grad_scalers"][name])
        return ckpt.step

    def check_restorable(self, folder: Path, ckpt: Checkpoint) -> None:
        """The checkpoint fits this run: its data's shape and classes, the data order within the
        dataset, every weight and optimiser tensor of the shape and dtype it will be loaded into."""
        check_run_state(folder, ckpt.extra)
        if tuple(ckpt.extra["image_shape"]) != self.item_shape or ckpt.extra["num_classes"] != self.num_classes:
            raise refuse(folder, "state.json", f"made for data of shape {tuple(ckpt.extra['image_shape'])} with "
                                               f"{ckpt.extra['num_classes']} classes, but this data is {self.item_shape} "
                                               f"with {self.num_classes}")
        for key, order in (("data_order", self.batches.order), ("data_order_b", getattr(self.batches, "order_b", None))):
            if order is None:
                continue
            if key not in ckpt.extra:
                raise refuse(folder, "state.json", f"'{key}' is missing: it was written for data of one domain")
            self.check_same_data(folder, key, ckpt.extra[key], order.size)
        check_weights(folder, ckpt.model, self.model)
        check_optimizers(folder, ckpt.optimizers, self.optimizers)

    def check_same_data(self, folder: Path, key: str, saved: dict[str, int], size: int) -> None:
        """The data is as big as when the checkpoint was written: an image folder that lost or gained files
        was blamed on a damaged state.json. (A checkpoint from before the size was kept shows it by a place
        past the data's end only.)"""
        had = saved.get("size")
        if saved["position"] <= size and had in (None, size):
            return
        data = self.cfg.data
        where = data.path_b if key == "data_order_b" else (data.path or data.dataset.removeprefix("folder:"))
        changed = f" (were images added to or removed from {where}?)" if where and Path(where).is_absolute() else ""
        if had is None or had == size:
            raise refuse(folder, "state.json", f"'{key}' is {saved!r}, not a place in a dataset of {size} items"
                                               + (f", or the data had more items then{changed}" if had is None else ""))
        raise GenforgeError(f"{self.run_dir}: the run's data{' B' if key == 'data_order_b' else ''} has {size} items "
                            f"now and had {had} when {folder.name} was written{changed}; resume with the data as it "
                            "was, or train anew into another folder (nothing of the run was changed)")

    def save(self, step: int, log: MetricsLog | NullLog, window: dict[str, Any] | None = None) -> None:
        """A checkpoint of ``step`` (rank 0 writes it) of finite weights only (a non-finite one stops the
        run instead, the last finite checkpoint kept), with the loss ``window`` so far; under DDP also the
        check that the ranks agree."""
        self.check_finite(step)
        state = self.snapshot(step, **({"loss_window": window} if window and window["counts"] else {}))
        if self.ranks.main:
            save_checkpoint(self.run_dir, state)
        if self.ranks.active:  # DDP keeps every rank's weights identical: check it at each checkpoint
            prints = self.ranks.gather(weight_fingerprint(self.model).to(self.device)[None])
            in_sync = bool((prints == prints[0]).all())
            log.log(step, {"ddp/ranks_in_sync": float(in_sync)})
            if not in_sync and self.ranks.main:
                tqdm.write(f"genforge: warning: step {step}: the ranks' weights differ", file=sys.stderr)

    def sample_grid(self, name: str, step: int, log: MetricsLog | NullLog) -> None:
        """The progress picture from the fixed inputs, as samples/NAME.png and in TensorBoard (rank 0)."""
        if self.ranks.main:
            with self.model.inference():
                grid = self.model.progress_image(self.fixed_inputs, self.train_data)
            log.image("samples", grid, step)
            viz.save_grid_image(grid, self.run_dir / "samples" / f"{name}.png")

    def checkpoint_metrics(self, step: int, log: MetricsLog | NullLog) -> None:
        """The cheap metrics registered for a checkpoint (e.g. the toys' modes), logged by rank 0."""
        if self.ranks.main:
            with self.model.inference():
                values = checkpoint_metrics(self.model, self.train_data, step, self.device)
            if values:
                log.log(step, values)


def prepare_run(cfg: RunConfig, run_dir: Path, resume: bool, data_root: str | None) -> TrainingRun:
    """Check the config whole, load the data and check the config against it, and only then create
    the run folder (a refused config leaves none) and build the run's networks and phases."""
    validate(cfg)
    tcfg = cfg.train
    ranks, device_name = init_distributed(tcfg.device)
    device = resolve_device(device_name)
    set_threads(tcfg.threads, ranks.local_world)
    torch.manual_seed(tcfg.seed)
    # Data: decoded once into a uint8 tensor (named sets resized, image folders decoded and cached).
    root = cfg.data.root or data_root
    train_data = load_data(cfg.data, "train", root)
    validate(cfg, tuple(train_data.images.shape[1:]), len(train_data.classes), train_data.images_b is not None)
    long_run = tcfg.steps >= 2000 or tcfg.minutes >= 10 or (tcfg.steps <= 0 and tcfg.minutes <= 0)
    fast = choose_fast_paths(tcfg.precision, tcfg.channels_last, tcfg.compile, cfg.optim.fused, device,
                             images=train_data.images.ndim == 4, long_run=long_run,
                             compilable=not registry.family(cfg.family).uncompilable(cfg.model))
    return TrainingRun(cfg, run_dir, ranks, device, fast, train_data, root)


def make_folder(run: TrainingRun, resume: bool) -> None:
    """The run folder and (for a new run) its config.json, by rank 0 alone: only once the config, the
    data and a resumed checkpoint have all been checked, so a refused run leaves its folder as it was."""
    if run.ranks.main:
        for sub in ("samples", "plots", "checkpoints"):
            (run.run_dir / sub).mkdir(parents=True, exist_ok=True)
        if not resume:
            write_json_atomic(run.run_dir / "config.json", run.cfg.to_dict())


class TrainingEvalHook:
    """The optional cheap metric: FID of eval_n samples every eval_every steps, from its own RNG (the
    training stream is untouched); the best checkpoint by it is kept as checkpoints/best."""

    def __init__(self, run: TrainingRun, resume: bool):
        from genforge.metrics.evaluate import TrainingEval

        cfg, tcfg = run.cfg, run.cfg.train
        self.evaluate = TrainingEval(cfg.data.dataset, cfg.data.image_size, tcfg.eval_n, tcfg.seed, run.device,
                                     run.root, ranks=run.ranks)
        best_state = run.run_dir / "checkpoints" / "best" / "state.json"
        self.best_fid = (json.loads(best_state.read_text()).get("eval_fid", math.inf)
                         if resume and best_state.is_file() else math.inf)

    def __call__(self, run: TrainingRun, step: int, log: MetricsLog | NullLog) -> None:
        values, warning = self.evaluate(run.model, step)  # samples split across the ranks
        log.log(step, values)
        if warning and run.ranks.main:
            tqdm.write(f"genforge: warning: {warning}", file=sys.stderr)
        if values["eval/fid"] < self.best_fid:
            self.best_fid = values["eval/fid"]
            best = run.snapshot(step, eval_fid=self.best_fid)
            if run.ranks.main:
                save_best(run.run_dir, best)


def set_learning_rate(optimizers: dict[str, torch.optim.Optimizer], cfg: OptimConfig, factor: float) -> None:
    """Every optimiser's learning rate to its :func:`group_lr` x ``factor``: a plain float per group, so no
    host sync."""
    for name, optimizer in optimizers.items():
        for group in optimizer.param_groups:
            group["lr"] = group_lr(cfg, name) * factor


class LossWindow:
    """The logged terms summed on the device between log steps; read back (the host sync) only at them."""

    def __init__(self, start_step: int):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.resumed: dict[str, float] = {}  # a checkpoint's sums, until their terms are next logged
        self.start_step, self.start_time = start_step, time.monotonic()

    def add(self, logged: dict[str, torch.Tensor]) -> None:
        for key, value in logged.items():
            if key in self.resumed:  # a checkpoint's sum, in the term's own dtype (bf16 terms sum in bf16)
                self.sums[key] = torch.tensor(self.resumed.pop(key), dtype=value.dtype, device=value.device)
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def restart(self, step: int, when: float) -> None:
        self.sums, self.counts, self.resumed, self.start_step, self.start_time = {}, {}, {}, step, when

    def totals(self) -> dict[str, float]:
        """Each term's sum so far, a checkpoint's included (the host sync)."""
        return {**self.resumed, **{key: float(value) for key, value in self.sums.items()}}

    def state(self) -> dict[str, dict[str, Any]]:
        """The sums and counts of the window so far (the host sync, at a checkpoint only): a run stopped
        between log steps and resumed logs the same row as one that never stopped."""
        return {"sums": self.totals(), "counts": dict(self.counts)}

    def load(self, state: dict[str, dict[str, Any]] | None) -> None:
        """Go on with a checkpoint's window (none in checkpoints before it was kept: a window of this
        process's steps only). The speed is still timed over this process's steps."""
        if state:
            self.resumed = {key: float(value) for key, value in state["sums"].items()}
            self.counts = {key: int(count) for key, count in state["counts"].items()}

    def read(self, step: int, images_per_step: int) -> dict[str, float]:
        """The window's mean of each term and the images/s over it; starts a new window."""
        now = time.monotonic()
        values = {key: total / self.counts[key] for key, total in self.totals().items()}
        values["images_per_s"] = images_per_step * (step - self.start_step) / max(now - self.start_time, 1e-9)
        self.restart(step, now)
        return values

    def after_compile(self, step: int, log: MetricsLog | NullLog, show: bool) -> None:
        """Log how long torch.compile and the first step took, and time the speed from after them."""
        now = time.monotonic()
        seconds = now - self.start_time
        if show:
            tqdm.write(f"genforge: torch.compile and the first step took {seconds:.1f} s", file=sys.stderr)
        log.log(step, {"compile_s": seconds})
        self.start_step, self.start_time = step, now


def _announce(run: TrainingRun) -> None:
    if run.ranks.main:
        where = f"{run.ranks.world} processes on {run.device.type}" if run.ranks.active else str(run.device)
        tqdm.write(f"genforge: {run.cfg.recipe} on {where}: {run.fast.describe()}", file=sys.stderr)


def finish_run(run: TrainingRun, step: int, interrupted: bool, log: MetricsLog | NullLog, progress: bool) -> RunResult:
    """Rank 0's end of a run: the final grid and loss curves, and for a run that reached its budget
    the metrics and pictures registered for the family and its data (what ``genforge eval`` runs)."""
    from genforge.metrics.evaluate import final_metrics, write_report

    result = RunResult(run.run_dir, step, interrupted)
    run.sample_grid("final", step, log)
    rows = viz.read_metrics(log.path)
    loss_keys = sorted({k for row in rows for k in row if "/" in k and not k.startswith("eval/")})
    viz.plot_curves(rows, loss_keys, run.run_dir / "plots" / "losses.png", title=f"{run.cfg.recipe}: training losses")
    if not interrupted:
        test_data = load_data(run.cfg.data, "test", run.root)
        ctx = Context(run.run_dir, run.train_data, test_data, run.device, run.cfg.train.eval_samples, progress)
        run.model.eval()
        result.metrics = {f"eval/{k}": v for k, v in final_metrics(run.model, ctx).items()}
        write_report(run.model, ctx)
        if result.metrics:
            log.log(step, {**FINAL_ROW, **result.metrics})
    log.close()
    return result


DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}
# A test hook: called with "step" after each step (and "log", "sample", "checkpoint" after those),
# so the fault tests can kill the process at an exact point. None in normal use; see also
# genforge.checkpoint.WRITER_HOOK, and kill_hook_from_env for torchrun's workers.
FAULT_HOOK: Callable[[str, int], None] | None = None
KILL_ENV = "GENFORGE_TEST_KILL"  # "RANK:STEP": that rank SIGKILLs itself after that step, in a first attempt only


def _fault(where: str, step: int) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(where, step)


def kill_hook_from_env() -> Callable[[str, int], None] | None:
    """The hook ``$GENFORGE_TEST_KILL=RANK:STEP`` asks for (torchrun's fault test): rank RANK kills
    itself with SIGKILL after step STEP, unless torchrun restarted it (TORCHELASTIC_RESTART_COUNT > 0)."""
    import os

    spec = os.environ.get(KILL_ENV, "")
    if not spec or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        return None
    rank, step = (int(part) for part in spec.split(":"))

    def hook(where: str, at: int) -> None:
        if where == "step" and at == step and int(os.environ.get("RANK", "0")) == rank:
            # Said first: whichever process torchrun sees fail first (this one's -9, or a peer's exit
            # when its collective breaks) is a race, so the test reads the kill from this line.
            print(f"genforge: test hook: rank {rank} kills itself after step {step}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def train(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, data_root: str | None = None,
          progress: bool = True, start: str | None = None, on_start: Callable[[], None] | None = None) -> RunResult:
    """Train ``cfg`` into ``run_dir`` (or continue it with ``resume=True``, from its newest checkpoint
    or the one named ``start``, e.g. "step-0000240"); returns the final step.

    The config is validated whole, and again with the data's shape once it is loaded, and a resumed
    checkpoint against the networks, before anything is written: a refused run leaves its folder as
    it was (``on_start`` is called once the writing begins). A full disk or an I/O error while
    writing is one GenforgeError line, and the last complete checkpoint is kept; a non-finite loss
    or weight is a :class:`NumericalFault`."""
    keep_freed_memory()  # (as the CLI does): each step's tensors reuse the last one's pages
    try:
        return _train(cfg, Path(run_dir), resume, data_root, progress, start, on_start)
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        raise write_error(_written_name(e.filename), e, Path(run_dir)) from None
    except RuntimeError as e:  # under torchrun: a collective whose peer died (killed, out of memory)
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()
                and (isinstance(e, torch.distributed.DistError) or "gloo" in str(e) or "Connection" in str(e))):
            raise
        raise GenforgeError(f"another process of the torchrun group stopped ({str(e).splitlines()[0][:160]}); "
                            f"torchrun --max-restarts N restarts the group from {run_dir}'s last checkpoint, or "
                            f"genforge train --resume {run_dir} under torchrun again") from None


def _written_name(filename: Any) -> str:
    """The file a failed write was for (atomic_output's temporary ``.NAME.PID-HEX.tmp.SUFFIX`` -> NAME.SUFFIX)."""
    if not filename:
        return "the run's files"
    name = Path(str(filename)).name
    match = re.fullmatch(r"\.(.+)\.\d+-[0-9a-f]+\.tmp(\.[^.]+)?", name)
    return match.group(1) + (match.group(2) or "") if match else name


def _train(cfg: RunConfig, run_dir: Path, resume: bool, data_root: str | None, progress: bool, start: str | None,
           on_start: Callable[[], None] | None) -> RunResult:
    # Set-up: the config and data checked, a resumed run's exact state checked and loaded, the run folder.
    global FAULT_HOOK
    FAULT_HOOK = FAULT_HOOK or kill_hook_from_env()
    run = prepare_run(cfg, run_dir, resume, data_root)
    tcfg, model, ranks, device = cfg.train, run.model, run.ranks, run.device
    step = run.restore(start) if resume else 0
    make_folder(run, resume)
    if on_start is not None:
        on_start()
    redo = resume or (run_dir / "metrics.jsonl").exists()  # rows past the checkpoint (or of a restarted start) go
    log = MetricsLog(run.run_dir, resume_step=step if redo else None) if ranks.main else NullLog()
    evaluator = TrainingEvalHook(run, resume) if tcfg.eval_every > 0 else None

    # The loop: one train_step (every phase, each repeat on a fresh batch), EMA, then the periodic work.
    deadline = time.monotonic() + tcfg.minutes * 60 if tcfg.minutes > 0 else math.inf
    last_step = tcfg.steps if tcfg.steps > 0 else math.inf
    window, saved_step, first_step = LossWindow(step), step, step + 1
    if resume:
        window.load(run.resumed_window)
    _announce(run)
    bar = tqdm(total=tcfg.steps or None, initial=step, disable=not (progress and ranks.main), unit="step",
               dynamic_ncols=True, desc=cfg.recipe)
    with stop_on_sigint(run.run_dir if ranks.main else None) as sigint, closed_on_error(log, bar):
        while step < last_step:
            # Ranks stop together: under torchrun they agree at log steps (the only syncs).
            if not ranks.active or step % tcfg.log_every == 0:
                if ranks.any(time.monotonic() >= deadline or sigint["stop"], device):
                    break
            model.progress = step / tcfg.steps if tcfg.steps else 0.0
            if cfg.optim.schedule != "constant":
                set_learning_rate(run.optimizers, cfg.optim, lr_factor(cfg.optim, model.progress))
            window.add(run.step())
            recheck_threads()  # a run on automatic threads follows the cores other work leaves free
            update_ema(model, tcfg.ema_decay, step)
            step += 1
            bar.update(1)
            _fault("step", step)
            if run.fast.compile and step == first_step:  # this process's first step compiled the phases
                window.after_compile(step, log, progress and ranks.main)

            over = run.guard is not None and run.guard.skipped > run.guard.limit  # a host count: no sync
            if step % tcfg.log_every == 0 or step == tcfg.steps or over:
                values = window.read(step, run.batches.global_batch)
                if over:  # the skips that stop the run, on disk before it stops
                    log.log(step, {"nan_skips": run.guard.skipped})
                run.check_finite(step, values)  # a non-finite loss or weight stops the run here
                log.log(step, {**values, **({"nan_skips": run.guard.skipped} if run.guard else {})})
                bar.set_postfix({k.split("/", 1)[-1]: f"{v:.3g}" for k, v in values.items()})
                _fault("log", step)
            if step % tcfg.sample_every == 0:
                run.sample_grid(f"step-{step:07d}", step, log)
                _fault("sample", step)
            if step % tcfg.checkpoint_every == 0:
                run.save(step, log, window.state())  # never of non-finite weights
                saved_step = step
                run.checkpoint_metrics(step, log)
                _fault("checkpoint", step)
            if evaluator is not None and step % tcfg.eval_every == 0:
                evaluator(run, step, log)
        interrupted = sigint["stop"]

        # The end: a last checkpoint, and rank 0's final grid, curves and the family's report.
        missing = ranks.main and not (run.run_dir / "checkpoints" / "latest").exists()
        if ranks.any(step != saved_step or missing, device):
            run.save(step, log, window.state())
    bar.close()
    if ranks.active:  # the ranks leave together
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if not ranks.main:
        return RunResult(run.run_dir, step, interrupted)
    return finish_run(run, step, interrupted, log, progress)


@contextmanager
def closed_on_error(log: MetricsLog | NullLog, bar: tqdm):
    """On an error inside the loop: the progress bar and the metrics log closed (what was logged
    is on disk), quietly, so the error itself is what the user sees."""
    try:
        yield
    except BaseException:
        bar.close()
        try:
            log.close()
        except OSError:
            pass
        raise
