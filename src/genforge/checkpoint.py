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
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genforge.atomic import atomic_output, fsync_dir, write_json_atomic
from genforge.errors import GenforgeError
from genforge.runs import finite_number as _number

KEEP = 2  # complete checkpoints kept: the newest and the previous good one
STATE_FILE = "state.json"
FILES = ("model.safetensors", "optim.safetensors", "rng.safetensors", STATE_FILE)  # one complete checkpoint


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


# A test hook: called with each stage of the writer ("folder", "model.safetensors", ..., "renamed",
# "linked", "pruned"), so a test can pause or kill the writer at that exact point. None in normal use.
WRITER_HOOK: Callable[[str, int], None] | None = None
STAGES = ("folder", "model.safetensors", "optim.safetensors", "rng.safetensors", "state.json", "renamed",
          "linked", "pruned")


def _stage(name: str, step: int) -> None:
    if WRITER_HOOK is not None:
        WRITER_HOOK(name, step)


def save_checkpoint(run_dir: Path, ckpt: Checkpoint, keep: int = KEEP) -> Path:
    """Write ``ckpt`` atomically under ``run_dir/checkpoints`` and point ``latest`` at it.

    A full disk or an I/O error is one GenforgeError line: the half-written folder is removed and
    the previous complete checkpoint (and ``latest``) stay as they were."""
    root = Path(run_dir) / "checkpoints"
    name = f"step-{ckpt.step:07d}"
    tmp = root / f".tmp-{name}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _write_folder(tmp, ckpt)
        final, old = root / name, root / f".old-{name}"
        if final.is_dir() and not final.is_symlink():  # a re-save of the same step (e.g. interrupted right after
            shutil.rmtree(old, ignore_errors=True)     # one): moved aside whole, so no half-deleted folder is linked
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        _stage("renamed", ckpt.step)
        link_tmp = root / ".latest-tmp"
        if link_tmp.is_symlink() or link_tmp.exists():
            link_tmp.unlink()
        os.symlink(name, link_tmp)
        os.replace(link_tmp, root / "latest")  # atomic: readers see the old or the new target
        fsync_dir(root)
        _stage("linked", ckpt.step)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(f"checkpoint {name}", e, run_dir) from None
    prune(root, ckpt.step, keep)
    _stage("pruned", ckpt.step)
    return final


def prune(root: Path, step: int, keep: int = KEEP) -> None:
    """Remove what genforge wrote and no longer needs: complete checkpoints older than the newest
    ``keep`` up to ``step``, and those past ``step`` (a resume ``--from`` an earlier checkpoint
    abandoned them). Only real ``step-N`` folders are touched, never a link or anything else."""
    ordered = [(checkpoint_step(p.name), p) for p in complete_checkpoints(root)]
    kept = [p for s, p in ordered if s <= step][-keep:]
    for _, folder in ordered:
        if folder not in kept:
            shutil.rmtree(folder, ignore_errors=True)


def write_error(what: str, error: BaseException, run_dir: Path) -> GenforgeError:
    """One line for a write that failed (disk full, an I/O error): what, why, and where to go on from."""
    reason = getattr(error, "strerror", None) or str(error)
    try:
        kept = f"the last complete checkpoint, {latest_checkpoint(run_dir).name}, is kept"
    except GenforgeError:
        kept = "no complete checkpoint was written yet"
    return GenforgeError(f"{run_dir}: cannot write {what} ({reason}); {kept}; free some space and resume with "
                         f"genforge train --resume {run_dir}")


def _write_folder(tmp: Path, ckpt: Checkpoint) -> None:
    """Write every file of ``ckpt`` into a fresh folder ``tmp``, each fsynced."""
    if tmp.is_symlink():
        tmp.unlink()
    elif tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _stage("folder", ckpt.step)
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
        _stage(name, ckpt.step)
    state = {"format": 1, "step": ckpt.step, "optimizers": optim_meta, **ckpt.extra}
    write_json_atomic(tmp / STATE_FILE, state, indent=1)
    _stage(STATE_FILE, ckpt.step)


