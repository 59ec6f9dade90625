"""The convolutional VAE for colour image folders (model.arch=conv): shapes, the discretised
logistic against known values, a train step against an eval step, bad combinations, the folder's
held-out test split and its bits/dim in eval.json, save/load."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genforge.config import load_recipe, validate
from genforge.data.datasets import held_out_files, load_data
from genforge.errors import GenforgeError
from genforge.models.vae import VAE, VAEConfig, bits_per_dim, discretized_logistic_nll, halvings

from ..conftest import step_phases, synthetic_folder

TINY = ["model.width=4", "model.latent_dim=4", "data.image_size=16", "train.batch_size=8", "train.threads=1",
        "train.device=cpu", "train.steps=2", "train.log_every=1", "train.sample_every=1", "train.checkpoint_every=100",
        "train.eval_samples=2"]


def _conv(side: int = 16, channels: int = 3, **kwargs) -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(arch="conv", latent_dim=4, width=4, **kwargs), (channels, side, side), 0)


def _pixels(n: int = 6, side: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.mark.parametrize("side", [8, 16, 28, 64])
def test_shapes(side):
    model = _conv(side)
    x = model.prepare(_pixels(5, side))
    assert x.shape == (5, 3, side, side) and 0 <= x.min() and x.max() <= 1 and len(x.unique()) > 2  # not binarised
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 4)
    assert model.decode_logits(mu).shape == (5, 6, side, side)  # a centre and a log-scale per sub-pixel
    images = model.sample(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, 3, side, side) and images.min() >= 0 and images.max() <= 1
    assert model.walk(x[0], x[1], 5).shape == (5, 3, side, side)


def test_sizes_the_conv_networks_take():
    assert [halvings(s) for s in (8, 16, 28, 32, 64, 128)] == [1, 2, 2, 3, 4, 5]
    assert [halvings(s) for s in (4, 12, 24, 48, 100)] == [None] * 5


def test_the_256_levels_probabilities_sum_to_one():
    levels = torch.arange(256.0).view(1, 1, 1, 256) / 255  # every 8-bit value once
    for centre, log_scale in ((0.5, -2.0), (0.0, -5.0), (0.93, 1.0), (1.4, -7.0)):
        nll = discretized_logistic_nll(torch.full_like(levels, centre), torch.full_like(levels, log_scale), levels)
        per_level = discretized_logistic_nll(torch.full((256, 1), centre), torch.full((256, 1), log_scale),
                                             levels.view(256, 1))
        assert float(per_level.neg().exp().sum()) == pytest.approx(1.0, abs=1e-4)
        assert float(nll) == pytest.approx(float(per_level.sum()), rel=1e-5)


def test_the_sharpest_logistic_on_the_pixel_matches_its_closed_form_and_a_far_one_costs_a_lot():
    x = torch.tensor([[0.0, 100 / 255, 1.0]])
    sharp = discretized_logistic_nll(x, torch.full_like(x, -9.0), x)  # clamped to log-scale -7
    a = (0.5 / 255) * math.exp(7.0)  # half a bin in scales
    inner = -math.log(math.tanh(a / 2))  # sigmoid(a) - sigmoid(-a)
    edge = -math.log(1 / (1 + math.exp(-a)))  # the end bins reach to -inf / +inf
    assert float(sharp) == pytest.approx(inner + 2 * edge, rel=1e-4)
    far = discretized_logistic_nll(1 - x, torch.full_like(x, -7.0), x)
    assert float(far) > 100


def test_bits_per_dim_of_the_uniform_model_is_8():
    assert bits_per_dim(3 * 64 * 64 * math.log(256), 3 * 64 * 64) == pytest.approx(8.0)
    model = _conv()
    assert model.bits_per_dim(3 * 16 * 16 * math.log(2)) == pytest.approx(1.0)


def test_a_train_step_changes_the_weights_and_an_eval_step_does_not():
    from genforge.train import make_optimizers

    model = _conv()
    optimizers = make_optimizers(model, load_recipe("pokemon-vae").optim)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = model.prepare(_pixels(8))
    model.eval()
    model.test_elbo(x)
    model.importance_nll(x, k=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()
    from genforge.models.base import Batch

    logged = step_phases(model, optimizers, Batch(x, torch.zeros(8, dtype=torch.long)))
    assert set(logged) == {"vae/loss", "vae/recon", "vae/kl"}
    changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder.") for k in changed)


def test_the_loss_is_float32_under_bf16_autocast():
    model = _conv()
    with torch.autocast("cpu", torch.bfloat16):
        terms = model.loss_terms(model.prepare(_pixels(4)))
    assert terms["loss"].dtype == torch.float32 and torch.isfinite(terms["loss"])


def test_bad_combinations_are_one_line_errors():
    with pytest.raises(GenforgeError, match="4 or 7 times a power of two"):
        validate(load_recipe("pokemon-vae", ["data.image_size=24"]))
    with pytest.raises(GenforgeError, match="Bernoulli likelihood .* colour"):
        validate(load_recipe("pokemon-vae", ["model.likelihood=bernoulli"]), (3, 64, 64), 0)
    with pytest.raises(GenforgeError, match="Bernoulli likelihood .* colour"):
        validate(load_recipe("pokemon-vae", ["model.arch=mlp", "model.likelihood=auto"]), (3, 64, 64), 0)
    with pytest.raises(GenforgeError, match="encodes images"):
        validate(load_recipe("mnist-vae"), (2,), 8)
    with pytest.raises(GenforgeError, match=r"data.test_share=1.0: must be in \[0, 1\)"):
        validate(load_recipe("pokemon-vae", ["data.test_share=1"]))
    validate(load_recipe("mnist-vae"), (1, 28, 28), 10)  # grey MNIST with a Bernoulli is the livestream's VAE
    validate(load_recipe("mnist-vae", ["model.arch=conv"]), (1, 28, 28), 10)


def test_held_out_files_depend_on_each_name_only():
    files = tuple(f"{k}.png" for k in range(1, 201))
    test = held_out_files(files, 0.1)
    assert 5 < len(test) < 40 and test <= set(files)
    assert held_out_files(tuple(reversed(files)), 0.1) == test
    assert held_out_files(files[:100], 0.1) == {name for name in test if name in files[:100]}
    assert held_out_files(files, 0.0) == set() and held_out_files(files[:1], 0.5) == set()
    assert len(held_out_files(files[:3], 0.0001)) == 1  # at least one test file
    assert len(held_out_files(files[:3], 0.9999)) == 2  # never every file


def test_the_folder_splits_into_disjoint_train_and_test(tmp_path):
    folder = synthetic_folder(tmp_path / "images", count=30)
    cfg = load_recipe("pokemon-vae", [f"data.path={folder}", *TINY])
    train, test = load_data(cfg.data, "train"), load_data(cfg.data, "test")
    assert len(train) + len(test) == 30 and len(test) >= 1
    assert not set(train.files) & set(test.files)
    whole = load_data(load_recipe("pokemon-vae", [f"data.path={folder}", "data.test_share=0", *TINY]).data, "test")
    assert len(whole) == 30


def train_tiny_conv_vae(base, count: int):
    """A 2-step tiny pokemon-vae run (16 px, sample grids at both steps) on ``count`` synthetic images,
    trained by the CLI into ``base``/run: (run, folder)."""
    from genforge.cli import main

    folder = synthetic_folder(base / "images", count=count)
    run = base / "run"
    assert main(["train", "pokemon-vae", "--run-dir", str(run), "--no-progress", f"data.path={folder}", *TINY]) == 0
    return run, folder


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    """A 2-step tiny pokemon-vae run on a synthetic folder, evaluated."""
    from genforge.cli import main

    run, _ = train_tiny_conv_vae(tmp_path_factory.mktemp("conv-vae"), 24)
    assert main(["eval", str(run), "--json", "--n", "16", "--nll-samples", "3", "--device", "cpu"]) == 0
    return run


def test_a_run_reports_bits_per_dim_on_its_held_out_split(conv_run):
    result = json.loads((conv_run / "eval.json").read_text())
    assert 0 < result["test_bits_per_dim"] < 9 and result["test_nll_bits_per_dim"] <= result["test_bits_per_dim"] + 1e-3
    assert result["nll_importance_samples"] == 3 and result["test_images"] >= 1
    assert result["test_split"].startswith("held out") and "data.test_share=0.1" in result["test_split"]
    assert "bits_per_dim" in result["metrics_available"] and "likelihood" in result["metrics_unavailable"]
    assert "bits per sub-pixel" in result["units"]["test_bits_per_dim"]
    rows = [json.loads(line) for line in (conv_run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/test_bits_per_dim" in row for row in rows)  # training's end scored it too


def test_a_run_draws_reconstructions_samples_and_walks(conv_run):
    from PIL import Image

    for name in ("reconstructions.png", "prior_samples.png", "latent_walks.png", "elbo_curves.png"):
        assert (conv_run / "plots" / name).is_file(), name
    assert not (conv_run / "plots" / "latent_scatter.png").exists()  # a folder has no classes to colour by
    assert Image.open(conv_run / "plots" / "latent_walks.png").mode == "RGB"


def test_save_and_load_round_trip(conv_run):
    from genforge import api
    from genforge.checkpoint import latest_checkpoint, load_checkpoint

    loaded = api.load(conv_run, "cpu")
    saved = load_checkpoint(latest_checkpoint(conv_run), weights_only=True).model
    state = loaded.model.state_dict()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    assert loaded.capabilities.encoder and loaded.capabilities.likelihood
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    again = api.load(conv_run, "cpu")
    assert torch.equal(api.generate(loaded, z), api.generate(again, z))
