"""Run folders read back: what a run is, how far it got, and who is training it.

A run folder is a directory holding ``config.json``. Everything here reads files only (no
torch import), so ``genforge runs`` and the studio's run list start fast and never disturb a
training. Who trains a run is told by ``RUN_DIR/lock`` (the training process's pid and host,
held while it runs); how it ended by ``RUN_DIR/status.json`` (written when training stops).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genforge.errors import GenforgeError

LOCK_FILE = "lock"
STATUS_FILE = "status.json"
PROCESS_FILE = "process.json"  # written by api.start_training: the child process, before its config.json exists
STOP_FILE = "stop.json"  # written by api.stop_training: the process asked to stop (read once its loop begins)
STATUSES = ("training", "finished", "interrupted", "failed")
SEARCH_DEPTH = 3  # run folders are found this many levels below the runs folder at most
# Final metrics shown first in a run list, when a run has them (lower-is-better ones first).
HEADLINE_ORDER = ("eval/fid", "eval/pixel_fid", "eval/nll", "eval/neg_elbo", "eval/modes", "eval/hq",
                  "eval/class_accuracy", "eval/kid", "eval/pixel_kid")


def _read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (a run being written)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: JSON nested a million deep
        return None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs on this machine (a zombie, finished but not yet reaped, is not alive)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return not Path("/proc").is_dir()  # with /proc present, a readable stat was the answer


# --- one writer per run ----------------------------------------------------------------

@dataclass
class LockHolder:
    pid: int
    host: str
    started: float
    budget: dict[str, float] = field(default_factory=dict)  # the training's {"steps", "minutes"}

    @property
    def alive(self) -> bool:
        """Holding the lock now: a live process of this host (another host's lock is taken at its word)."""
        return self.host != socket.gethostname() or pid_alive(self.pid)

    def busy(self, run_dir: str | Path, advice: str = "stop it first") -> str:
        """The one line that refuses a second trainer: who holds the run, since when, and what to do. A lock of
        another host is taken at its word, so a run folder copied from there says how to free it."""
        since = time.strftime("%H:%M:%S", time.localtime(self.started))
        line = f"{run_dir} is being trained by process {self.pid} on {self.host} (since {since}); {advice}"
        if self.host != socket.gethostname():
            line += (f" (if no process on {self.host} trains it, e.g. the folder was copied from there, "
                     f"remove {Path(run_dir) / LOCK_FILE})")
        return line


def lock_holder(run_dir: str | Path) -> LockHolder | None:
    """Who holds the run's lock (alive or not), or None when nobody ever took it."""
    raw = _read_json(Path(run_dir) / LOCK_FILE)
    if not isinstance(raw, dict):
        return None
    try:
        budget = raw.get("budget") if isinstance(raw.get("budget"), dict) else {}
        pid, started = int(raw["pid"]), float(raw.get("started", 0.0))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if not 0 < pid < 2**31:  # no process has it: a damaged lock, taken over like a dead holder's
        return None
    if not (math.isfinite(started) and 0 <= started < 1e11):  # a time past any clock: unknown
        started = 0.0
    return LockHolder(pid, str(raw["host"]), started, budget)


class RunLock:
    """``RUN_DIR/lock`` while a process trains the run: a second trainer is refused with one line
    saying who holds it; the lock of a process that died is taken over."""

    def __init__(self, run_dir: str | Path, budget: dict[str, float] | None = None):
        self.path = Path(run_dir) / LOCK_FILE
        self.budget = budget or {}
        self.held = False

    def acquire(self) -> RunLock:
        payload = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                              "budget": self.budget})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                if self.path.is_dir() and not self.path.is_symlink():
                    raise GenforgeError(f"{self.path} is a folder, not genforge's lock file: move it out of the run "
                                        "folder (the run's trainer writes its lock there)") from None
                holder = lock_holder(self.path.parent)
                if holder is not None and holder.alive:
                    raise GenforgeError(holder.busy(self.path.parent, "stop it first, or train into another "
                                                                      "--run-dir")) from None
                self._take_over_stale()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            self.held = True
            return self
        raise GenforgeError(f"{self.path}: could not take the run's lock (another process keeps taking it)")

    def _take_over_stale(self) -> None:
        """Remove a dead holder's lock; a rename first, so two processes taking it over cannot both win."""
        stale = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
        try:
            os.rename(self.path, stale)
            stale.unlink()
        except FileNotFoundError:
            pass  # someone else took it over (or released it) first: try again

    def release(self) -> None:
        if self.held:
            holder = lock_holder(self.path.parent)
            if holder is not None and holder.pid == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --- a run folder is a boundary ---------------------------------------------------------