def save_best(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` as ``run_dir/checkpoints/best`` (the best by the training-time metric), atomically."""
    root = Path(run_dir) / "checkpoints"
    tmp, best, old = root / ".tmp-best", root / "best", root / ".old-best"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _write_folder(tmp, ckpt)
        if old.exists():
            shutil.rmtree(old)
        if best.exists():
            os.replace(best, old)
        os.replace(tmp, best)
        fsync_dir(root)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error("the best checkpoint", e, run_dir) from None
    shutil.rmtree(old, ignore_errors=True)
    return best


# --- reading back: found, then validated whole before anything uses it -------------------

STEP_NAME = re.compile(r"step-(\d{7,})")


def checkpoint_step(name: str) -> int:
    """The step in a ``step-N`` folder name (-1 for any other name)."""
    match = STEP_NAME.fullmatch(name)
    return int(match.group(1)) if match else -1


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished ``step-N`` folders (real folders, not links), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if checkpoint_step(p.name) >= 0 and p.is_dir() and not p.is_symlink()
             and all((p / name).is_file() for name in FILES)]
    return sorted(found, key=lambda p: checkpoint_step(p.name))


def latest_checkpoint(run_dir: Path, name: str | None = None) -> Path:
    """The checkpoint folder a resume starts from: ``name`` (``step-N``, from ``--from``) or the one
    ``latest`` points to, or else the newest complete one; a clear error when there is none.

    ``latest`` must be a link to a ``step-N`` folder beside it: anything else is refused. A link to a
    folder that is missing or incomplete (a crash between the rename and the link swap) falls back to
    the newest complete checkpoint."""
    root = Path(run_dir) / "checkpoints"
    if name is not None:
        return _named_checkpoint(run_dir, root, name)
    latest = root / "latest"
    if latest.is_symlink():
        target = os.readlink(latest)
        if checkpoint_step(target) < 0:
            raise GenforgeError(f"{latest}: a link to {target!r}, not to a step-N folder of this run; remove it "
                                f"(the newest complete checkpoint is then used) or resume with --from step-N")
        if (root / target) in complete_checkpoints(root):
            return root / target
        if (root / target).exists():  # genforge links only complete folders, and replaces them whole
            missing = next((n for n in FILES if not (root / target / n).is_file()), "its files")
            raise GenforgeError(f"{root / target}: incomplete checkpoint, missing {missing}, though {latest.name} "
                                f"points to it; {what_to_do(root / target)}")
    elif latest.exists():
        raise GenforgeError(f"{latest}: not a link (genforge writes it as a link to a step-N folder); remove it "
                            "or resume with --from step-N")
    found = complete_checkpoints(root)
    if not found:
        raise GenforgeError(f"{run_dir}: no complete checkpoint in {root}, so nothing to resume or load; "
                            f"{_train_anew(Path(run_dir))}")
    return found[-1]


def _named_checkpoint(run_dir: Path, root: Path, name: str) -> Path:
    if checkpoint_step(name) < 0:
        raise GenforgeError(f"--from {name!r}: name a checkpoint as step-N (e.g. step-0000240), one of: "
                            f"{', '.join(p.name for p in complete_checkpoints(root)) or 'none'}")
    folder = root / name
    if folder not in complete_checkpoints(root):
        raise GenforgeError(f"--from {name}: no complete checkpoint of that name in {root}; complete ones: "
                            f"{', '.join(p.name for p in complete_checkpoints(root)) or 'none'}")
    return folder


def what_to_do(folder: Path) -> str:
    """The advice for a damaged checkpoint: the previous complete one to resume from, if any."""
    folder = Path(folder)
    before = [p for p in complete_checkpoints(folder.parent) if checkpoint_step(p.name) < checkpoint_step(folder.name)]
    # the newest earlier one whose own state.json reads: a damaged one is no way out
    previous = next((p for p in reversed(before) if _state_reads(p)), None)
    run_dir = folder.parent.parent
    if previous is not None:
        return (f"the previous complete checkpoint is {previous.name}: genforge train --resume {run_dir} --from "
                f"{previous.name} continues from it (and makes it the newest again); sample, eval and "
                f"export take --from {previous.name} too")
    return f"no earlier checkpoint is left; {_train_anew(run_dir)}"


def _state_reads(folder: Path) -> bool:
    """Whether a checkpoint's state.json reads and passes its checks (the weights are not opened)."""
    try:
        read_state(folder)
    except GenforgeError:
        return False
    return True


def _train_anew(run_dir: Path) -> str:
    """How to start a run over whose checkpoints are all gone: into another folder, or this one emptied."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError, RecursionError):
        config = None
    recipe = (config.get("recipe") if isinstance(config, dict) else None) or "RECIPE"
    if not (run_dir / "config.json").exists():
        return f"train first: genforge train {recipe} --run-dir {run_dir}"
    from genforge.runs import checkpoint_every, lock_holder, read_status

    holder = lock_holder(run_dir)
    ours = holder is not None and holder.pid == os.getpid()  # this process's own resume, refused: not training
    if not ours and read_status(run_dir) == "training":  # a healthy run before its first checkpoint: wait
        every = checkpoint_every(config)
        when = f"at step {every} (train.checkpoint_every)" if every is not None else "soon"
        return f"the run is training and writes its first checkpoint {when}: try again then"
    return (f"train it anew into another folder (genforge train {recipe} --run-dir NEW_DIR), or remove {run_dir} "
            f"and train into it again")


def read_state(folder: Path, weights_only: bool = False) -> dict[str, Any]:
    """A checkpoint's state.json, read and checked as a whole (:func:`check_state`, and
    :func:`check_run_state` where it holds a training's keys)."""
    folder = Path(folder)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, RecursionError) as e:
        problem = "nested too deeply" if isinstance(e, RecursionError) else e
        raise GenforgeError(f"{folder}: unreadable checkpoint ({folder / STATE_FILE}: {problem}); "
                            f"{what_to_do(folder)}") from None
    check_state(folder, state, weights_only)
    if isinstance(state, dict) and ("config" in state or "image_shape" in state):
        check_run_state(folder, state, weights_only)
    return state


def load_checkpoint(folder: Path, map_location: str | torch.device = "cpu", weights_only: bool = False) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint` (no unpickling), checked whole:
    state.json's structure, the optimiser keys and the RNG states. What the tensors must fit (the
    model's and optimisers' shapes) is checked by :func:`check_fits` before any is used."""
    folder = Path(folder)
    names = ("model.safetensors",) + (() if weights_only else ("optim.safetensors", "rng.safetensors"))
    missing = [n for n in (STATE_FILE, *names) if not (folder / n).is_file()]
    if missing:
        raise GenforgeError(f"{folder}: incomplete checkpoint, missing {missing[0]}; {what_to_do(folder)}")
    state = read_state(folder, weights_only)
    tensors = {}
    for name in names:
        try:
            tensors[name] = load_file(str(folder / name), device=str(map_location) if name != "rng.safetensors" else "cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise GenforgeError(f"{folder}: unreadable checkpoint ({name}: {e}); {what_to_do(folder)}") from None
    check_weights_finite(folder, tensors["model.safetensors"])
    extra = {k: v for k, v in state.items() if k not in ("format", "step", "optimizers")}
    if weights_only:
        return Checkpoint(step=state["step"], model=tensors["model.safetensors"], extra={**extra, **state})
    check_rng(folder, tensors["rng.safetensors"])
    optim_tensors = tensors["optim.safetensors"]
    check_optim_keys(folder, optim_tensors, state["optimizers"])
    optimizers = {name: _join_optimizer(name, optim_tensors, meta) for name, meta in state["optimizers"].items()}
    return Checkpoint(step=state["step"], model=tensors["model.safetensors"], optimizers=optimizers,
                      rng=tensors["rng.safetensors"], extra=extra)


# --- the checks: every file as a whole, then every tensor against what will use it ---------

def refuse(folder: Path, file: str, problem: str) -> GenforgeError:
    """The one line for a damaged checkpoint: the file, what is wrong, and what to do."""
    return GenforgeError(f"{Path(folder) / file}: {problem}; the checkpoint is damaged or was not written by "
                         f"genforge, and nothing of the run was changed; {what_to_do(folder)}")


def check_weights_finite(folder: Path, weights: dict[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or infinity: a model sampled from them draws blank pictures, and a
    resume from them fails at its first step (genforge never writes such a checkpoint: a non-finite
    loss stops training before it is saved)."""
    for key, value in weights.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise refuse(folder, "model.safetensors", f"{key!r} holds NaN or infinite values")


