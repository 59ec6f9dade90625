"""Two processes on this CPU through torchrun: DDP keeps the ranks' weights identical, rank 0
alone writes the run, and a DDP run resumes bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from genforge.checkpoint import latest_checkpoint
from genforge.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.width=8", "model.latent_dim=16", "train.batch_size=16", "train.threads=1", "train.log_every=4",
        "train.checkpoint_every=8", "train.sample_every=8"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "genforge", "train", "--no-progress", *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # A grey layer's weights (channels-last and contiguous at once) get gradients with their strides.
    assert "Grad strides do not match" not in done.stderr
    return done


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_stay_in_sync_and_resume_bit_for_bit(tmp_path):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    done = torchrun("mnist-dcgan", "--steps", "16", "--run-dir", str(straight), *TINY)
    assert done.stderr.count("genforge: training mnist-dcgan") == 1  # rank 0 alone reports
    assert "2 processes on cpu" in done.stderr
    rows = _rows(straight)
    assert [row["ddp/ranks_in_sync"] for row in rows if "ddp/ranks_in_sync" in row] == [1.0, 1.0]
    assert [row["step"] for row in rows if "g/loss" in row] == [4, 8, 12, 16]
    assert (straight / "samples" / "final.png").is_file()

    torchrun("mnist-dcgan", "--steps", "8", "--run-dir", str(halves), *TINY)
    torchrun("--resume", str(halves), "--steps", "16")
    a = load_file(latest_checkpoint(straight) / "model.safetensors")
    b = load_file(latest_checkpoint(halves) / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rng = load_file(latest_checkpoint(halves) / "rng.safetensors")
    assert {"rank0.torch", "rank1.torch"} <= set(rng)  # each rank's own noise stream is saved


def test_torchrun_without_a_run_dir_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "mnist-dcgan", "--steps", "2", *TINY]) == 2
    assert "under torchrun, name the run directory with --run-dir" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
