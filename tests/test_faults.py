"""Faults injected, not hoped for: SIGKILL at 20 points (8 inside the checkpoint writer, one per
stage), a full disk while writing a checkpoint, a grid or the metrics log, two writers at once, a
stale lock, non-finite losses and weights, and a torchrun worker killed mid-run. After each, the
run resumes from what is on disk and ends bit for bit where an uninterrupted run ends.

The kills run in a forked child (torch is already imported, so a case costs a fraction of a
second): the child trains with a hook that SIGKILLs it at one exact point, and the parent resumes
the run in-process, through the same application layer as ``genforge train --resume``."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genforge import api, checkpoint, runtime, train as training
from genforge.checkpoint import STAGES, latest_checkpoint
from genforge.cli import main
from genforge.errors import GenforgeError

REPO = Path(__file__).resolve().parents[1]
STEPS = 12
TOY = ["model.hidden=16", "model.layers=1", "model.latent_dim=4", "train.batch_size=32", "train.threads=1",
       "train.device=cpu", "train.log_every=2", "train.sample_every=4", "train.checkpoint_every=3"]


IMAGES = ["model.width=8", "model.latent_dim=16", *TOY[3:]]  # a tiny DCGAN on the bundled digits (slow variant)


def _config(*extra: str, recipe: str = "ring-8"):
    return api.check_config(recipe, [*(TOY if recipe == "ring-8" else IMAGES), *extra], steps=STEPS)


def _train(run_dir: Path, *extra: str, recipe: str = "ring-8"):
    return api.train_run(_config(*extra, recipe=recipe), run_dir, progress=False)


def _resume(run_dir: Path, start: str | None = None):
    return api.train_run(api.resume_config(run_dir, start=start), run_dir, resume=True, progress=False, start=start)


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the newest checkpoint (weights, optimiser moments, RNG) and its data order."""
    folder = latest_checkpoint(run_dir)
    tensors = {f"{name}:{key}": value for name in ("model", "optim", "rng")
               for key, value in load_file(folder / f"{name}.safetensors").items()}
    state = json.loads((folder / "state.json").read_text())
    tensors["data_order"] = torch.tensor([state["data_order"]["epoch"], state["data_order"]["position"]])
    tensors["step"] = torch.tensor(state["step"])
    return tensors


def _logged_steps(run_dir: Path) -> list[int]:
    """The steps of the loss rows (those with the speed) of metrics.jsonl, in order."""
    return [row["step"] for row in api.open_run(run_dir).metrics() if "images_per_s" in row]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    got, want = _final_state(run_dir), _final_state(reference)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    # Each log step once (a row's mean covers the steps since the resume, so only the steps are compared).
    assert _logged_steps(run_dir) == _logged_steps(reference)
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every faulted one must end identical to."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    _train(run_dir)
    return run_dir