def check_links(run_dir: str | Path) -> None:
    """Refuse a run folder holding a link that leads out of it (a run folder someone sent you, with
    ``checkpoints`` or ``samples/final.png`` linked elsewhere, must not make genforge write or delete
    outside it). Links inside it (``checkpoints/latest`` -> ``step-N``) are fine."""
    root = Path(run_dir)
    if root.is_symlink():
        raise GenforgeError(f"{root} is a symbolic link; name the run folder itself")
    if not root.is_dir():
        return
    inside = root.resolve()
    for folder, dirs, files in os.walk(root):  # os.walk does not descend into linked folders
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink():
                target = path.resolve()
                if target != inside and inside not in target.parents:
                    shown = name if name.isprintable() else repr(name)
                    raise GenforgeError(f"{Path(folder) / shown}: a link to {target}, outside the run folder; "
                                        "genforge will not write through it (remove the link, or copy the run)")


# --- how a run ended -------------------------------------------------------------------

def write_status(run_dir: str | Path, status: str, step: int, error: str = "",
                 budget: dict[str, float] | None = None, seconds: float = 0.0,
                 machine: dict[str, Any] | None = None) -> None:
    """Record how the training of a run stopped: finished, interrupted or failed (with its error line),
    the budget it trained to (a resume may have changed config.json's), the wall-clock seconds of
    training so far (``seconds`` this time, added to what earlier trainings recorded) and the machine."""
    from genforge.atomic import write_json_atomic

    earlier = _read_json(Path(run_dir) / STATUS_FILE)
    before = earlier.get("train_seconds", 0.0) if isinstance(earlier, dict) else 0.0
    before = before if isinstance(before, (int, float)) else 0.0
    payload = {"status": status, "step": step, "time": time.time(), "budget": budget or {},
               "train_seconds": round(before + seconds, 3), **({"machine": machine} if machine else {}),
               **({"error": error} if error else {})}
    write_json_atomic(Path(run_dir) / STATUS_FILE, payload, indent=1)


def recorded_status(run_dir: str | Path) -> dict[str, Any]:
    """RUN_DIR/status.json as written by :func:`write_status` ({} when absent or unreadable)."""
    raw = _read_json(Path(run_dir) / STATUS_FILE)
    return raw if isinstance(raw, dict) else {}


def _checkpoint_step(run_dir: Path) -> int | None:
    """The step of the newest complete checkpoint, read from its state.json (None: no checkpoint)."""
    root = run_dir / "checkpoints"
    candidates = [root / "latest"] + sorted(root.glob("step-*"), reverse=True) if root.is_dir() else []
    for folder in candidates:
        state = _read_json(folder / "state.json")
        if isinstance(state, dict) and isinstance(state.get("step"), int):
            return state["step"]
    return None


def starting_child(run_dir: Path) -> int | None:
    """The pid of the training child that RUN_DIR/process.json names while it still runs on this
    machine, else None. A process that began after process.json was written is another one that
    was given the same pid, not the child."""
    child = _read_json(Path(run_dir) / PROCESS_FILE)
    if not (isinstance(child, dict) and isinstance(child.get("pid"), int) and pid_alive(child["pid"])
            and child.get("host", socket.gethostname()) == socket.gethostname()):
        return None
    began = _process_start(child["pid"])
    written = child.get("started")
    if began is not None and isinstance(written, (int, float)) and began > written + 2:
        return None
    return child["pid"]


