"""Many seeds of one small network trained as one batched model (``--seeds N``, ``genforge bench toys``).

The toy MLPs (a few thousand multiply-adds per point) are bound by the cost of launching each
operation, not by arithmetic: a step of 5 seeds one by one is 5x the launches, while the same step
with every weight stacked along a leading seed axis, (N, out, in), is the launches of one. So
:class:`SeedStack` stacks the N runs' parameters and buffers (``torch.func.stack_module_state``)
and runs the family's own phase steps for all seeds at once with ``torch.func.vmap`` over
``functional_call``: each seed's means, top-k, packing and batch-norm statistics stay its own,
because inside ``vmap`` every operation sees one seed's tensors.

Each seed's run stays its own, and is exactly what training it alone writes: it is prepared by the
one loop's :func:`genforge.train.prepare_run` (its own folder, config, data order, initial
weights), draws its batches and noise from its own RNG stream in the order training alone draws
them (the family's ``sample_noise`` is handed the seed's pre-drawn noise inside the vmapped step),
and is written back into its own networks and optimisers for every log, sample grid, checkpoint
and the final evaluation, so its folder resumes alone with ``genforge train --resume``. Over the
first steps a seed matches the same seed trained alone within float tolerance (batched and single
matrix products round differently, so GAN runs drift apart later, as any two float orders do).

The optimisers are the seed's own kind and options over the stacked tensors: Adam, AdamW, RMSProp,
Adadelta and SGD are elementwise (moments per weight; one shared step count, equal for every seed),
so one optimiser over (N, ...) parameters makes the N seeds' own updates.

Configurations the batched step does not reproduce, and networks whose layers are large enough to be
bound by arithmetic (the recipes' toy MLPs at their batch sizes, where batching measured 0.76-0.96x: see
:data:`OVERHEAD_BOUND_MACS`), are trained one by one, after a line that says why (:func:`why_not_batched`).
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from genforge.models.base import Batch

# Noise tensors each repeat of a phase draws through ``model.sample_noise``: the GAN's D and G
# steps each draw one batch of z (model.reuse_fakes=false); DiscoGAN translates data, drawing none.
NOISE_DRAWS = {"gan": 1, "discogan": 0}

# Batching pays only while a layer's arithmetic is small beside the cost of launching it. Measured side by
# side on a 2-core Zen 5 (5 seeds, one thread, load 3): hidden 16 at batch 16 (4k multiply-adds a layer)
# ran 2.2x faster batched; the recipes' hidden 128 at batch 256 and hidden 256 at batch 64 (4.2M) ran
# 0.76-0.96x (bmm is no faster than the mm it replaces there, and a G step also computes D's gradients).
OVERHEAD_BOUND_MACS = 1 << 20  # batch_size x hidden^2 at or below this: batched


def why_not_batched(cfgs: Sequence[Any]) -> str | None:
    """Why these run configs cannot train as one batched model (one line), or None when they can."""
    if len(cfgs) < 2:
        return "one seed"
    cfg = cfgs[0]
    shared = [c.to_dict() for c in cfgs]
    for one in shared:
        one["train"].pop("seed", None)
    if any(one != shared[0] for one in shared[1:]):
        return "the seeds' configs differ in more than train.seed"
    if cfg.family not in NOISE_DRAWS:
        return f"the {cfg.family} family has no batched step"
    model, train = cfg.model, cfg.train
    macs = train.batch_size * model.hidden ** 2
    checks = [
        (macs > OVERHEAD_BOUND_MACS, f"its layers are bound by arithmetic, not launches (batch x hidden^2 = "
                                     f"{macs:,} multiply-adds > {OVERHEAD_BOUND_MACS:,}), where batching is no faster"),
        (model.arch not in ("mlp", "auto"), f"model.arch={model.arch}: conv networks are not overhead-bound"),
        (train.ema_decay > 0, "train.ema_decay > 0 (EMA copies are not stacked)"),
        (train.eval_every > 0, "train.eval_every > 0 (the FID hook runs per run)"),
        (train.compile == "on", "train.compile=on"),
        (train.precision not in ("auto", "fp32"), f"train.precision={train.precision}"),
        (getattr(train, "on_nan", "stop") == "skip", "train.on_nan=skip (a skipped update is one seed's)"),
    ]
    if cfg.family == "gan":
        checks += [
            (model.schedule != "alternate", "model.schedule=threshold (its gates are one host sync per seed)"),
            (model.reuse_fakes and model.d_steps == 1, "model.reuse_fakes=true (G's graph is kept between phases)"),
            (model.loss == "wgan-gp" or model.r1_gamma > 0,
             "gradient penalties differentiate inside the step, which vmap does not take"),
            (model.loss == "wasserstein" and model.clip > 0, "weight clipping acts on one network's own weights"),
            (model.conditional != "none", "conditional GANs"),
        ]
    return next((why for failed, why in checks if failed), None)


def _as_buffers(module: nn.Module) -> nn.Module:
    """``module``'s parameters turned into buffers of the same names, in place. The vmapped step runs on
    this copy: ``frozen()`` (a G step through D) then finds no parameters to flip, which torch.func
    forbids inside a transform; the frozen network's gradients are dropped by its own next update."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                del sub._parameters[name]
                sub.register_buffer(name, param.detach())
    return module


