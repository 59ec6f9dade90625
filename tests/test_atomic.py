"""Every file genforge writes goes through the one atomic writer: a link planted at the target is
replaced, never written through, and no temporary file is left behind."""

from __future__ import annotations

import json

import pytest
import torch

from genforge import viz
from genforge.atomic import atomic_output, write_atomic, write_json_atomic
from genforge.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from genforge.latent import load_latents, save_latents
from genforge.runtime import MetricsLog

from .conftest import planted_link


def _plant(target, tmp_path):
    """A link at ``target`` to a file outside its folder; returns that file."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"keep")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside)
    return outside


def _grid(path):
    viz.save_grid_image(torch.rand(3, 8, 8), path)


def _plot(path):
    viz.plot_curves([{"step": 1, "g/loss": 1.0}, {"step": 2, "g/loss": 0.5}], ["g/loss"], path)


def _gif(path):
    frames = [viz.save_grid_image(torch.rand(3, 8, 8), path.parent / f"frame{i}.png") for i in range(2)]
    viz.save_gif(frames, path)


def _latents(path):
    save_latents(torch.randn(2, 4), path)


@pytest.mark.parametrize("write, name", [(_grid, "samples/final.png"), (_plot, "plots/losses.png"),
                                         (_gif, "plots/progress.gif"), (_latents, "z.safetensors"),
                                         (_latents, "z.npy")])
def test_pictures_and_latents_replace_a_planted_link(tmp_path, write, name):
    target = tmp_path / "run" / name
    outside = _plant(target, tmp_path)
    write(target)
    assert outside.read_bytes() == b"keep"
    assert target.is_file() and not target.is_symlink() and target.stat().st_size > 0
    assert not [p for p in target.parent.iterdir() if ".tmp" in p.name]
    if name.startswith("z."):
        assert load_latents(target).shape == (2, 4)


def test_the_metrics_rewrite_on_resume_replaces_a_planted_link(tmp_path):
    run = tmp_path / "run"
    outside = _plant(run / "metrics.jsonl", tmp_path)
    MetricsLog(run, resume_step=0).close()
    assert outside.read_bytes() == b"keep" and not (run / "metrics.jsonl").is_symlink()


def test_checkpoint_files_are_whole_and_leave_no_temporaries(tmp_path):
    ckpt = Checkpoint(step=3, model={"net.weight": torch.ones(2, 2)}, rng={"torch": torch.get_rng_state()},
                      extra={"data_order": {"epoch": 0, "position": 0}})
    folder = save_checkpoint(tmp_path, ckpt)
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optim.safetensors",
                                                        "rng.safetensors", "state.json"]
    assert torch.equal(load_checkpoint(folder).model["net.weight"], torch.ones(2, 2))
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"x": 1})
    write_json_atomic(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_link_at_the_target_is_replaced_not_written_through(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    outside = planted_link(run / "eval.json", tmp_path)
    write_atomic(run / "eval.json", "new")
    assert outside.read_text() == "keep"
    assert not (run / "eval.json").is_symlink() and (run / "eval.json").read_text() == "new"


def test_a_planted_temporary_link_is_refused_not_followed(tmp_path, monkeypatch):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    monkeypatch.setattr("os.getpid", lambda: 7)
    monkeypatch.setattr("secrets.token_hex", lambda n: "beef")
    (tmp_path / ".m.7-beef.tmp.json").symlink_to(outside)  # the temporary name it will use
    with pytest.raises(FileExistsError):
        write_atomic(tmp_path / "m.json", b"{}")
    assert outside.read_text() == "keep"
    assert not (tmp_path / "m.json").exists()


def test_an_error_midway_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "grid.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    with atomic_output(target) as tmp:
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