def _process_start(pid: int) -> float | None:
    """When process ``pid`` began (seconds since the epoch), from Linux's /proc; None elsewhere."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def request_stop(run_dir: str | Path, pid: int) -> None:
    """Ask process ``pid`` in writing to stop training ``run_dir``. A signal alone can be lost: a child
    started by a process that ignores SIGINT ignores it until its loop installs its handler, and the
    loop reads this file once that handler is in place (so one of the two always reaches it)."""
    from genforge.atomic import write_json_atomic

    write_json_atomic(Path(run_dir) / STOP_FILE, {"pid": int(pid), "host": socket.gethostname(), "time": time.time()})


def stop_requested(run_dir: str | Path) -> bool:
    """Whether RUN_DIR/stop.json asks this process to stop (one naming another pid is another run's)."""
    asked = _read_json(Path(run_dir) / STOP_FILE)
    return (isinstance(asked, dict) and asked.get("pid") == os.getpid()
            and asked.get("host", socket.gethostname()) == socket.gethostname())


def clear_stop(run_dir: str | Path, only_mine: bool = False) -> None:
    """Remove RUN_DIR/stop.json (``only_mine``: only when it names this process)."""
    if not only_mine or stop_requested(run_dir):
        try:
            (Path(run_dir) / STOP_FILE).unlink(missing_ok=True)
        except OSError:
            pass


def read_status(run_dir: Path) -> str:
    """training / finished / interrupted / failed, from the lock, status.json and the checkpoints."""
    holder = lock_holder(run_dir)
    if holder is not None and holder.alive:
        return "training"
    if starting_child(run_dir) is not None:  # started by the studio, not yet holding the lock: counts as training
        return "training"
    if not (run_dir / "config.json").is_file():  # a child that died before writing its config
        return "failed"
    recorded = _read_json(run_dir / STATUS_FILE)
    has_checkpoint = _checkpoint_step(run_dir) is not None
    if holder is None and isinstance(recorded, dict) and recorded.get("status") in STATUSES[1:]:
        if recorded["status"] == "interrupted" and not has_checkpoint:
            return "failed"  # stopped before its first checkpoint: nothing to resume, only to start again
        return recorded["status"]
    # A dead holder (killed, or the machine went down) or a run from before status.json.
    if not has_checkpoint:
        return "failed" if (holder is not None or isinstance(recorded, dict)) else "interrupted"
    if holder is None and (run_dir / "samples" / "final.png").is_file():
        return "finished"
    return "interrupted"


# --- a run folder ------------------------------------------------------------------------

@dataclass
class RunSummary:
    """One line of a run list (JSON-safe with :meth:`to_dict`)."""

    id: str
    path: Path
    recipe: str
    family: str
    status: str
    step: int
    total_steps: int
    minutes: float
    images_per_s: float | None
    newest_sample: Path | None
    headline: dict[str, float] = field(default_factory=dict)
    updated: float = 0.0
    problem: str = ""  # why the run cannot be read (a damaged config.json) or why it failed: listed, not hidden

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"], out["newest_sample"] = str(self.path), self.newest_sample and str(self.newest_sample)
        return out


def read_metrics(path: Path, since: int | None = None) -> list[dict]:
    """Rows of a metrics.jsonl (a torn last line, from a run being written, and lines that are not
    UTF-8 JSON objects with a step, as on a damaged disk, are skipped)."""
    rows = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            if since is None or row["step"] > since:
                rows.append(row)
    return rows


class Run:
    """A run folder read back: config, status, metrics, samples timeline, plots and evaluation."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        config = self.path / "config.json"
        if config.is_symlink() and not config.resolve().is_relative_to(self.path.resolve()):
            raise GenforgeError(f"{config}: a link to {config.resolve()}, outside the run folder; genforge does not "
                                "read a run through it (copy the file into the run)")
        if config.is_file():
            raw = _read_json(config)
            if raw is None:
                raise GenforgeError(f"{config}: unreadable (not UTF-8 JSON); the run's config is damaged")
        else:
            raw = _pending_config(self.path)
            if raw is None:
                raise GenforgeError(f"{self.path}: not a genforge run folder (no config.json)")
        if not isinstance(raw, dict):
            raise GenforgeError(f"{self.path / 'config.json'}: not a JSON object; is this a genforge run folder?")
        self.raw_config: dict[str, Any] = raw
        self.recipe = str(raw.get("recipe", "?"))
        self.family = str(raw.get("family", "?"))

    @property
    def config(self):
        """The run's typed config (RunConfig), validated as it is read."""
        from genforge.config import config_from_json

        if not (self.path / "config.json").is_file():
            raise GenforgeError(f"{self.path}: the training never wrote its config.json; see {self.path / 'train.log'}")

        return config_from_json(self.path / "config.json")

    def status(self) -> str:
        return read_status(self.path)

    def budget(self) -> dict[str, float]:
        """{"steps", "minutes"} the run trains (or trained) to: the live training's, the last one's, or config.json's."""
        holder = lock_holder(self.path)
        recorded = _read_json(self.path / STATUS_FILE)
        for budget in (holder.budget if holder is not None and holder.alive else None,
                       recorded.get("budget") if isinstance(recorded, dict) else None, self.raw_config.get("train")):
            if _a_budget(budget):
                return budget
        return {}

    def metrics(self, since: int | None = None) -> list[dict]:
        return read_metrics(self.path / "metrics.jsonl", since)

    def checkpoint_step(self) -> int | None:
        """The step of the newest complete checkpoint (where a resume starts), or None."""
        return _checkpoint_step(self.path)

    def step(self, rows: list[dict] | None = None) -> int:
        """How far the run got: its newest logged or checkpointed step (``rows``: its metrics, if already read)."""
        rows = self.metrics() if rows is None else rows
        logged = int(rows[-1]["step"]) if rows else 0
        return max(logged, _checkpoint_step(self.path) or 0)

    def timeline(self, step: int | None = None) -> list[tuple[int, Path]]:
        """The progress grids by step (samples/step-N.png), and final.png at the step where the last
        training ended (status.json's; else the run's step, ``step`` if known). A resumed run's
        final.png is the earlier training's until this one ends: it was shown as the newest picture."""
        frames = []
        for path in (self.path / "samples").glob("step-*.png"):
            try:
                frames.append((int(path.stem.split("-", 1)[1]), path))
            except ValueError:
                continue
        frames.sort()
        final = self.path / "samples" / "final.png"
        if final.is_file():
            ended = recorded_status(self.path).get("step")
            if not isinstance(ended, int) or isinstance(ended, bool):
                ended = max(self.step() if step is None else step, frames[-1][0] if frames else 0)
            frames.append((ended, final))
            frames.sort(key=lambda frame: (frame[0], frame[1] == final))  # at its step, after that step's grid
        return frames

    def plots(self) -> list[Path]:
        folder = self.path / "plots"
        return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".gif")) if folder.is_dir() else []

    def eval_result(self) -> dict | None:
        raw = _read_json(self.path / "eval.json")
        return raw if isinstance(raw, dict) else None

    def log_tail(self, lines: int = 50) -> list[str]:
        try:
            return (self.path / "train.log").read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []

    def failure(self, status: str | None = None) -> str:
        """Why a failed run failed, in one line ('' for a run that did not fail): the error its training
        recorded, else the last error line of its train.log, else what the folder shows."""
        if (status or self.status()) != "failed":
            return ""
        error = recorded_status(self.path).get("error")
        if isinstance(error, str) and error.strip():
            return error.strip().splitlines()[-1]
        lines = [line.strip() for line in self.log_tail(50) if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        if errors or lines:
            return (errors or lines)[-1]
        if not (self.path / "config.json").is_file():
            return "its training stopped before writing config.json"
        return "stopped before its first checkpoint: nothing to resume; train it anew"

    def headline(self, final: dict[str, float], step: int) -> dict[str, float]:
        """The figures a run list shows: the headline metrics logged last, with those of ``genforge eval``
        (eval.json) where it evaluated this step or the log has none; else three other final figures, never
        the per-checkpoint class shares (a mnist-dcgan run's list showed class_share_0..2)."""
        evaluated = self.eval_result() or {}
        current = evaluated.get("step") == step
        for key in HEADLINE_ORDER:
            value = evaluated.get(key.removeprefix("eval/"))
            if finite_number(value) and (current or key not in final):
                final = {**final, key: float(value)}
        chosen = {k: final[k] for k in HEADLINE_ORDER if k in final}
        return chosen or dict([item for item in final.items() if not item[0].startswith("eval/class_share_")][:3])

    def summary(self, root: str | Path | None = None) -> RunSummary:
        rows = self.metrics()
        speeds = [r["images_per_s"] for r in rows if isinstance(r.get("images_per_s"), (int, float))]
        final = {k: v for r in rows for k, v in r.items() if k.startswith("eval/") and isinstance(v, (int, float))}
        step = self.step(rows)  # metrics.jsonl is read once: the studio asks for every run's summary often
        headline = self.headline(final, step)
        frames = self.timeline(step)
        train = self.budget()
        ident = self.path.relative_to(root).as_posix() if root is not None else self.path.as_posix()
        status = self.status()
        return RunSummary(ident, self.path, self.recipe, self.family, status, step,
                          int(train.get("steps", 0) or 0), float(train.get("minutes", 0.0) or 0.0),
                          speeds[-1] if speeds else None, frames[-1][1] if frames else None, headline,
                          _updated(self.path), self.failure(status))


def finite_number(value: Any) -> bool:
    """A real int or float (not a bool), and finite: what a number read from a run's JSON must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _a_budget(budget: Any) -> bool:
    """Whether ``budget`` is {"steps", "minutes"} with finite numbers (a damaged status.json's is not:
    one such run made the whole run list fail)."""
    if not isinstance(budget, dict) or not ("steps" in budget or "minutes" in budget):
        return False
    values = [budget[k] for k in ("steps", "minutes") if k in budget]
    return all(finite_number(v) and 0 <= v < 1e15 for v in values)


def checkpoint_every(config: Any) -> int | None:
    """train.checkpoint_every of a run's config dict (config.json as read), or None where it holds none."""
    train = config.get("train") if isinstance(config, dict) else None
    every = train.get("checkpoint_every") if isinstance(train, dict) else None
    return every if isinstance(every, int) and not isinstance(every, bool) else None


def enclosing_run(path: str | Path) -> Path | None:
    """The run folder (config.json and checkpoints/) that ``path`` is or lies in, nearest first; None outside runs."""
    resolved = Path(path).resolve()
    for folder in (resolved, *resolved.parents):
        if (folder / "config.json").is_file() and (folder / "checkpoints").is_dir():
            return folder
    return None


def _pending_config(path: Path) -> dict[str, Any] | None:
    """What process.json says of a run whose child has not written config.json (yet, or ever)."""
    child = _read_json(path / PROCESS_FILE)
    if not isinstance(child, dict) or not isinstance(child.get("recipe"), str):
        return None
    return {"recipe": child["recipe"], "family": child.get("family", "?"), "train": child.get("budget", {})}


def _updated(path: Path) -> float:
    times = [path.stat().st_mtime]
    for name in ("metrics.jsonl", "status.json", "eval.json"):
        try:
            times.append((path / name).stat().st_mtime)
        except OSError:
            pass
    return max(times)


def find_runs(root: str | Path) -> list[Path]:
    """Run folders under ``root`` (root itself, and up to SEARCH_DEPTH levels below), without following links."""
    root = Path(root)
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        if (folder / "config.json").is_file() or (folder / PROCESS_FILE).is_file():
            found.append(folder)
            return
        if depth >= SEARCH_DEPTH:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return
        for child in children:
            walk(child, depth + 1)

    if root.is_dir():
        walk(root, 0)
    return found


def list_runs(root: str | Path = "runs") -> list[RunSummary]:
    """Every run under ``root``, most recently updated first; a run whose config.json cannot be read
    is listed as failed, with the reason as its ``problem`` (it disappeared from the list)."""
    summaries = []
    for folder in find_runs(root):
        try:
            summaries.append(Run(folder).summary(root))
        except GenforgeError as error:
            summaries.append(_unreadable(folder, root, str(error)))
    return sorted(summaries, key=lambda s: s.updated, reverse=True)


def _unreadable(folder: Path, root: str | Path, problem: str) -> RunSummary:
    ident = folder.relative_to(root).as_posix()
    try:
        updated = _updated(folder)
    except OSError:
        updated = 0.0
    return RunSummary(ident, folder, "?", "?", "failed", _checkpoint_step(folder) or 0, 0, 0.0, None, None, {},
                      updated, problem)