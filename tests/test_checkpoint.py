"""Checkpoints: exact round trip, the ``latest`` pointer, pruning, crash leftovers,
corrupt files, no pickle, and a SIGKILL in the middle of training."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genforge.checkpoint import Checkpoint, complete_checkpoints, latest_checkpoint, load_checkpoint, save_checkpoint
from genforge.errors import GenforgeError
from genforge.runtime import rng_state, set_rng_state

from .conftest import tiny_config, tiny_overrides


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))


def _train_step(net, optimizer, x):
    optimizer.zero_grad()
    net(x).pow(2).mean().backward()
    optimizer.step()


def _trained():
    torch.manual_seed(0)
    net = _net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.5, 0.9))
    for _ in range(3):
        _train_step(net, optimizer, torch.randn(16, 4))
    return net, optimizer


def _save(run_dir, step, net=None, optimizer=None):
    net = net or _net()
    optimizers = {"main": optimizer.state_dict()} if optimizer else {}
    return save_checkpoint(run_dir, Checkpoint(step=step, model={f"net.{k}": v for k, v in net.state_dict().items()},
                                               optimizers=optimizers, rng=rng_state(), extra={"note": step}))


def test_round_trip_of_weights_adam_state_and_rng(tmp_path):
    net, optimizer = _trained()
    folder = _save(tmp_path, 3, net, optimizer)
    after_save = torch.randn(5)  # what the RNG draws next, after the saved state

    ckpt = load_checkpoint(folder)
    assert ckpt.step == 3 and ckpt.extra["note"] == 3
    torch.manual_seed(123)  # scramble, then restore
    net2 = _net()
    net2.load_state_dict({k.removeprefix("net."): v for k, v in ckpt.model.items()})
    optimizer2 = torch.optim.Adam(net2.parameters(), lr=1.0)
    optimizer2.load_state_dict(ckpt.optimizers["main"])
    set_rng_state(ckpt.rng)
    assert torch.equal(torch.randn(5), after_save)

    for (name, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        assert torch.equal(a, b), name
    assert optimizer2.param_groups[0]["lr"] == 1e-2 and tuple(optimizer2.param_groups[0]["betas"]) == (0.5, 0.9)
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            assert torch.equal(optimizer2.state_dict()["state"][index][key], value), (index, key)

    # Both continue identically: the moments and step counts really came back.
    x = torch.randn(16, 4)
    _train_step(net, optimizer, x)
    _train_step(net2, optimizer2, x)
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)


def test_files_are_safetensors_and_json_only(tmp_path):
    net, optimizer = _trained()
    folder = _save(tmp_path, 1, net, optimizer)
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optim.safetensors", "rng.safetensors",
                                                         "state.json"]
    state = json.loads((folder / "state.json").read_text())
    assert state["step"] == 1 and state["format"] == 1
    assert set(load_file(folder / "model.safetensors")) == {f"net.{k}" for k in net.state_dict()}


def test_loading_never_unpickles(tmp_path, monkeypatch):
    net, optimizer = _trained()
    folder = _save(tmp_path, 1, net, optimizer)

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint load must not unpickle")

    for target, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(target, name, forbidden)
    ckpt = load_checkpoint(latest_checkpoint(tmp_path))
    assert ckpt.step == 1 and ckpt.optimizers["main"]["state"]


def test_latest_points_to_newest_and_only_two_are_kept(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step)
    root = tmp_path / "checkpoints"
    assert os.readlink(root / "latest") == "step-0000003"
    assert latest_checkpoint(tmp_path) == (root / "step-0000003").resolve()
    assert [p.name for p in complete_checkpoints(root)] == ["step-0000002", "step-0000003"]
    assert not list(root.glob(".tmp-*")) and not (root / ".latest-tmp").exists()
    assert load_checkpoint(latest_checkpoint(tmp_path)).step == 3


def test_resaving_the_same_step_replaces_it(tmp_path):
    _save(tmp_path, 4)
    _save(tmp_path, 4)
    assert [p.name for p in complete_checkpoints(tmp_path / "checkpoints")] == ["step-0000004"]
    assert load_checkpoint(latest_checkpoint(tmp_path)).step == 4


def test_crash_leftovers_are_ignored(tmp_path):
    _save(tmp_path, 1)
    _save(tmp_path, 2)
    root = tmp_path / "checkpoints"
    tmp = root / ".tmp-step-0000003"  # killed while writing step 3
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"half")
    (tmp / "state.json").write_text('{"step": 3}')
    half = root / "step-0000004"  # a step folder without state.json
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"half")
    assert latest_checkpoint(tmp_path) == (root / "step-0000002").resolve()

    # latest dangling (killed while a re-save of its step had moved it aside): the newest complete one wins.
    (root / "latest").unlink()
    os.symlink("step-0000009", root / "latest")
    assert latest_checkpoint(tmp_path) == root / "step-0000002"
    # latest aimed at an incomplete folder: genforge never writes that, so it is damage, named with what to do.
    (root / "latest").unlink()
    os.symlink("step-0000004", root / "latest")
    with pytest.raises(GenforgeError, match="step-0000004: incomplete checkpoint, missing optim.safetensors, though "
                                            "latest points to it; the previous complete checkpoint is step-0000002: "
                                            "genforge train --resume .* --from step-0000002 continues"):
        latest_checkpoint(tmp_path)

    # The next save cleans the old temporary folder of its own step and prunes as usual.
    _save(tmp_path, 3)
    assert not tmp.exists()
    assert latest_checkpoint(tmp_path) == (root / "step-0000003").resolve()


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(GenforgeError, match="no complete checkpoint.*train first"):
        latest_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"recipe": "ring-8"}')  # a run whose checkpoints are gone
    with pytest.raises(GenforgeError, match=r"nothing to resume or load; train it anew into another folder "
                                            r"\(genforge train ring-8 --run-dir NEW_DIR\), or remove "):
        latest_checkpoint(tmp_path)
    (tmp_path / "checkpoints" / ".tmp-step-0000001").mkdir(parents=True)
    with pytest.raises(GenforgeError, match="no complete checkpoint"):
        latest_checkpoint(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_model_file_is_a_genforge_error(tmp_path, damage):
    folder = _save(tmp_path, 1, *_trained())
    path = folder / "model.safetensors"
    blob = path.read_bytes()
    path.write_bytes({"garbage": b"\xff" * 64 + blob[64:], "truncated": blob[: len(blob) // 2], "empty": b""}[damage])
    with pytest.raises(GenforgeError, match=f"{folder}: unreadable checkpoint"):
        load_checkpoint(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("weights_only", [False, True])
def test_weights_holding_nan_or_infinity_are_refused_at_load(tmp_path, bad, weights_only):
    # sampled, they drew blank pictures with exit 0; resumed, the run failed at its first step and was
    # told to resume from this same checkpoint
    from safetensors.torch import save_file

    folder = _save(tmp_path, 1, *_trained())
    weights = load_file(folder / "model.safetensors")
    key = sorted(weights)[0]
    weights[key] = weights[key].clone()
    weights[key].view(-1)[0] = bad
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(GenforgeError, match=f"model.safetensors: '{key}' holds NaN or infinite values"):
        load_checkpoint(folder, weights_only=weights_only)


def test_a_damaged_checkpoint_never_points_to_an_earlier_one_that_is_damaged_too(tmp_path):
    first = _save(tmp_path, 1, *_trained())
    folder = _save(tmp_path, 2, *_trained())
    for damaged in (first, folder):
        (damaged / "state.json").write_text("{torn")
    with pytest.raises(GenforgeError, match="unreadable checkpoint.*no earlier checkpoint is left; ") as refused:
        load_checkpoint(folder)
    assert "--from" not in str(refused.value)


def test_corrupt_state_json_and_missing_file(tmp_path):
    _save(tmp_path, 1, *_trained())
    folder = _save(tmp_path, 2, *_trained())
    (folder / "state.json").write_text("{torn")
    with pytest.raises(GenforgeError, match="unreadable checkpoint.*the previous complete checkpoint is "
                                            "step-0000001: genforge train --resume .* --from step-0000001"):
        load_checkpoint(folder)
    (folder / "optim.safetensors").unlink()
    with pytest.raises(GenforgeError, match="incomplete checkpoint, missing optim.safetensors"):
        load_checkpoint(folder)


def test_weights_only_load_skips_optimizer_files(tmp_path):
    folder = _save(tmp_path, 2, *_trained())
    (folder / "optim.safetensors").unlink()
    (folder / "rng.safetensors").unlink()
    ckpt = load_checkpoint(folder, weights_only=True)
    assert ckpt.step == 2 and ckpt.model and not ckpt.optimizers


# --- SIGKILL in the middle of training -------------------------------------------------

_CHILD = """
import sys
from genforge.config import load_recipe
from genforge.train import train
train(load_recipe("mnist-dcgan", sys.argv[2:]), sys.argv[1], progress=False)
"""


def test_sigkill_mid_training_then_resume(tmp_path):
    from genforge.api import resume_config
    from genforge.train import train

    run_dir = tmp_path / "run"
    overrides = tiny_overrides("mnist-dcgan", "train.checkpoint_every=1", "train.log_every=1", "train.steps=100000")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(run_dir), *overrides],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = run_dir / "checkpoints" / "latest"
    try:
        deadline = time.monotonic() + 60
        while not latest.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        time.sleep(0.3)  # let it get well into the following checkpoints
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL

    saved = load_checkpoint(latest_checkpoint(run_dir)).step
    assert saved >= 1
    cfg = resume_config(run_dir, steps=saved + 2)
    result = train(cfg, run_dir, resume=True, progress=False)
    assert result.step == saved + 2 and not result.interrupted
    assert load_checkpoint(latest_checkpoint(run_dir)).step == saved + 2
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if "images_per_s" in row]  # the loss rows (checkpoint metrics have their own)
    assert steps == sorted(steps) and steps[-1] == saved + 2  # rows of the killed run past the checkpoint were dropped
    assert len(steps) == len(set(steps))


def test_resume_config_needs_a_run_directory(tmp_path):
    from genforge.api import resume_config

    with pytest.raises(GenforgeError, match="not a genforge run folder"):
        resume_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(tiny_config("mnist-vae").to_dict()))
    with pytest.raises(GenforgeError, match="no complete checkpoint"):
        resume_config(tmp_path)
