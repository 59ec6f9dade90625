"""Crash-safe checkpoints that never execute code when loaded.

Layout of ``RUN_DIR/checkpoints/``::

    step-000300/            one complete checkpoint
      model.safetensors     network weights, keys "<network>.<param>", EMA copies as "ema.<network>.<param>"
      optim.safetensors     every optimiser tensor, keys "<optimiser>/<param index>/<name>"
      rng.safetensors       torch CPU (and CUDA) RNG states
      state.json            step, optimiser hyper-parameters and scalars, data-order state, config
    latest -> step-000300   symlink, swapped atomically once the folder is complete
    step-000200/            the previous good checkpoint is kept

A checkpoint is written into ``.tmp-step-N`` (each file by :mod:`genforge.atomic`, fsynced), renamed to
``step-N`` and only then pointed to by ``latest``. A SIGKILL at any moment leaves
either the old or the new checkpoint reachable, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genforge.atomic import atomic_output, fsync_dir, write_json_atomic
from genforge.errors import GenforgeError

KEEP = 2  # complete checkpoints kept: the newest and the previous good one
STATE_FILE = "state.json"


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly."""

    step: int
    model: dict[str, torch.Tensor]
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> optimizer.state_dict()
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able: data order, config, timers


def _split_optimizer(name: str, state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser state dict -> (tensors for safetensors, the JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        opt_name, index, param_key = key.split("/", 2)
        if opt_name == name:
            state.setdefault(int(index), {})[param_key] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: Path, ckpt: Checkpoint, keep: int = KEEP) -> Path:
    """Write ``ckpt`` atomically under ``run_dir/checkpoints`` and point ``latest`` at it."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{ckpt.step:07d}"
    tmp = root / f".tmp-{name}"
    _write_folder(tmp, ckpt)

    final = root / name
    if final.exists():  # a re-save of the same step (e.g. interrupted right after a checkpoint)
        shutil.rmtree(final)
    os.replace(tmp, final)
    link_tmp = root / ".latest-tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(name, link_tmp)
    os.replace(link_tmp, root / "latest")  # atomic: readers see the old or the new target
    fsync_dir(root)

    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_folder(tmp: Path, ckpt: Checkpoint) -> None:
    """Write every file of ``ckpt`` into a fresh folder ``tmp``, each fsynced."""
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    optim_tensors: dict[str, torch.Tensor] = {}
    optim_meta: dict[str, Any] = {}
    for opt_name, state_dict in ckpt.optimizers.items():
        tensors, meta = _split_optimizer(opt_name, state_dict)
        optim_tensors.update(tensors)
        optim_meta[opt_name] = meta
    tensor_files = {"model.safetensors": {k: v.detach().cpu().contiguous() for k, v in ckpt.model.items()},
                    "optim.safetensors": optim_tensors,
                    "rng.safetensors": {k: v.contiguous() for k, v in ckpt.rng.items()}}
    for name, tensors in tensor_files.items():
        with atomic_output(tmp / name) as path:
            save_file(tensors, str(path))
    state = {"format": 1, "step": ckpt.step, "optimizers": optim_meta, **ckpt.extra}
    write_json_atomic(tmp / STATE_FILE, state, indent=1)


def save_best(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` as ``run_dir/checkpoints/best`` (the best by the training-time metric), atomically."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp, best, old = root / ".tmp-best", root / "best", root / ".old-best"
    _write_folder(tmp, ckpt)
    if old.exists():
        shutil.rmtree(old)
    if best.exists():
        os.replace(best, old)
    os.replace(tmp, best)
    fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)
    return best


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished ``step-N`` folders, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint folder of a run; a clear error when there is none."""
    root = Path(run_dir) / "checkpoints"
    latest = root / "latest"
    if latest.is_dir() and (latest / STATE_FILE).is_file():
        return latest.resolve()
    found = complete_checkpoints(root)
    if not found:
        raise GenforgeError(f"{run_dir}: no complete checkpoint in {root}; train first (genforge train RECIPE --run-dir {run_dir})")
    return found[-1]


def load_checkpoint(folder: Path, map_location: str | torch.device = "cpu", weights_only: bool = False) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint` (no unpickling)."""
    folder = Path(folder)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        model = load_file(str(folder / "model.safetensors"), device=str(map_location))
        if weights_only:
            return Checkpoint(step=int(state["step"]), model=model, extra=state)
        optim_tensors = load_file(str(folder / "optim.safetensors"), device=str(map_location))
        rng = load_file(str(folder / "rng.safetensors"))
    except FileNotFoundError as e:
        # safetensors raises FileNotFoundError without a filename: find the missing file ourselves
        missing = Path(e.filename).name if e.filename else next(
            (n for n in ("model.safetensors", "optim.safetensors", "rng.safetensors") if not (folder / n).is_file()), e)
        raise GenforgeError(f"{folder}: incomplete checkpoint, missing {missing}") from None
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, KeyError, ValueError, OSError) as e:
        raise GenforgeError(f"{folder}: unreadable checkpoint ({e})") from None
    optimizers = {name: _join_optimizer(name, optim_tensors, meta) for name, meta in state.get("optimizers", {}).items()}
    extra = {k: v for k, v in state.items() if k not in ("format", "step", "optimizers")}
    return Checkpoint(step=int(state["step"]), model=model, optimizers=optimizers, rng=rng, extra=extra)
