"""Every file genforge writes goes through the one atomic writer: a link planted at the target is
replaced, never written through, and no temporary file is left behind."""

from __future__ import annotations

import pytest
import torch

from genforge import viz
from genforge.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from genforge.latent import load_latents, save_latents
from genforge.runtime import MetricsLog


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