class _Runner(nn.Module):
    """The family's phase steps behind one module: ``runner(i, batch)`` runs phase ``i`` (what
    ``functional_call`` needs, a module to swap the stacked tensors into)."""

    def __init__(self, model: nn.Module, steps: list[Callable[[Batch], dict[str, torch.Tensor]]]):
        super().__init__()
        self.model, self.steps = model, steps

    def forward(self, index: int, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.steps[index](Batch(**inputs))


class SeedStack:
    """N prepared training runs (:class:`genforge.train.TrainingRun`) of one config but the seed,
    stepped as one batched model; :meth:`sync` writes the stacked state back into each run."""

    def __init__(self, runs: list[Any]):
        self.runs = runs
        first = runs[0]
        self.family, self.device = first.cfg.family, first.device
        self.params, self.buffers = stack_module_state([run.model for run in runs])  # (N, ...) leaves
        self.rng = [torch.get_rng_state() for _ in runs]  # replaced by each seed's own in prepare_stack
        names = {id(p): name for name, p in first.model.named_parameters()}
        self.groups = {group: [names[id(p)] for p in opt.param_groups[0]["params"]]
                       for group, opt in first.optimizers.items()}
        self.optimizers = {group: type(opt)([self.params[n] for n in self.groups[group]], **opt.defaults)
                           for group, opt in first.optimizers.items()}
        self.template = _as_buffers(copy.deepcopy(first.model))
        self.template.sample_noise = self._drawn_noise  # the seeds' own noise, drawn before each step
        self.pending: list[torch.Tensor] = []
        self.phases = self.template.phases()
        runner = _Runner(self.template, [phase.step for phase in self.phases])
        prefix = lambda tensors: {f"model.{k}": v for k, v in tensors.items()}  # noqa: E731
        self.state = (prefix(self.params), prefix(self.buffers))

        def call(index: int, state, inputs, noises):
            self.pending[:] = list(noises)
            out = functional_call(runner, state, (index, inputs))
            if self.pending:
                raise RuntimeError(f"the {self.family} step drew less noise than NOISE_DRAWS says")
            return out

        # randomness="error": any draw but the planned noise would not be the seed's own stream
        self.step_all = vmap(call, in_dims=(None, 0, 0, 0), randomness="error")

    def _drawn_noise(self, n: int, generator=None, device=None, labels=None) -> torch.Tensor:
        if not self.pending:
            raise RuntimeError(f"the {self.family} step drew more noise than NOISE_DRAWS says")
        noise = self.pending.pop(0)
        if noise.shape[0] != n:
            raise RuntimeError(f"the {self.family} step drew noise of {n}, not of the batch ({noise.shape[0]})")
        return noise

    @contextmanager
    def seed_rng(self, index: int):
        """torch's global RNG as seed ``index``'s own stream inside the block (what it would be alone)."""
        torch.set_rng_state(self.rng[index])
        try:
            yield
        finally:
            self.rng[index] = torch.get_rng_state()

    def _draw(self) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """Every seed's next batch and noise, each from its own data order and RNG stream:
        ({"images": (N, B, ...), ...}, [noise (N, B, latent)] * NOISE_DRAWS)."""
        batches, noises = [], []
        for index, run in enumerate(self.runs):
            with self.seed_rng(index):
                batch = run.batches()
                batches.append(batch)
                noises.append([run.model.sample_noise(batch.images.shape[0], device=self.device)
                               for _ in range(NOISE_DRAWS[self.family])])
        fields = {k: getattr(batches[0], k) for k in ("images", "labels", "images_b", "labels_b")}
        inputs = {k: torch.stack([getattr(b, k) for b in batches]) for k, v in fields.items() if v is not None}
        return inputs, [torch.stack(draw) for draw in zip(*noises)]

    def step(self, progress: float) -> dict[str, torch.Tensor]:
        """One training step of every seed: each phase's repeats on fresh batches, then its update.
        Returns {"<phase>/<key>": (N,) detached}, as :func:`genforge.train.train_step` per seed."""
        self.template.progress = progress
        logged: dict[str, torch.Tensor] = {}
        for index, phase in enumerate(self.phases):
            sums: dict[str, torch.Tensor] = {}
            for _ in range(phase.repeats):
                inputs, noises = self._draw()
                losses = self.step_all(index, self.state, inputs, noises)
                optimizer = self.optimizers[phase.optimizer]
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].sum().backward()  # each seed's loss reaches only its own slice of the weights
                optimizer.step()
                for key, value in losses.items():
                    sums[key] = sums[key] + value.detach() if key in sums else value.detach()
            for key, total in sums.items():
                logged[f"{phase.name}/{key}"] = total / phase.repeats if phase.repeats > 1 else total
        return logged

    def set_lr(self, factor_lr: Callable[[str], float]) -> None:
        """Every stacked optimiser's learning rate to ``factor_lr(group)``."""
        for group, optimizer in self.optimizers.items():
            for param_group in optimizer.param_groups:
                param_group["lr"] = factor_lr(group)

    @torch.no_grad()
    def sync(self, progress: float) -> None:
        """Write the stacked weights, buffers and optimiser state back into each seed's own run."""
        for index, run in enumerate(self.runs):
            run.model.progress = progress
            own = dict(run.model.named_parameters())
            for name, param in own.items():
                param.copy_(self.params[name][index])
            for name, buffer in run.model.named_buffers():
                buffer.copy_(self.buffers[name][index])
            for group, stacked in self.optimizers.items():
                mine = run.optimizers[group]
                for name in self.groups[group]:
                    source = self.params[name]
                    mine.state[own[name]] = {key: value[index].clone() if _per_weight(value, source) else
                                             (value.clone() if torch.is_tensor(value) else value)
                                             for key, value in stacked.state.get(source, {}).items()}
                for mine_group, stacked_group in zip(mine.param_groups, stacked.param_groups):
                    mine_group["lr"] = stacked_group["lr"]


