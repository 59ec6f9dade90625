"""Watching an image run learn: samples/progress.gif from the fixed-noise grids the loop saved, and
mode collapse shown by default on MNIST (the class histogram, plotted, with a one-line warning)."""

from __future__ import annotations

import pytest
from PIL import Image

from genforge.config import load_recipe
from genforge.train import train
from genforge.viz import class_collapse

from .conftest import tiny_config


def test_an_image_run_writes_samples_progress_gif(tmp_path):
    train(tiny_config("mnist-dcgan", "train.sample_every=2", "train.steps=5"), tmp_path, progress=False)
    gif = Image.open(tmp_path / "samples" / "progress.gif")
    assert gif.n_frames == 3  # steps 2 and 4, then the final grid of step 5
    first = Image.open(tmp_path / "samples" / "step-0000002.png")
    assert gif.size == first.size
    assert not list((tmp_path / "samples").glob(".*"))  # written whole (atomic_output): no temporary left


def test_a_run_without_step_grids_still_animates_its_final_grid(tmp_path):
    train(tiny_config("mnist-vae", "train.steps=2"), tmp_path, progress=False)
    assert Image.open(tmp_path / "samples" / "progress.gif").n_frames == 1


def test_a_long_runs_gif_takes_evenly_spaced_frames(tmp_path):
    from genforge.viz import progress_frames

    samples = tmp_path / "samples"
    samples.mkdir()
    for step in range(1, 251):
        (samples / f"step-{step:07d}.png").write_bytes(b"")
    (samples / "final.png").write_bytes(b"")
    frames = progress_frames(tmp_path, most=10)
    assert len(frames) == 10 and frames[0].name == "step-0000001.png" and frames[-1].name == "final.png"
    assert frames == sorted(frames[:-1]) + [frames[-1]] and len(set(frames)) == 10
    assert len(progress_frames(tmp_path)) == 100 and len(progress_frames(tmp_path, most=500)) == 251


def test_the_class_histogram_is_on_by_default_for_mnist_gans():
    assert load_recipe("mnist-dcgan").model.class_histogram


def test_the_histogram_is_plotted_over_the_checkpoints(tmp_path, capsys):
    cfg = tiny_config("mnist-dcgan", "train.checkpoint_every=1", "train.steps=2")
    train(cfg, tmp_path, progress=False)
    assert (tmp_path / "plots" / "class_histogram.png").is_file()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "mode collapse" in line]
    assert len(warnings) <= 1 and all(line.startswith("genforge: warning: mode collapse at step 2") for line in warnings)


@pytest.mark.parametrize("shares, expected", [
    ([0.1] * 10, None),
    ([0.5, *[0.5 / 9] * 9], None),  # half is not more than half
    ([0.6, *[0.4 / 9] * 9], "mode collapse at step 7: class 0 takes 60% of the samples"),
    ([0.0, 0.2, 0.0, *[0.8 / 7] * 7], "mode collapse at step 7: classes 0, 2 vanished (no sample)"),
    ([0.0, 0.91, *[0.09 / 8] * 8], "mode collapse at step 7: class 1 takes 91% of the samples and class 0 vanished"),
])
def test_the_collapse_warning(shares, expected):
    warning = class_collapse(shares, 7)
    if expected is None:
        assert warning is None
    else:
        assert warning.startswith(expected) and "\n" not in warning
