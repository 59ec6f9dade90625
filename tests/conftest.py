"""Shared fixtures: tiny configs that train in well under a second, and trained runs.

Every training run here uses the bundled ``mnist-10k`` digits, one CPU thread and
networks a few hundred times smaller than the recipes', so the whole suite stays fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genforge.config import RunConfig, load_recipe
from genforge.models.base import memory_format_of

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


def step_phases(model, optimizers: dict, batch) -> dict[str, torch.Tensor]:
    """One real training step (:func:`genforge.train.train_step`, what the loop runs) of every phase,
    each repeat on the same fixed ``batch``; checks every phase's loss is finite and returns the
    logged terms."""
    from genforge.train import train_step

    logged = train_step(model, optimizers, model.phases(), lambda: batch)
    for key, value in logged.items():
        if key.endswith("/loss"):
            assert torch.isfinite(value), key
    return logged


ACTIVATIONS = ("LeakyRelu", "Relu", "Threshold", "AvgPool2D")  # autograd nodes of activations and pooling


def activation_grad_layouts(loss: torch.Tensor) -> dict[str, list[bool]]:
    """Backpropagates ``loss`` and records, for every activation or pooling node of its graph, whether the
    gradient it receives and the tensor it saved share one memory layout (CPU kernels on mixed
    layouts run up to 30x slower)."""
    matched: dict[str, list[bool]] = {}
    seen, todo = set(), [loss.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo += [next_node for next_node, _ in node.next_functions]
        name = type(node).__name__
        if name.startswith(ACTIVATIONS):
            saved = getattr(node, "_saved_result", None)
            saved = getattr(node, "_saved_self", None) if saved is None else saved

            def check(grads, name=name, saved=saved):
                matched.setdefault(name, []).append(memory_format_of(grads[0]) == memory_format_of(saved))

            node.register_prehook(check)
    loss.backward()
    return matched


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


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    """Decoded image folders (and evaluation features) are cached under tmp, never the user's cache."""
    cache = tmp_path / "genforge-cache"
    monkeypatch.setenv("GENFORGE_CACHE", str(cache))
    return cache


def synthetic_folder(folder: Path, count: int = 24, seed: int = 0) -> Path:
    """``count`` small RGBA PNGs of random coloured rectangles on a transparent ground, in various
    sizes and aspect ratios (nothing copied from anywhere)."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        width, height = rng.randint(12, 40), rng.randint(12, 40)
        image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        x0, y0 = rng.randint(0, width // 2), rng.randint(0, height // 2)
        colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255), 255)
        ImageDraw.Draw(image).rectangle((x0, y0, rng.randint(x0, width - 1), rng.randint(y0, height - 1)), fill=colour)
        image.save(folder / f"{index + 1}.png")
    return folder


def train_on_folder(cfg: RunConfig, run_dir: Path):
    """Train ``cfg`` (an image-folder dataset) with the one loop, quietly."""
    from genforge.train import train

    return train(cfg, run_dir, progress=False)


def planted_link(link: Path, beside: Path) -> Path:
    """A file ``beside/outside.txt`` holding "keep", and a link to it planted at ``link`` (inside a run
    folder): what a crafted run folder does to make genforge write elsewhere. Returns the outside file."""
    outside = beside / "outside.txt"
    outside.write_text("keep")
    link.symlink_to(outside)
    return outside