def _whole(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < 2 ** 62


def check_state(folder: Path, state: Any, weights_only: bool = False) -> None:
    """state.json as a whole: an object with a whole ``step`` matching the folder's name and (to
    resume) the optimisers' groups and scalars."""
    if not isinstance(state, dict):
        raise refuse(folder, STATE_FILE, f"a JSON {type(state).__name__}, not an object")
    step = state.get("step")
    if not _whole(step):
        raise refuse(folder, STATE_FILE, f"'step' is {step!r}, not a whole number >= 0")
    if checkpoint_step(Path(folder).name) not in (-1, step):
        raise refuse(folder, STATE_FILE, f"'step' is {step}, but the folder is {Path(folder).name}")
    if not weights_only:
        _check_optimizer_meta(folder, state.get("optimizers"))


def check_run_state(folder: Path, extra: dict[str, Any], weights_only: bool = False) -> None:
    """What a training checkpoint's state.json adds: ``image_shape``, ``num_classes``, ``config`` and
    (to resume) the data order and loss scales, each of the right kind."""
    shape = extra.get("image_shape")
    if not (isinstance(shape, list) and len(shape) in (1, 3) and all(_whole(v, 1) for v in shape)):
        raise refuse(folder, STATE_FILE, f"'image_shape' is {shape!r}, not a list of 1 or 3 positive whole numbers")
    if not _whole(extra.get("num_classes")):
        raise refuse(folder, STATE_FILE, f"'num_classes' is {extra.get('num_classes')!r}, not a whole number >= 0")
    if not isinstance(extra.get("config"), dict):
        raise refuse(folder, STATE_FILE, f"'config' is {type(extra.get('config')).__name__}, not an object")
    if weights_only:
        return
    for key in ("data_order", *(("data_order_b",) if "data_order_b" in extra else ())):
        order = extra.get(key)
        if not (isinstance(order, dict) and _whole(order.get("epoch")) and _whole(order.get("position"))
                and order["epoch"] < 2 ** 31 and ("size" not in order or _whole(order["size"], 1))):
            raise refuse(folder, STATE_FILE, f"'{key}' is {order!r}, not {{\"epoch\": N, \"position\": N, "
                                             "\"size\": N}")
    if "loss_window" in extra and not _loss_window(extra["loss_window"]):
        raise refuse(folder, STATE_FILE, "'loss_window' is not {\"sums\": {TERM: number}, \"counts\": {TERM: N}} "
                                         "of the same terms")
    scalers = extra.get("grad_scalers", {})
    if not (isinstance(scalers, dict) and all(isinstance(v, dict) for v in scalers.values())):
        raise refuse(folder, STATE_FILE, "'grad_scalers' is not an object of objects")


def _loss_window(window: Any) -> bool:
    """The loss window a checkpoint between log steps keeps: each term's sum (any float) and count."""
    if not (isinstance(window, dict) and set(window) == {"sums", "counts"}):
        return False
    sums, counts = window["sums"], window["counts"]
    return (isinstance(sums, dict) and isinstance(counts, dict) and set(sums) == set(counts)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sums.values())
            and all(_whole(v, 1) for v in counts.values()))