def _per_weight(value: Any, stacked: torch.Tensor) -> bool:
    return torch.is_tensor(value) and value.shape == stacked.shape


class StackedWindow:
    """The logged terms of every seed, (N,) tensors summed on the device between log steps."""

    def __init__(self, start_step: int):
        self.sums: dict[str, torch.Tensor] = {}
        self.count, self.start_step, self.start_time = 0, start_step, time.monotonic()

    def add(self, logged: dict[str, torch.Tensor]) -> None:
        for key, value in logged.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1

    def read(self, step: int, images_per_step: int) -> list[dict[str, float]]:
        """One row per seed: its window means and images/s (each seed's own images); a new window."""
        now = time.monotonic()
        means = {key: (total / max(self.count, 1)).tolist() for key, total in self.sums.items()}  # the host sync
        rate = images_per_step * (step - self.start_step) / max(now - self.start_time, 1e-9)
        seeds = len(next(iter(means.values()))) if means else 0
        rows = [{key: values[index] for key, values in means.items()} | {"images_per_s": rate} for index in range(seeds)]
        self.sums, self.count, self.start_step, self.start_time = {}, 0, step, now
        return rows

    def seed_state(self, index: int) -> dict[str, dict[str, Any]] | None:
        """Seed ``index``'s window so far as its own run's checkpoint keeps it (train.LossWindow.state)."""
        if not self.count:
            return None
        return {"sums": {key: float(total[index]) for key, total in self.sums.items()},
                "counts": {key: self.count for key in self.sums}}


def prepare_stack(cfgs: Sequence[Any], run_dirs: Sequence[Path], data_root: str | None) -> tuple[SeedStack | None, str]:
    """Each seed's run prepared as training it alone prepares it; the stack, or (None, why not)."""
    from genforge.train import prepare_run

    runs, states = [], []
    for cfg, run_dir in zip(cfgs, run_dirs):
        runs.append(prepare_run(cfg, Path(run_dir), False, data_root))
        states.append(torch.get_rng_state())  # seed's stream after its own seeding and initialisation
    if runs[0].ranks.active:
        return None, "torchrun (each rank trains its slice of one run)"
    if len(runs[0].item_shape) != 1:
        return None, "image data (conv networks are not overhead-bound)"
    stack = SeedStack(runs)
    stack.rng = states
    return stack, ""