def forked(work) -> int:
    """Run ``work()`` in a forked child; its wait status (the child never returns into pytest)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            work()
        except BaseException:  # noqa: BLE001 - the child must not unwind into pytest
            code = 3
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def kill_self(*_):
    os.kill(os.getpid(), signal.SIGKILL)


# --- SIGKILL at 20 points -------------------------------------------------------------------

def _kill_points(seed: int = 20) -> list[tuple[str, str, int]]:
    """(where, what, when): every writer stage at a checkpoint after the first, and 12 points of the
    loop (mid-step between two phases' updates, after a step, a log line, a grid, a checkpoint),
    drawn by a generator seeded with ``seed``."""
    draw = random.Random(seed)
    points = [("writer", stage, draw.choice((6, 9, 12))) for stage in STAGES]
    loop = [("update", "", n) for n in draw.sample(range(8, 2 * STEPS), 4)]
    loop += [("loop", where, draw.choice(steps)) for where, steps in
             (("step", range(4, STEPS)), ("step", range(4, STEPS)), ("log", (4, 6, 8, 10)), ("log", (4, 6, 8, 10)),
              ("sample", (4, 8)), ("sample", (4, 8)), ("checkpoint", (6, 9)), ("checkpoint", (6, 9, 12)))]
    return points + loop


def _arm(where: str, what: str, when: int) -> None:
    """In the child: the hook that kills it at the point."""
    if where == "writer":
        checkpoint.WRITER_HOOK = lambda stage, step: kill_self() if (stage, step) == (what, when) else None
    elif where == "loop":
        training.FAULT_HOOK = lambda at, step: kill_self() if (at, step) == (what, when) else None
    else:  # the when-th optimiser update of the run: between the discriminator's and the generator's
        original, count = training._update, [0]

        def update(*args, **kwargs):
            count[0] += 1
            if count[0] == when:
                kill_self()
            return original(*args, **kwargs)

        training._update = update


@pytest.mark.parametrize("where, what, when", _kill_points(), ids=lambda v: str(v))
def test_sigkill_at_any_point_resumes_bit_for_bit(tmp_path, reference, where, what, when):
    run_dir = tmp_path / "run"
    status = forked(lambda: (_arm(where, what, when), _train(run_dir)))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert api.open_run(run_dir).status() == "interrupted"  # the dead trainer's lock reads as stale
    result = _resume(run_dir)  # takes the stale lock over
    assert result.step == STEPS and not result.interrupted
    assert_same_run(run_dir, reference)


@pytest.fixture(scope="module")
def image_reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("image-reference") / "run"
    _train(run_dir, recipe="mnist-dcgan")
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("where, what, when", _kill_points(21) + _kill_points(22) + _kill_points(23),
                         ids=lambda v: str(v))
def test_sigkill_at_60_more_points_of_an_image_run_resumes_bit_for_bit(tmp_path, image_reference, where, what, when):
    run_dir = tmp_path / "run"
    status = forked(lambda: (_arm(where, what, when), _train(run_dir, recipe="mnist-dcgan")))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert _resume(run_dir).step == STEPS
    assert_same_run(run_dir, image_reference)


def test_the_kill_points_cover_every_writer_stage():
    points = _kill_points()
    assert len(points) == 20
    assert {what for where, what, _ in points if where == "writer"} == set(STAGES) and len(STAGES) >= 5


# --- a full disk and I/O errors --------------------------------------------------------------

def _fail_once(monkeypatch, owner, name: str, when, code: int = errno.ENOSPC, filename: str | None = None):
    """``owner.name`` raises OSError(code) on the call for which ``when(*args)`` is true."""
    original = getattr(owner, name)

    def failing(*args, **kwargs):
        if when(*args):
            raise OSError(code, os.strerror(code), filename)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


@pytest.mark.parametrize("target", ["checkpoint-file", "grid", "metrics-log", "eio-checkpoint"])
def test_a_full_disk_stops_in_one_line_and_the_last_checkpoint_resumes_bit_for_bit(tmp_path, reference, monkeypatch,
                                                                                   capsys, target):
    run_dir = tmp_path / "run"
    calls = {"n": 0}

    def nth(n):
        def when(*_):
            calls["n"] += 1
            return calls["n"] == n
        return when

    if target in ("checkpoint-file", "eio-checkpoint"):  # the 3rd of step 6's files
        code = errno.EIO if target == "eio-checkpoint" else errno.ENOSPC
        _fail_once(monkeypatch, checkpoint, "save_file", nth(6), code)
    elif target == "grid":
        _fail_once(monkeypatch, training.viz, "save_grid_image", nth(2), filename=str(run_dir / ".step-0000008.1-ab.tmp.png"))
    else:
        _fail_once(monkeypatch, runtime.MetricsLog, "log", lambda log, step, values: step == 8)
    code = main(["train", "ring-8", "--run-dir", str(run_dir), "--steps", str(STEPS), "--no-progress", *TOY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("genforge: error:") == 1 and "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("genforge: error:"))
    assert ("Input/output error" if target == "eio-checkpoint" else "No space left on device") in line
    assert "is kept" in line and f"genforge train --resume {run_dir}" in line
    if target == "grid":
        assert "cannot write step-0000008.png" in line
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # no partial checkpoint a resume could read
    kept = latest_checkpoint(run_dir).name
    assert kept in line and kept in ("step-0000003", "step-0000006")
    monkeypatch.undo()
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert_same_run(run_dir, reference)


def test_a_full_disk_while_writing_status_json_is_still_one_line(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    _fail_once(monkeypatch, checkpoint, "save_file", lambda *_: True)
    _fail_once(monkeypatch, api, "write_status", lambda *_: True)
    code = main(["train", "ring-8", "--run-dir", str(run_dir), "--steps", "4", "--no-progress", *TOY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("genforge: error:") == 1
    assert "no complete checkpoint was written yet" in err and "Traceback" not in err


# --- one writer per run --------------------------------------------------------------------

def _pause_at(stage: str, step: int, marker: Path) -> None:
    """In the child: stop inside the checkpoint writer at ``stage`` of ``step`` (the marker says so)."""
    def hook(at, at_step):
        if (at, at_step) == (stage, step):
            marker.write_text(str(os.getpid()))
            time.sleep(600)
    checkpoint.WRITER_HOOK = hook


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, reference, capsys):
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    pid = os.fork()
    if pid == 0:
        try:
            _pause_at("optim.safetensors", 6, marker)
            _train(run_dir)
        finally:
            os._exit(3)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0), "the child never paused"
            time.sleep(0.05)
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "lock"}
        assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"is being trained by process {pid}" in err and err.count("genforge: error:") == 1
        assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "lock"} == before
        with pytest.raises(GenforgeError, match="is being trained by process"):
            api.resume_training(run_dir)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert (run_dir / "lock").is_file() and list((run_dir / "checkpoints").glob(".tmp-step-0000006"))
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0  # the stale lock is taken over
    assert not (run_dir / "lock").exists()
    assert_same_run(run_dir, reference)


def test_a_lock_left_by_a_process_that_died_elsewhere_in_time_is_taken_over(tmp_path, reference):
    run_dir = tmp_path / "run"
    status = forked(lambda: (_arm("loop", "checkpoint", 6), _train(run_dir)))
    assert os.WIFSIGNALED(status)
    holder = json.loads((run_dir / "lock").read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder["pid"] = int(dead.stdout)  # a pid that is certainly gone
    (run_dir / "lock").write_text(json.dumps(holder))
    _resume(run_dir)
    assert_same_run(run_dir, reference)


# --- numbers that stop being numbers ---------------------------------------------------------

def _poison(monkeypatch, at_step: int, what: str) -> None:
    """From ``at_step`` on, the run's step returns a NaN loss ("loss") or leaves a NaN weight ("weight")."""
    original = training.TrainingRun.step
    count = {"step": 0}

    def step(self):
        logged = original(self)
        count["step"] += 1
        if count["step"] >= at_step:
            if what == "loss":
                logged["d/loss"] = logged["d/loss"] * float("nan")
            else:
                with torch.no_grad():
                    next(self.model.generator.parameters()).view(-1)[0] = float("inf")
        return logged

    monkeypatch.setattr(training.TrainingRun, "step", step)


def _all_finite(run_dir: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for folder in (run_dir / "checkpoints").glob("step-*")
               for name in ("model", "optim") for t in load_file(folder / f"{name}.safetensors").values()
               if t.is_floating_point())


@pytest.mark.parametrize("what, at_step, stops_at, kept, named", [
    ("loss", 5, 6, "step-0000003", "the loss d/loss of phase d is nan"),  # at the next log step
    ("weight", 9, 9, "step-0000006", "the weight generator."),  # at the checkpoint it would have spoilt
    ("weight", 7, 8, "step-0000006", "of phase ")])  # the losses of step 8 are not finite either
def test_a_non_finite_loss_or_weight_stops_at_the_next_log_step_keeping_the_last_finite_checkpoint(
        tmp_path, reference, monkeypatch, capsys, what, at_step, stops_at, kept, named):
    run_dir = tmp_path / "run"
    _poison(monkeypatch, at_step, what)
    code = main(["train", "ring-8", "--run-dir", str(run_dir), "--steps", str(STEPS), "--no-progress", *TOY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("genforge: error:") == 1 and "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("genforge: error:"))
    assert line.startswith(f"genforge: error: step {stops_at}: ")
    assert named in line
    assert f"the last finite checkpoint, {kept}, is kept" in line
    assert latest_checkpoint(run_dir).name == kept and _all_finite(run_dir)
    assert all(row["step"] < stops_at for row in api.open_run(run_dir).metrics())  # no NaN row logged
    monkeypatch.undo()
    _resume(run_dir)  # the last finite checkpoint resumes, bit for bit
    assert_same_run(run_dir, reference)


def test_on_nan_skip_skips_counts_and_stops_after_nan_skips(tmp_path, monkeypatch):
    original, count = training._update, {"n": 0}

    def update(phase, optimizer, scaler, losses, gate, ranks, guard=None):
        count["n"] += 1
        if count["n"] in (3, 4, 9):  # three updates whose gradients are NaN
            losses = {**losses, "loss": losses["loss"] * float("nan")}
        return original(phase, optimizer, scaler, losses, gate, ranks, guard)

    monkeypatch.setattr(training, "_update", update)
    result = _train(tmp_path / "skip", "train.on_nan=skip", "train.nan_skips=3")
    assert result.step == STEPS
    rows = api.open_run(tmp_path / "skip").metrics()
    assert [row["nan_skips"] for row in rows if "nan_skips" in row][-1] == 3
    assert all(all(v == v for v in row.values() if isinstance(v, float)) for row in rows)
    assert _all_finite(tmp_path / "skip")

    count["n"] = 0
    # it stops at the step of the skip past the limit (it went on to the next log step), with the count on disk
    with pytest.raises(GenforgeError, match=r"^step 5: 3 updates skipped for non-finite gradients, more than "
                                            r"train.nan_skips=2.*a larger train.nan_skips, in a new run"):
        _train(tmp_path / "stop", "train.on_nan=skip", "train.nan_skips=2")
    assert _all_finite(tmp_path / "stop")
    assert api.open_run(tmp_path / "stop").metrics()[-1] == {"step": 5, "nan_skips": 3}


def test_mnist_vae_at_lr_1e6_stops_with_the_nan_line_and_its_last_finite_checkpoint_resumes(tmp_path, capsys):
    from .conftest import tiny_overrides

    run_dir = tmp_path / "vae"
    overrides = tiny_overrides("mnist-vae", "optim.lr=1e6", "train.checkpoint_every=1", "train.log_every=10",
                               "train.steps=40")
    assert main(["train", "mnist-vae", "--run-dir", str(run_dir), "--no-progress", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("genforge: error:") == 1 and "Traceback" not in err and "LinAlgError" not in err
    assert "is no longer finite" in err or "is nan" in err or "is inf" in err
    kept = latest_checkpoint(run_dir)
    assert f"the last finite checkpoint, {kept.name}, is kept" in err and _all_finite(run_dir)
    loaded = api.load(run_dir)  # the last finite checkpoint loads and samples
    assert loaded.step == int(kept.name.split("-")[1]) and bool(torch.isfinite(api.sample(loaded, 4)).all())
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2  # resumes, and meets the same fault
    err = capsys.readouterr().err
    assert f"resuming mnist-vae (vae) in {run_dir} from step {loaded.step}" in err and err.count("genforge: error:") == 1


# --- a torchrun worker killed mid-run ---------------------------------------------------------

DDP = ["model.width=8", "model.latent_dim=16", "train.batch_size=16", "train.threads=1", "train.log_every=2",
       "train.checkpoint_every=4", "train.sample_every=100"]


def _torchrun(run_dir: Path, *, restarts: int = 0, kill: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", training.KILL_ENV: kill}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--max-restarts", str(restarts), "-m", "genforge", "train", "mnist-dcgan", "--no-progress",
               "--steps", "8", "--run-dir", str(run_dir), *DDP]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_brings_the_group_back_after_a_rank_is_killed_with_the_same_weights(tmp_path):
    straight = _torchrun(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _torchrun(tmp_path / "killed", restarts=1, kill="1:6")  # rank 1 SIGKILLs itself after step 6
    assert killed.returncode == 0, killed.stderr[-3000:]
    assert "test hook: rank 1 kills itself after step 6" in killed.stderr
    # torchrun names whichever process it sees fail first: rank 1 (-9) or rank 0, whose collective broke
    assert "exitcode: -9" in killed.stderr or "another process of the torchrun group stopped" in killed.stderr
    assert "resuming mnist-dcgan (gan)" in killed.stderr
    assert "from step 4" in killed.stderr
    a = load_file(latest_checkpoint(tmp_path / "straight") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "killed") / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [row["step"] for row in api.open_run(tmp_path / "killed").metrics() if "g/loss" in row]
    assert steps == [2, 4, 6, 8]  # the rows past the checkpoint were redone once, not twice


# --- the cache and downloads --------------------------------------------------------------------

def test_a_full_disk_while_writing_the_folder_cache_warns_once_and_still_loads(tmp_path, private_cache, monkeypatch,
                                                                                capsys):
    from genforge.data import folder as folders

    from .conftest import synthetic_folder

    images = synthetic_folder(tmp_path / "images", count=4)
    _fail_once(monkeypatch, folders, "write_atomic", lambda *_: True)
    loaded = folders.load_folder(images, folders.DecodeSettings(8))
    assert loaded.images.shape == (4, 3, 8, 8)
    err = capsys.readouterr().err
    assert err.count("genforge: warning:") == 1 and "No space left on device" in err
    assert not private_cache.exists() or not [p for p in private_cache.rglob("*") if p.is_file()]


def test_a_link_planted_at_a_download_part_file_is_not_written_through(tmp_path):
    from genforge.data.download import _open_part

    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (tmp_path / "data").mkdir()
    part = tmp_path / "data" / "train-images-idx3-ubyte.gz.part"
    part.symlink_to(outside)
    for append in (False, True):
        with pytest.raises(OSError):
            _open_part(part, append)
    assert outside.read_text() == "keep me"