def _check_optimizer_meta(folder: Path, optimizers: Any) -> None:
    if not isinstance(optimizers, dict):
        raise refuse(folder, STATE_FILE, f"'optimizers' is {type(optimizers).__name__}, not an object")
    for name, meta in optimizers.items():
        groups = meta.get("param_groups") if isinstance(meta, dict) else None
        scalars = meta.get("scalars", {}) if isinstance(meta, dict) else None
        if not (isinstance(groups, list) and groups and all(isinstance(g, dict) for g in groups)):
            raise refuse(folder, STATE_FILE, f"optimizer '{name}': 'param_groups' is not a list of objects")
        for group in groups:
            params = group.get("params")
            if not (isinstance(params, list) and all(_whole(i) for i in params)):
                raise refuse(folder, STATE_FILE, f"optimizer '{name}': a group's 'params' is not a list of indices")
        if not (isinstance(scalars, dict) and all(isinstance(v, dict) for v in scalars.values())
                and all(str(k).isdigit() for k in scalars)):
            raise refuse(folder, STATE_FILE, f"optimizer '{name}': 'scalars' is not an object by parameter index")
        for values in scalars.values():
            if not all(v is None or _number(v) for v in values.values()):
                raise refuse(folder, STATE_FILE, f"optimizer '{name}': a scalar state is not a finite number")


