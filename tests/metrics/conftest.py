"""Shared fixtures of the metric tests: a private feature cache, the MNIST extractor, real digits."""

from __future__ import annotations

import pytest
import torch

from genforge.data.datasets import load_images


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Reference features and floors go to a per-session folder, never the user's cache."""
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "eval-cache"))
    monkeypatch.setattr("genforge.metrics.evaluate.KID_SUBSETS", 10)  # 100 in real use; the estimator is the same
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def extractor():
    from genforge.metrics.extractor import load_extractor

    return load_extractor("mnist")


@pytest.fixture(scope="session")
def digits():
    """(train, test) splits of the bundled mnist-10k."""
    return load_images("mnist-10k", "train"), load_images("mnist-10k", "test")


def tiny_run(folder, recipe: str, *overrides: str):
    from genforge.config import load_recipe
    from genforge.train import train

    cfg = load_recipe(recipe, ["train.steps=3", "train.batch_size=16", "train.log_every=1", "train.sample_every=100",
                               "train.checkpoint_every=100", "train.eval_samples=2", *overrides])
    train(cfg, folder, progress=False)
    return folder


@pytest.fixture(scope="session")
def tiny_gan_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("gan") / "run", "mnist-dcgan", "model.width=8")


@pytest.fixture(scope="session")
def tiny_vae_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("vae") / "run", "mnist-vae", "model.hidden=32")
