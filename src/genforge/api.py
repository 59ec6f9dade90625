"""The application layer: what the ``genforge`` command and the studio both call.

Neither shell holds logic of its own: they parse, call a function here, and print or serve
the result. Bad input raises :class:`~genforge.errors.GenforgeError` with one line naming
the file or key and what to do. Images come and go as float tensors in [0, 1],
(N, C, H, W) on the CPU; runs on toy data give points (N, D) instead.

    from genforge import api

    cfg = api.check_config("ring-8", ["train.steps=300"])    # validated, nothing written
    api.train_run(cfg, "runs/ring")                          # trains in this process
    model = api.load("runs/ring")
    points = api.sample(model, 500, seed=0)                  # (500, 2)

The heavy modules (torch, the families, metrics) are imported inside the functions, so the
CLI starts fast.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from genforge.errors import GenforgeError
from genforge.runs import (PROCESS_FILE, Run, RunLock, RunSummary, check_links, clear_stop, list_runs, lock_holder,
                           pid_alive, recorded_status, request_stop, starting_child, write_status)

if TYPE_CHECKING:
    import torch

    from genforge.config import RunConfig

__all__ = ["FieldInfo", "RecipeInfo", "recipes", "recipe_schema", "check_config", "new_run_dir", "resume_config",
           "torchrun_restart", "train_run", "start_training", "resume_training", "stop_training", "TrainingProcess", "open_run",
           "list_runs", "Run", "RunSummary", "Loaded", "load", "sample", "class_grid", "noise", "generate",
           "interpolate", "arithmetic", "translate", "reconstruct", "encode", "decode_image_bytes", "nearest",
           "picture", "png_bytes", "evaluate", "real_floor", "MAX_SAMPLES"]

MAX_SAMPLES = 100_000  # one sampling request at most (a grid of a billion would never finish)
# Keys a resumed run may change: how it runs, not what it trains (the model, data and optimiser stay).
RESUMABLE_KEYS = ("train.steps", "train.minutes", "train.device", "train.threads", "train.precision",
                  "train.channels_last", "train.compile", "train.log_every", "train.sample_every",
                  "train.checkpoint_every", "train.eval_every", "train.eval_n", "train.eval_samples", "train.on_nan",
                  "train.nan_skips")


# --- recipes and configs -----------------------------------------------------------------

@dataclass
class FieldInfo:
    """One config key of a recipe, for generated forms: its type, the recipe's value, choices and help."""

    key: str
    type: str  # "int", "float", "bool" or "str"
    default: Any
    choices: list[str] | None
    help: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RecipeInfo:
    name: str
    family: str
    description: str
    fields: list[FieldInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recipes() -> list[RecipeInfo]:
    """The built-in recipes: name, family and description (no fields: see :func:`recipe_schema`)."""
    from genforge.config import load_recipe_dict, recipe_names

    out = []
    for name in recipe_names():
        raw = load_recipe_dict(name)
        out.append(RecipeInfo(name, str(raw.get("family", "")), str(raw.get("description", ""))))
    return out


def recipe_schema(name: str) -> RecipeInfo:
    """A recipe with every config key's type, default (the recipe's value), choices and help line."""
    import typing

    from genforge.config import load_recipe

    cfg = load_recipe(name)
    fields: list[FieldInfo] = []

    def walk(obj: Any, prefix: str) -> None:
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            elif f.metadata.get("help"):
                kind = hints[f.name]
                choices = f.metadata.get("choices")
                fields.append(FieldInfo(f"{prefix}{f.name}", getattr(kind, "__name__", str(kind)), value,
                                        list(choices) if choices else None, f.metadata["help"]))

    for section in ("model", "data", "optim", "train"):
        walk(getattr(cfg, section), f"{section}.")
    return RecipeInfo(cfg.recipe, cfg.family, cfg.description, fields)


def _override_list(overrides: Iterable[str] | dict[str, Any]) -> list[str]:
    if isinstance(overrides, dict):
        return [f"{key}={value}" for key, value in overrides.items()]
    return list(overrides)


def check_config(recipe: str, overrides: Iterable[str] | dict[str, Any] = (), steps: int | None = None,
                 minutes: float | None = None, seed: int | None = None, device: str | None = None) -> RunConfig:
    """The recipe with ``overrides`` and a budget, validated whole (as ``genforge train --dry-run``):
    a GenforgeError names the first key to change. Nothing is written."""
    from genforge.config import load_recipe

    _check_budget(steps, minutes)
    items = _override_list(overrides)
    _check_one_budget(items, steps, minutes)
    cfg = load_recipe(recipe, items)
    if steps is not None:
        cfg.train.steps, cfg.train.minutes = steps, 0.0
    if minutes is not None:
        cfg.train.minutes, cfg.train.steps = minutes, 0  # the clock is the only budget
    if seed is not None:
        cfg.train.seed = seed
    if device is not None:
        cfg.train.device = device
    _absolute_paths(cfg)
    _validate(cfg)
    _check_device(cfg)
    return cfg


def _check_device(cfg: RunConfig) -> None:
    """The device and precision checks training makes once it starts, made here too: `--dry-run`
    passed train.precision=fp16 on a CPU (and --device cuda without a GPU) that the run then refused."""
    from genforge.runtime import choose_fast_paths, resolve_device

    device = resolve_device(cfg.train.device)
    if cfg.train.precision in ("fp16", "bf16"):
        choose_fast_paths(cfg.train.precision, "off", "off", False, device, images=True, long_run=False)


def _absolute_paths(cfg: RunConfig) -> None:
    """Folders named relative to where the run was started, made absolute as the config is built: a
    run keeps config.json's, so one trained on folder:imgs/some broke from any other folder (eval,
    sample, resume), and the key is one a resume may not change."""
    from genforge.data.datasets import FOLDER_PREFIX

    data = cfg.data
    if data.dataset.startswith(FOLDER_PREFIX) and data.dataset[len(FOLDER_PREFIX):]:
        data.dataset = FOLDER_PREFIX + os.path.abspath(os.path.expanduser(data.dataset[len(FOLDER_PREFIX):]))
    for key in ("path", "path_b", "root"):
        value = getattr(data, key, "")
        if isinstance(value, str) and value:
            setattr(data, key, os.path.abspath(os.path.expanduser(value)))


def _validate(cfg: RunConfig) -> None:
    from genforge.config import validate

    validate(cfg)


def _check_one_budget(items: list[str], steps: int | None, minutes: float | None) -> None:
    """A budget given (--steps, --minutes, the studio's budget box) replaces the recipe's train.steps and
    train.minutes, so a key that sets one beside it was silently dropped: refused, naming both."""
    keys = budget_overrides(items)
    if keys and (steps is not None or minutes is not None):
        given = f"a budget of {steps} steps" if steps is not None else f"a budget of {minutes:g} minutes"
        raise GenforgeError(f"{keys[0]} and {given} both say how long to train: give one of them")


def budget_overrides(items: Iterable[str]) -> list[str]:
    """The overrides (stripped) that set train.steps or train.minutes."""
    return [item.strip() for item in items if item.partition("=")[0].strip() in ("train.steps", "train.minutes")]


def _check_budget(steps: int | None, minutes: float | None) -> None:
    if steps is not None and minutes is not None:
        raise GenforgeError("give a budget in steps or in minutes, not both")
    if steps is not None and steps <= 0:
        raise GenforgeError(f"--steps must be positive, not {steps}")
    if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
        raise GenforgeError(f"--minutes must be a positive, finite number of minutes, not {minutes}")


def new_run_dir(cfg: RunConfig, run_dir: str | Path | None = None, root: str | Path = "runs") -> Path:
    """Where a new run goes: ``run_dir``, or ROOT/RECIPE-TIMESTAMP; refused when it already holds a run."""
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{cfg.recipe}-{stamp}"
        count = 1
        while path.exists():  # two runs started in one second (the studio's form, a script)
            count += 1
            path = Path(root) / f"{cfg.recipe}-{stamp}-{count}"
        return path
    path = Path(run_dir)
    check_links(path)
    if path.exists() and not path.is_dir():
        raise GenforgeError(f"--run-dir {path} is a file, not a folder: name a folder for the run")
    checkpoints = path / "checkpoints"
    if (checkpoints.is_dir() and any(checkpoints.iterdir())) or (path / "config.json").is_file():
        raise GenforgeError(f"{path} already holds a run; continue it with --resume {path} or choose another --run-dir")
    return path


def resume_config(run_dir: str | Path, steps: int | None = None, minutes: float | None = None,
                  overrides: Iterable[str] | dict[str, Any] = (), start: str | None = None) -> RunConfig:
    """A run's saved config for its continuation: a new step or time budget, and ``overrides`` of the
    keys that do not change what is trained (RESUMABLE_KEYS); any other key is refused. ``start``
    names the checkpoint to resume from (``--from step-N``; default: the newest)."""
    from genforge.checkpoint import latest_checkpoint, read_state
    from genforge.config import build_config, config_from_json, parse_overrides

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GenforgeError(_not_a_folder(run_dir))
    if not (run_dir / "config.json").is_file():
        raise GenforgeError(f"{run_dir}: not a genforge run folder (no config.json)")
    check_links(run_dir)
    _check_budget(steps, minutes)
    holder = lock_holder(run_dir)  # before the checkpoints: a run still before its first one said "remove it"
    if holder is not None and holder.alive:
        raise GenforgeError(holder.busy(run_dir))
    cfg = config_from_json(run_dir / "config.json")
    folder = latest_checkpoint(run_dir, start)
    at = int(read_state(folder).get("step", 0))  # and a clear error now if there is nothing to resume from
    items = _override_list(overrides)
    _check_one_budget(items, steps, minutes)
    budget_keys = {item.partition("=")[0].strip() for item in budget_overrides(items)}
    if steps is None and minutes is None and not budget_keys:
        steps, minutes = _last_budget(run_dir, at)
    elif steps is not None and steps < at:
        raise GenforgeError(f"a budget of {steps} steps is below the step {folder.name} is at ({at}): the step "
                            f"budget is the run's total, so give more than {at} (or a budget in minutes)")
    for item in items:
        key = item.partition("=")[0].strip()
        if key not in RESUMABLE_KEYS:
            raise GenforgeError(f"--resume cannot change '{key}': it would change the model, the data or the "
                                f"optimiser; keys a resume may set: {', '.join(RESUMABLE_KEYS)}")
    cfg = build_config(cfg.to_dict(), parse_overrides(items))
    if budget_keys == {"train.steps"}:  # a budget set by its key replaces the old one of either kind, as --steps does
        cfg.train.minutes = 0.0
        if 0 < cfg.train.steps < at:
            raise GenforgeError(f"train.steps={cfg.train.steps} is below the step {folder.name} is at ({at}): "
                                f"it is the run's total, so give more than {at}")
    elif budget_keys == {"train.minutes"}:
        cfg.train.steps = 0
    if steps is not None:  # a new budget replaces the old one, of either kind
        cfg.train.steps, cfg.train.minutes = steps, 0.0
    if minutes is not None:
        cfg.train.steps, cfg.train.minutes = 0, minutes
    _validate(cfg)
    return cfg


def _last_budget(run_dir: Path, at: int) -> tuple[int | None, float | None]:
    """The budget the last training of a run ran to (status.json's), for a resume that names none: a
    resume with --steps changes it, and the next plain --resume (the hint after Ctrl-C) went back to
    config.json's and trained nothing. (None, None): config.json's."""
    recorded = recorded_status(run_dir).get("budget")
    if not isinstance(recorded, dict):
        return None, None
    steps, minutes = recorded.get("steps", 0), recorded.get("minutes", 0.0)
    if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
        return (steps, None) if steps >= at else (None, None)
    if isinstance(minutes, (int, float)) and not isinstance(minutes, bool) and minutes > 0:
        return None, float(minutes)
    return None, None


def abandoned_checkpoints(run_dir: str | Path, start: str | None) -> list[str]:
    """The checkpoints newer than ``start`` (``--from step-N``) that a resume from it abandons: the run's
    next checkpoint removes them (the step counter goes back to N, and later steps are trained anew)."""
    from genforge.checkpoint import checkpoint_step, complete_checkpoints

    if start is None:
        return []
    step = checkpoint_step(start)
    return [p.name for p in complete_checkpoints(Path(run_dir) / "checkpoints") if checkpoint_step(p.name) > step]


# --- training ----------------------------------------------------------------------------

def torchrun_restart(run_dir: str | Path | None) -> bool | None:
    """Whether torchrun restarted this worker (``--max-restarts``, TORCHELASTIC_RESTART_COUNT > 0) into
    a run it had begun: True when the run has a checkpoint to resume from (the group goes on from it,
    bit for bit with the same process count), False when it stopped before its first checkpoint (it
    starts afresh in the same folder), None when this is no restart."""
    from genforge.checkpoint import complete_checkpoints

    if run_dir is None or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) <= 0:
        return None
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        return None
    check_links(run_dir)
    return bool(complete_checkpoints(run_dir / "checkpoints"))