def check_rng(folder: Path, rng: dict[str, torch.Tensor]) -> None:
    """rng.safetensors: a ``torch`` state (or one per rank, ``rankR.torch``), each the uint8 vector
    ``torch.set_rng_state`` takes; CUDA states uint8 vectors too."""
    size = torch.get_rng_state().numel()
    torch_keys = [k for k in rng if k == "torch" or re.fullmatch(r"rank\d+\.torch", k)]
    if not torch_keys:
        raise refuse(folder, "rng.safetensors", f"no 'torch' RNG state (keys: {', '.join(sorted(rng)) or 'none'})")
    for key, value in rng.items():
        if not (key == "torch" or re.fullmatch(r"(rank\d+\.)?(torch|cuda\d+)", key)):
            raise refuse(folder, "rng.safetensors", f"unexpected key {key!r}")
        if value.dtype != torch.uint8 or value.ndim != 1 or (key.endswith("torch") and value.numel() != size):
            raise refuse(folder, "rng.safetensors", f"{key!r} is {value.dtype} of shape {tuple(value.shape)}, "
                                                    f"not the uint8 vector{f' of {size}' if key.endswith('torch') else ''} "
                                                    "torch's RNG state is")


def check_optim_keys(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Every optim.safetensors key is ``<optimizer>/<index>/<name>`` of an optimiser state.json names."""
    for key in tensors:
        parts = key.split("/")
        if len(parts) != 3 or parts[0] not in meta or not parts[1].isdigit() or parts[2] not in OPTIMIZER_STATE:
            raise refuse(folder, "optim.safetensors", f"unexpected key {key!r} (expected OPTIMIZER/INDEX/NAME, "
                                                      f"OPTIMIZER one of {', '.join(meta) or 'none'})")


OPTIMIZER_STATE = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "grad_avg", "momentum_buffer",
                   "acc_delta")  # what torch's Adam, AdamW, RMSprop, Adadelta and SGD keep per parameter


def check_weights(folder: Path, saved: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """model.safetensors against the model config.json builds: the same keys, each of the shape and
    dtype the model expects (a config whose widths do not fit the weights is named here)."""
    expected = model.state_dict()
    for key, want in expected.items():
        if key not in saved:
            raise refuse(folder, "model.safetensors", f"the weight {key!r} the model needs is missing")
        got = saved[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise GenforgeError(f"{Path(folder) / 'model.safetensors'}: {key!r} is {got.dtype} {tuple(got.shape)}, "
                                f"the model config.json describes needs {want.dtype} {tuple(want.shape)}: config.json "
                                "(a width, the latent size) or the weights were changed, and nothing of the run was; "
                                f"restore config.json, or if it is as trained, {what_to_do(folder)}")
    extra = sorted(set(saved) - set(expected))
    if extra:
        raise refuse(folder, "model.safetensors", f"{len(extra)} weight(s) the model has no place for, e.g. {extra[0]!r}")


def check_optimizers(folder: Path, saved: dict[str, dict[str, Any]], optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Each saved optimiser state against the optimiser it will be loaded into: the same groups of the
    same sizes, hyper-parameters of the same kinds, and every moment of its parameter's shape and
    dtype (a wrong-shaped ``exp_avg`` would make a fused step write out of bounds)."""
    for name, optimizer in optimizers.items():
        if name not in saved:
            raise refuse(folder, STATE_FILE, f"no state for the optimizer {name!r} (has: {', '.join(saved) or 'none'})")
        groups, current = saved[name]["param_groups"], optimizer.state_dict()["param_groups"]
        if len(groups) != len(current):
            raise refuse(folder, STATE_FILE, f"optimizer {name!r} has {len(groups)} parameter groups, not {len(current)}")
        for group, want in zip(groups, current):
            _check_group(folder, name, group, want)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for index, values in saved[name]["state"].items():
            if index >= len(params):
                raise refuse(folder, "optim.safetensors", f"optimizer {name!r}: state for parameter {index}, "
                                                          f"of {len(params)}")
            for key, value in values.items():
                if torch.is_tensor(value):
                    _check_moment(folder, f"{name}/{index}/{key}", value, params[index], key == "step")


def _check_group(folder: Path, name: str, group: dict[str, Any], want: dict[str, Any]) -> None:
    if sorted(group) != sorted(want) or len(group["params"]) != len(want["params"]):
        raise refuse(folder, STATE_FILE, f"optimizer {name!r}: a parameter group does not fit this optimizer "
                                         f"(keys {sorted(group)}, {len(group['params'])} parameters)")
    if group["params"] != want["params"]:  # torch maps the saved moments to parameters by these indices
        raise refuse(folder, STATE_FILE, f"optimizer {name!r}: a group's parameter indices {group['params'][:8]} are "
                                         f"not {want['params'][:8]}")
    for key, value in want.items():
        if key != "params" and _kind(group[key]) != _kind(value):
            raise refuse(folder, STATE_FILE, f"optimizer {name!r}: {key!r} is {group[key]!r}, not like {value!r}")


def _kind(value: Any) -> Any:
    """What a hyper-parameter must stay: a flag (bool or None), a finite number, or a tuple of them."""
    if value is None or isinstance(value, bool):
        return "flag"
    if isinstance(value, (list, tuple)):
        return ("sequence", len(value), tuple(_kind(v) for v in value))
    if _number(value):
        return "number"
    return type(value).__name__ if isinstance(value, str) else repr(value)


def _check_moment(folder: Path, key: str, value: torch.Tensor, param: torch.Tensor, is_step: bool) -> None:
    shape, dtype = (torch.Size([]), torch.float32) if is_step else (param.shape, param.dtype)
    if value.shape != shape or value.dtype != dtype:
        raise refuse(folder, "optim.safetensors", f"{key!r} is {value.dtype} {tuple(value.shape)}, its parameter "
                                                  f"needs {dtype} {tuple(shape)}")
    if not bool(torch.isfinite(value).all()):
        raise refuse(folder, "optim.safetensors", f"{key!r} holds NaN or infinite values")