def train_batched(cfgs: Sequence[Any], run_dirs: Sequence[str | Path], data_root: str | None = None,
                  progress: bool = True, log: Callable[[str], None] = print) -> list[Any]:
    """Train ``cfgs`` (one config, several seeds) into ``run_dirs`` as one batched model; each run as
    :func:`genforge.train.train` would write it alone. Configurations the batched step does not
    reproduce train one by one, after a line that says why. Returns one RunResult per seed trained: after an
    interrupted one (Ctrl-C), the seeds after it are not started."""
    from genforge.api import train_run

    why = why_not_batched(cfgs)
    stack = None
    if why is None:
        stack, why = prepare_stack(cfgs, [Path(d) for d in run_dirs], data_root)
    if stack is None:
        if len(cfgs) > 1:
            log(f"genforge: training the {len(cfgs)} seeds one by one: {why}")
        results = []
        for cfg, run_dir in zip(cfgs, run_dirs):
            results.append(train_run(cfg, run_dir, data_root=data_root, progress=progress))
            if results[-1].interrupted:  # Ctrl-C stops every seed, not the one it hit
                break
        return results
    return run_stack(stack, progress, log)


def run_stack(stack: SeedStack, progress: bool = True, log: Callable[[str], None] = print) -> list[Any]:
    """The one loop's schedule (train.steps or train.minutes; log, sample, checkpoint; Ctrl-C stops at a
    step with a checkpoint) for every seed of ``stack`` at once; each seed's end as training alone ends."""
    from genforge.runtime import MetricsLog
    from genforge.threads import describe_threads
    from genforge.train import finish_run, group_lr, lr_factor, make_folder, stop_on_sigint

    runs, cfg = stack.runs, stack.runs[0].cfg
    tcfg = cfg.train
    logs = []
    for run in runs:
        make_folder(run, False)
        logs.append(MetricsLog(run.run_dir, resume_step=0 if (run.run_dir / "metrics.jsonl").exists() else None))
    log(f"genforge: {cfg.recipe}: {len(runs)} seeds trained as one batched model ({describe_threads()})")
    deadline = time.monotonic() + tcfg.minutes * 60 if tcfg.minutes > 0 else math.inf
    last_step = tcfg.steps if tcfg.steps > 0 else math.inf
    step, saved_step, window = 0, 0, StackedWindow(0)
    bar = tqdm(total=tcfg.steps or None, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"{cfg.recipe} x{len(runs)}")
    with stop_on_sigint() as sigint:
        while step < last_step:
            if step % tcfg.log_every == 0 and (time.monotonic() >= deadline or sigint["stop"]):
                break
            share = step / tcfg.steps if tcfg.steps else 0.0
            if cfg.optim.schedule != "constant":
                factor = lr_factor(cfg.optim, share)
                stack.set_lr(lambda group: group_lr(cfg.optim, group) * factor)
            window.add(stack.step(share))
            step += 1
            bar.update(1)
            logged = step % tcfg.log_every == 0 or step == tcfg.steps
            sampled, saved = step % tcfg.sample_every == 0, step % tcfg.checkpoint_every == 0
            if logged or sampled or saved:
                _periodic(stack, logs, step, share, window, logged, sampled, saved)
                saved_step = step if saved else saved_step
        interrupted = sigint["stop"]
    bar.close()
    stack.sync(step / tcfg.steps if tcfg.steps else 0.0)
    results = []
    for index, (run, run_log) in enumerate(zip(runs, logs)):
        with stack.seed_rng(index):
            if step != saved_step or not (run.run_dir / "checkpoints" / "latest").exists():
                run.save(step, run_log, window.seed_state(index))
            results.append(finish_run(run, step, interrupted, run_log, progress))
    return results


def _periodic(stack: SeedStack, logs: list[Any], step: int, share: float, window: StackedWindow, logged: bool,
              sampled: bool, saved: bool) -> None:
    """A log, sample or checkpoint step: the stacked state written back, then each seed's own work."""
    from genforge.threads import recheck_threads

    stack.sync(share)
    rows = window.read(step, stack.runs[0].batches.global_batch) if logged else None
    if rows is not None:
        recheck_threads()
    for index, (run, run_log) in enumerate(zip(stack.runs, logs)):
        with stack.seed_rng(index):
            if rows is not None:
                run.check_finite(step, rows[index])
                run_log.log(step, rows[index])
            if sampled:
                run.sample_grid(f"step-{step:07d}", step, run_log)
            if saved:
                run.save(step, run_log, window.seed_state(index))
                run.checkpoint_metrics(step, run_log)