def train_run(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, data_root: str | None = None,
              progress: bool = True, start: str | None = None, on_start: Callable[[], None] | None = None):
    """Train ``cfg`` into ``run_dir`` in this process, holding the run's lock (one writer per run) and
    recording how it ended in status.json; returns the loop's RunResult. Under torchrun, rank 0
    alone takes the lock and writes the status. ``start``: the checkpoint a resume starts from
    (default: the newest). A run refused before training began (a damaged checkpoint, missing
    data) is left as it was: no status is written. ``on_start`` is called once the data and any
    checkpoint have passed their checks and the run folder is being written (e.g. to say so)."""
    from genforge.train import train

    run_dir = Path(run_dir)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not main_rank:
        return train(cfg, run_dir, resume=resume, data_root=data_root, progress=progress, start=start,
                     on_start=on_start)
    check_links(run_dir)
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    budget = {"steps": cfg.train.steps, "minutes": cfg.train.minutes}
    started: list[bool] = []

    def begin() -> None:
        started.append(True)
        if on_start is not None:
            on_start()
    clock = time.monotonic()
    try:
        with RunLock(run_dir, budget):
            try:
                result = train(cfg, run_dir, resume=resume, data_root=data_root, progress=progress, start=start,
                               on_start=begin)
            except BaseException as e:
                # a failure before the run folder was written (Ctrl-C while importing) leaves no status.json
                # in a folder with no config.json: no run to list or resume, only an unexplained folder
                if started or (not isinstance(e, GenforgeError) and (run_dir / "config.json").is_file()):
                    _record_failure(run_dir, e, budget, time.monotonic() - clock, cfg.train.device)
                raise
            try:
                write_status(run_dir, "interrupted" if result.interrupted else "finished", result.step,
                             budget=budget, seconds=time.monotonic() - clock, machine=machine(cfg.train.device))
            except OSError as e:
                raise GenforgeError(f"{run_dir}: cannot write status.json ({e.strerror or e}); the training itself "
                                    f"ended at step {result.step} with a complete checkpoint") from None
    except BaseException:
        if made and not started:  # refused or stopped before training began: no empty run folder is left behind
            _remove_if_empty(run_dir)
        raise
    return result


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _record_failure(run_dir: Path, error: BaseException, budget: dict[str, float], seconds: float,
                    device: str) -> None:
    """status.json for a training that stopped on an error or Ctrl-C; a full disk may refuse even that."""
    step = Run(run_dir).checkpoint_step() or 0 if (run_dir / "config.json").is_file() else 0
    interrupted = isinstance(error, KeyboardInterrupt)
    try:
        write_status(run_dir, "interrupted" if interrupted else "failed", step,
                     "" if interrupted else " ".join(f"{type(error).__name__}: {error}".split()), budget,
                     seconds, machine(device))
    except OSError:
        pass


