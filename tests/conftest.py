"""Shared fixtures: tiny configs that train in well under a second, and trained runs.

Every training run here uses the bundled ``mnist-10k`` digits, one CPU thread and
networks a few hundred times smaller than the recipes', so the whole suite stays fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genforge.config import RunConfig, load_recipe

torch.set_num_threads(1)  # tiny networks: one thread is fastest and deterministic

SHARED_DATASETS = (Path(__file__).resolve().parents[1] / "../shared/datasets").resolve()

_COMMON = ["train.batch_size=16", "train.threads=1", "train.device=cpu", "train.log_every=2",
           "train.sample_every=1000", "train.checkpoint_every=1000", "train.steps=4"]
TINY = {
    "mnist-vae": ["model.hidden=32", "model.latent_dim=4", "train.eval_samples=5", *_COMMON],
    "mnist-dcgan": ["model.width=8", "model.latent_dim=16", *_COMMON],
}


def tiny_overrides(recipe: str, *extra: str) -> list[str]:
    """The tiny ``key=value`` overrides of ``recipe``, then ``extra`` (which win)."""
    return [*TINY[recipe], *extra]


def tiny_config(recipe: str, *extra: str) -> RunConfig:
    return load_recipe(recipe, tiny_overrides(recipe, *extra))


@pytest.fixture
def isolated_data(tmp_path, monkeypatch) -> Path:
    """An empty data root: $GENFORGE_DATA -> tmp, no system roots, no cached datasets."""
    from genforge.data import datasets, root

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("GENFORGE_DATA", str(data))
    monkeypatch.setattr(root, "SYSTEM_ROOTS", ())
    datasets._load_cached.cache_clear()
    yield data
    datasets._load_cached.cache_clear()


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory) -> Path:
    """A finished 4-step tiny VAE run (with its final evaluation and plots)."""
    from genforge.train import train

    run_dir = tmp_path_factory.mktemp("vae-run")
    train(tiny_config("mnist-vae"), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def gan_run(tmp_path_factory) -> Path:
    """A finished 4-step tiny DCGAN run with EMA and a sample grid every 2 steps."""
    from genforge.train import train

    run_dir = tmp_path_factory.mktemp("gan-run")
    train(tiny_config("mnist-dcgan", "train.ema_decay=0.9", "train.sample_every=2"), run_dir, progress=False)
    return run_dir