def machine(device: str = "auto") -> dict[str, Any]:
    """What a run trained on, for its records and model card: CPU model, cores, torch, and the GPU if used."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
                            "threads": torch.get_num_threads()}
    if device != "cpu" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


@dataclass
class TrainingProcess:
    """A training started in a child process of its own session: it outlives its starter, and anyone
    can find it again from the run folder (``RUN_DIR/lock``)."""

    run_dir: Path
    pid: int
    popen: subprocess.Popen | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None if it still runs after ``timeout`` seconds."""
        if self.popen is None:
            deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
            while pid_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            return None if pid_alive(self.pid) else 0
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def _spawn(run_dir: Path, args: list[str], cfg: RunConfig) -> TrainingProcess:
    """``python -m genforge train ARGS`` detached, its output in RUN_DIR/train.log; RUN_DIR/process.json
    names the child, so the run is listed (as training, or as failed) before its config.json exists."""
    from genforge.atomic import write_json_atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    clear_stop(run_dir)  # a stop asked of an earlier child is not this one's
    log = open(run_dir / "train.log", "ab")
    try:
        popen = subprocess.Popen([sys.executable, "-m", "genforge", "train", "--no-progress", *args],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        log.close()
    write_json_atomic(run_dir / PROCESS_FILE, {"pid": popen.pid, "host": socket.gethostname(), "started": time.time(),
                                               "recipe": cfg.recipe, "family": cfg.family,
                                               "budget": {"steps": cfg.train.steps, "minutes": cfg.train.minutes}})
    # reaped as soon as it ends: a finished child must not stay a zombie while the studio runs
    threading.Thread(target=popen.wait, name=f"genforge-reap-{popen.pid}", daemon=True).start()
    return TrainingProcess(run_dir, popen.pid, popen)


def running_trainings(root: str | Path = "runs") -> list[Path]:
    """The run folders under ``root`` that a live process is training now."""
    return [summary.path for summary in list_runs(root) if summary.status == "training"]


def _budget_args(steps: int | None, minutes: float | None, data_root: str | None) -> list[str]:
    """The command-line words of a child training's budget and data root."""
    return ([*(["--steps", str(steps)] if steps is not None else []),
             *(["--minutes", str(minutes)] if minutes is not None else []),
             *(["--data-root", data_root] if data_root else [])])


def start_training(recipe: str, overrides: Iterable[str] | dict[str, Any] = (), run_dir: str | Path | None = None,
                   steps: int | None = None, minutes: float | None = None, data_root: str | None = None,
                   root: str | Path = "runs") -> TrainingProcess:
    """Validate, then train a recipe in a child process (as ``genforge train``); a refused config
    raises before any folder is made."""
    items = _override_list(overrides)
    cfg = check_config(recipe, items, steps, minutes)
    path = new_run_dir(cfg, run_dir, root)
    args = [recipe, *items, "--run-dir", str(path)]
    args += _budget_args(steps, minutes, data_root)
    return _spawn(path, args, cfg)


def resume_training(run_dir: str | Path, steps: int | None = None, minutes: float | None = None,
                    overrides: Iterable[str] | dict[str, Any] = (), data_root: str | None = None) -> TrainingProcess:
    """Continue a run in a child process; refused (one line) while another process trains it."""
    run_dir = Path(run_dir)
    items = _override_list(overrides)
    cfg = resume_config(run_dir, steps, minutes, items)  # refused while another process trains it
    if starting_child(run_dir) is not None:
        raise GenforgeError(f"{run_dir}: a training of it is starting already; stop it first")
    args = ["--resume", str(run_dir), *items]
    args += _budget_args(steps, minutes, data_root)
    return _spawn(run_dir, args, cfg)


def stop_training(run_dir: str | Path) -> bool:
    """Ask the process training ``run_dir`` to stop: it checkpoints at the next step and exits.
    A child the studio started that does not hold the run's lock yet (it is still starting) is
    stopped too (a resumed run keeps the checkpoint it resumed from). The stop is asked in writing
    first (RUN_DIR/stop.json, read when the loop begins), then by SIGINT, which a child still
    starting may not answer yet. False when no live process of this machine holds or is starting the run."""
    run_dir = Path(run_dir)
    holder = lock_holder(run_dir)
    live = holder is not None and holder.host == socket.gethostname() and pid_alive(holder.pid)
    pid = holder.pid if live else starting_child(run_dir)
    if pid is None:
        return False
    try:
        request_stop(run_dir, pid)
    except OSError:
        pass  # a folder that cannot be written: the signal alone
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    return True


def open_run(path: str | Path) -> Run:
    """A run folder read back (config, status, metrics, timeline, plots, evaluation)."""
    path = Path(path)
    if not path.is_dir():
        raise GenforgeError(_not_a_folder(path))
    return Run(path)


def _not_a_folder(path: Path) -> str:
    """Why ``path`` is no run folder, and what to give instead where it is a file inside one."""
    if not path.exists():
        return f"{path}: no such run folder"
    inside = next((folder for folder in path.parents if (folder / "config.json").is_file()), None)
    if inside is not None:
        return f"{path}: a file of the run {inside}, not a run folder; give the folder: {inside}"
    return f"{path}: a file, not a run folder"


# --- a trained model -----------------------------------------------------------------------

@dataclass
class Loaded:
    """A trained model ready to use: its config, the model (eval mode), the checkpoint's step."""

    cfg: Any
    model: Any
    step: int
    run_dir: Path
    capabilities: Any

    @property
    def device(self):
        return next(self.model.parameters()).device

    # The same operations as the module's functions, as methods: ``genforge.load(RUN).sample(16, seed=0)``.
    def sample(self, n: int, seed: int = 0, label: int | None = None, reject: float | None = None):
        """``n`` samples in [0, 1] (or points): see :func:`genforge.api.sample`."""
        return sample(self, n, seed, label, reject)

    def interpolate(self, steps: int = 10, rows: int = 1, spherical: bool = False, seed: int = 0, ends=None):
        """Latent walks: see :func:`genforge.api.interpolate`."""
        return interpolate(self, steps, rows, spherical, seed, ends)

    def translate(self, images, direction: str = "a2b"):
        """A DiscoGAN's (translations, reconstructions): see :func:`genforge.api.translate`."""
        return translate(self, images, direction)

    def encode(self, images):
        """A VAE's latent means: see :func:`genforge.api.encode`."""
        return encode(self, images)

    def generate(self, z):
        """Samples from given noise vectors: see :func:`genforge.api.generate`."""
        return generate(self, z)


def load(run_dir: str | Path, device: str = "cpu", checkpoint: str | None = None) -> Loaded:
    """The newest complete checkpoint of a run (or ``checkpoint``, a ``step-N`` of it), as a ready model
    (sampling uses its EMA weights, if any); or a model folder written by ``genforge export RUN --format
    folder`` (see :mod:`genforge.export`)."""
    import torch

    from genforge import export
    from genforge.checkpoint import check_run_state, check_weights, latest_checkpoint, load_checkpoint
    from genforge.models import build_model
    from genforge.runtime import resolve_device
    from genforge.train import attach_ema

    run_dir = Path(run_dir)
    if export.is_export(run_dir):
        if checkpoint is not None:
            raise GenforgeError(f"{run_dir}: an exported model has no checkpoints to choose from (--from)")
        folder = export.load_folder(run_dir, device)
        return Loaded(folder.cfg, folder.model, folder.step, run_dir, folder.capabilities)
    cfg = open_run(run_dir).config
    folder = latest_checkpoint(run_dir, checkpoint)
    where = resolve_device(device) if isinstance(device, str) else device
    ckpt = load_checkpoint(folder, map_location=where, weights_only=True)
    check_run_state(folder, ckpt.extra, weights_only=True)
    saved_family = ckpt.extra["config"].get("family")
    if saved_family != cfg.family:
        raise GenforgeError(f"{folder}: checkpoint of family '{saved_family}', but config.json says '{cfg.family}'")
    model = build_model(cfg, tuple(ckpt.extra["image_shape"]), ckpt.extra["num_classes"])
    attach_ema(model, cfg.train.ema_decay)
    check_weights(folder, ckpt.model, model)  # every key, shape and dtype, before any is used
    model.load_state_dict(ckpt.model)
    model = model.to(where).eval()
    torch.set_grad_enabled(True)  # (load leaves the caller's autograd mode as it found it)
    return Loaded(cfg, model, ckpt.step, run_dir, model.capabilities)


def _need(loaded: Loaded, what: str, ok: bool, why: str) -> None:
    if not ok:
        raise GenforgeError(f"{what} needs {why}; {loaded.run_dir} is a {loaded.cfg.recipe} ({loaded.cfg.family}) run")


def _count(n: int, what: str = "--n", low: int = 1) -> int:
    if not low <= n <= MAX_SAMPLES:
        raise GenforgeError(f"{what} must be {low} to {MAX_SAMPLES:,}, not {n}")
    return n


SEED_RANGE = (-2**63, 2**64 - 1)  # what torch.Generator.manual_seed takes


def _generator(seed: int):
    import torch

    if not SEED_RANGE[0] <= int(seed) <= SEED_RANGE[1]:
        raise GenforgeError(f"the seed must be a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]}, not {seed}")
    return torch.Generator().manual_seed(int(seed))


def _check_label(loaded: Loaded, label: int | None) -> None:
    if label is None:
        return
    classes = loaded.capabilities.classes
    _need(loaded, "sampling one class", classes > 0, "a conditional GAN (model.conditional=concat|projection)")
    if not 0 <= label < classes:
        raise GenforgeError(f"the class must be 0 to {classes - 1} ({loaded.cfg.recipe} has {classes} classes), "
                            f"not {label}")


def sample(loaded: Loaded, n: int, seed: int = 0, label: int | None = None, reject: float | None = None):
    """``n`` samples (images in [0, 1], or points) from noise seeded by ``seed``; ``label`` asks a
    conditional GAN for one class; ``reject`` samples through discriminator rejection (a quantile)."""
    import torch

    _count(n)
    _need(loaded, "sampling", loaded.capabilities.latent, "a model that generates from noise (not a translator)")
    _check_label(loaded, label)
    if reject is not None:
        _need(loaded, "rejection sampling", loaded.capabilities.rejection,
              "an unconditional GAN with a BCE loss (nonsaturating or minimax) and model.pack=1")
    generator = _generator(seed)
    with loaded.model.inference():
        if label is not None:
            labels = torch.full((n,), label, dtype=torch.long)
            return loaded.model.sample_labels(labels, generator)
        if reject is not None:
            return loaded.model.sample(n, generator, reject=reject)
        return loaded.model.sample(n, generator)


def class_grid(loaded: Loaded, per_class: int, seed: int = 0):
    """K * per_class images of a conditional GAN: row k is class k, column j shares one z."""
    _need(loaded, "a grid by class", loaded.capabilities.classes > 0, "a conditional GAN")
    _count(per_class * loaded.capabilities.classes, "samples per class x classes")
    with loaded.model.inference():
        return loaded.model.class_grid(per_class, _generator(seed))


def noise(loaded: Loaded, n: int, seed: int = 0, label: int | None = None):
    """``n`` noise vectors (N, latent) as sampling draws them (a conditional GAN's carry its class)."""
    import torch

    _count(n)
    _need(loaded, "noise", loaded.capabilities.latent, "a model that generates from noise")
    _check_label(loaded, label)
    if label is not None:
        return loaded.model.sample_noise(n, _generator(seed), labels=torch.full((n,), label, dtype=torch.long))
    return loaded.model.sample_noise(n, _generator(seed))


def generate(loaded: Loaded, z):
    """Samples from given noise vectors ``z`` (N, latent)."""
    from genforge import latent

    _need(loaded, "generating from noise", loaded.capabilities.latent, "a model that generates from noise")
    _count(int(z.shape[0]), "the number of noise vectors")
    with loaded.model.inference():
        return latent.generate(loaded.model, z)


def interpolate(loaded: Loaded, steps: int = 10, rows: int = 1, spherical: bool = False, seed: int = 0,
                ends: tuple[Any, Any] | None = None):
    """``rows`` latent walks of ``steps`` samples each (rows * steps samples), between random
    end points or ``ends`` = (z_a, z_b)."""
    from genforge import latent

    _need(loaded, "interpolation", loaded.capabilities.latent, "a model that generates from noise")
    if rows < 1:
        raise GenforgeError(f"--rows must be positive, not {rows}")
    _count(steps, "--steps", low=2)  # a walk has its two ends at least
    _count(steps * rows, "--steps x --rows")
    z = latent.interpolation_noise(loaded.model, steps, rows, spherical, _generator(seed), ends)
    return generate(loaded, z)


def arithmetic(loaded: Loaded, a, b, c):
    """The DCGAN figure's strip: samples of mean(a), mean(b), mean(c) and mean(a) - mean(b) + mean(c)."""
    from genforge import latent

    _need(loaded, "latent arithmetic", loaded.capabilities.latent, "a model that generates from noise")
    with loaded.model.inference():
        return latent.arithmetic_strip(loaded.model, a, b, c)


def translate(loaded: Loaded, images, direction: str = "a2b"):
    """A DiscoGAN's (translations, reconstructions) of ``images`` (N, C, H, W) in [0, 1] (or points)."""
    import torch

    _need(loaded, "translation", loaded.capabilities.translator, "a DiscoGAN run")
    if direction not in ("a2b", "b2a"):
        raise GenforgeError(f"unknown direction '{direction}'; use a2b or b2a")
    model = loaded.model
    with model.inference():
        source = images.float().to(loaded.device)
        if loaded.capabilities.data == "images":
            source = model.prepare((source.clamp(0, 1) * 255).round().to(torch.uint8))
        fake, back = model.translate(source, direction)
        if loaded.capabilities.data == "images":
            fake, back = model.to_unit(fake), model.to_unit(back)
    return fake.float().cpu(), back.float().cpu()


def encode(loaded: Loaded, images):
    """A VAE's latent means (N, latent) of ``images`` (N, C, H, W) in [0, 1]."""
    import torch

    _need(loaded, "encoding", loaded.capabilities.encoder, "a VAE run")
    model = loaded.model
    with model.inference():
        x = model.prepare((images.clamp(0, 1) * 255).round().to(torch.uint8).to(loaded.device))
        mu, _ = model.encode(x)
    return mu.float().cpu()


def reconstruct(loaded: Loaded, images):
    """A VAE's reconstructions (decoded latent means) of ``images`` (N, C, H, W) in [0, 1]."""
    return generate(loaded, encode(loaded, images))


def check_fusion(loaded: Loaded) -> None:
    """Refuse a run that cannot fuse images (only a VAE encodes them), before its images are read."""
    _need(loaded, "fusion", loaded.capabilities.encoder, "a VAE run")


def fuse(loaded: Loaded, image_a, image_b, steps: int = 8):
    """A fusion strip of two images (each (1, C, H, W) or (C, H, W) in [0, 1] at the run's size and
    channels, e.g. from :func:`decode_image_bytes`): ``image_a``, then the ``steps`` images a VAE decodes
    along the straight line from a's latent mean to b's (the first and last reconstruct a and b),
    then ``image_b``; (steps + 2, C, H, W) in [0, 1] on the CPU."""
    import torch

    check_fusion(loaded)
    _count(steps, "--steps", low=2)
    model = loaded.model
    pair = []
    for name, image in (("image a", image_a), ("image b", image_b)):
        if tuple(image.shape[-3:]) != tuple(model.image_shape) or image.numel() != torch.Size(model.image_shape).numel():
            raise GenforgeError(f"{name} has shape {tuple(image.shape)}; this run encodes one image of shape "
                                f"{tuple(model.image_shape)}")
        pair.append(image.reshape(model.image_shape).float().cpu().clamp(0, 1))
    with model.inference():
        x = model.prepare((torch.stack(pair) * 255).round().to(torch.uint8).to(loaded.device))
        walk = model.walk(x[0], x[1], steps).float().cpu()
    return torch.cat([pair[0][None], walk, pair[1][None]])


def decode_image_bytes(data: bytes, loaded: Loaded, name: str = "upload"):
    """An uploaded image file -> (1, C, H, W) in [0, 1] at the run's size and channels, composited on
    the run's background (``data.background``), through the same bomb-safe decoder as image folders."""
    import tempfile

    import torch

    from genforge.data.folder import BadImage, DecodeSettings, decode_image

    _need(loaded, "an uploaded image", loaded.capabilities.data == "images", "a run on images")
    channels, size = loaded.model.image_shape[0], loaded.model.image_shape[-1]
    with tempfile.NamedTemporaryFile(suffix=".img") as handle:
        handle.write(data)
        handle.flush()
        try:
            array = decode_image(Path(handle.name), DecodeSettings(size, channels, loaded.cfg.data.background))
        except BadImage as e:
            raise GenforgeError(f"{name!r}: {e}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def nearest(loaded: Loaded, images, data_root: str | None = None):
    """Each of ``images`` beside its nearest training image: Neighbours(images, distances, names, space)."""
    from genforge.metrics.nearest import nearest_training

    _need(loaded, "--nearest", loaded.capabilities.data == "images", "a run on images")
    return nearest_training(images, loaded.cfg.data, loaded.cfg.data.root or data_root, loaded.device)


def picture(loaded: Loaded, samples, data_root: str | None = None, nrow: int | None = None,
            title: str = "", paths: int = 0):
    """What a person looks at, (3, H, W) in [0, 1]: a grid of images, or for points a scatter over the
    training data (``paths`` > 0: the samples are that many walks, drawn as lines)."""
    from genforge import viz

    if samples.ndim == 4:
        return viz.make_grid(samples.float(), nrow=nrow)
    from genforge.data.datasets import load_data

    data = load_data(loaded.cfg.data, "train", loaded.cfg.data.root or data_root)
    if paths:
        return viz.render_paths(data.images[:2500], samples.reshape(paths, -1, samples.shape[-1]), title or data.name)
    return viz.render_points(data.images[:2500], samples, title or data.name)


def png_bytes(image_or_images, nrow: int | None = None, scale: int = 2) -> bytes:
    """PNG bytes of one picture (3, H, W) or a grid of images (N, C, H, W), all in [0, 1]."""
    import io

    from genforge import viz

    image = viz.make_grid(image_or_images.float(), nrow=nrow) if image_or_images.ndim == 4 else image_or_images
    buffer = io.BytesIO()
    viz.to_pil(image, scale=scale).save(buffer, format="PNG")
    return buffer.getvalue()


# --- evaluation ------------------------------------------------------------------------------

def evaluate(run_dir: str | Path, n: int = 10_000, seed: int = 0, device: str = "cpu", data_root: str | None = None,
             nll_samples: int | None = None, progress: Callable[[str, int, int], None] | None = None,
             show_progress: bool = False, checkpoint: str | None = None) -> dict[str, Any]:
    """Score a run's newest checkpoint with every metric that applies to it; writes RUN_DIR/eval.json
    and returns it. ``checkpoint`` (a ``step-N`` of the run) scores that one instead, into
    RUN_DIR/eval-step-N.json: eval.json is the run's final figures, which the run list shows.
    ``progress(stage, done, total)`` is called as the work goes."""
    from genforge.metrics.evaluate import evaluate_loaded

    if not 2 <= n <= MAX_SAMPLES:
        raise GenforgeError(f"--n must be 2 to {MAX_SAMPLES:,}, not {n}")
    if nll_samples is not None:
        _count(nll_samples, "--nll-samples")
    check_links(run_dir)
    loaded = load(run_dir, device, checkpoint)
    return evaluate_loaded(loaded.cfg, loaded.model, loaded.step, Path(run_dir), n, seed, loaded.device, data_root,
                           nll_samples, progress=progress, show_progress=show_progress,
                           out_name=eval_file_name(checkpoint and loaded.step))


def eval_file_name(step: int | None = None) -> str:
    """Where ``evaluate`` writes: eval.json for the newest checkpoint, eval-step-N.json for an earlier one."""
    return "eval.json" if step is None else f"eval-step-{step:07d}.json"


def real_floor(dataset: str, n: int = 10_000, seed: int = 0, device: str = "cpu",
               data_root: str | None = None) -> dict[str, Any]:
    """The metrics of held-out real images against the reference split: the best a model can score."""
    from genforge.metrics.evaluate import evaluate_real
    from genforge.runtime import resolve_device

    if not 2 <= n <= MAX_SAMPLES:
        raise GenforgeError(f"--n must be 2 to {MAX_SAMPLES:,}, not {n}")
    return evaluate_real(dataset, n, seed, root=data_root, device=resolve_device(device))


def translate_files(run_dir: str | Path, inputs: list[str | Path], direction: str = "a2b",
                    out_dir: str | Path = "translated", device: str = "cpu", invert: bool = False):
    """Translate image files and folders with a DiscoGAN run: one PNG per input and a grid; unusable
    files are skipped and listed (see :mod:`genforge.translate`)."""
    from genforge import translate as translation

    return translation.translate_files(load(run_dir, device), inputs, direction, out_dir, invert)


def translate_test(run_dir: str | Path, n: int = 16, direction: str = "a2b", out_dir: str | Path = "translated",
                   seed: int = 0, device: str = "cpu", data_root: str | None = None):
    """Translate ``n`` test images of the run's source domain (chosen by ``seed``)."""
    from genforge import translate as translation

    return translation.translate_test(load(run_dir, device), n, direction, out_dir, seed, data_root)


def compare_runs(run_dirs: list[str | Path], out: str | Path, n: int = 8, seed: int = 0,
                 data_root: str | None = None):
    """DiscoGAN runs of one dataset side by side in one picture (see :func:`genforge.translate.compare_runs`)."""
    from genforge import translate as translation

    return translation.compare_runs([load(run_dir) for run_dir in run_dirs], out, n, seed, data_root)


def export(run_dir: str | Path, format: str, out: str | Path, weights: str = "auto", force: bool = False,
           checkpoint: str | None = None):
    """Export a run's sampling networks (of its newest checkpoint, or ``checkpoint``) as ``format`` (onnx,
    torchscript or folder) into the folder ``out``: see :func:`genforge.export.export`. The request is
    checked before the run is loaded."""
    from genforge import export as exporting

    exporting.check_request(format, out, weights, force)
    return exporting.export(load(run_dir, checkpoint=checkpoint), format, out, weights, force)
