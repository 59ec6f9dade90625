"""The talks' missing pieces: U(0, 1) and resampled truncated-normal noise, optim.lr_d / optim.lr_g
reaching their optimiser groups (and the decayed schedules keeping them apart), and a training
step of the mnist-dcgan-livestream and duck-cow-2d recipes."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.config import load_recipe, validate
from genforge.data.datasets import load_images
from genforge.errors import GenforgeError
from genforge.models import build_model
from genforge.models.gan import draw_noise
from genforge.train import make_optimizers, set_learning_rate, train

FAST = ["train.threads=1", "train.device=cpu", "train.log_every=1", "train.sample_every=1000",
        "train.checkpoint_every=1000", "train.steps=2"]


def test_uniform01_lies_between_zero_and_one():
    z = draw_noise("uniform01", (20_000,), torch.Generator().manual_seed(0), "cpu")
    assert 0 <= z.min() < 0.01 and 0.99 < z.max() < 1
    assert z.mean().item() == pytest.approx(0.5, abs=0.01) and z.std().item() == pytest.approx(1 / math.sqrt(12), rel=0.03)
    old = draw_noise("uniform", (20_000,), torch.Generator().manual_seed(0), "cpu")
    assert old.min() < -0.99 and old.max() > 0.99  # uniform stays U(-1, 1)


def test_truncated_noise_is_resampled_within_two_std_not_clamped():
    z = draw_noise("truncated", (200_000,), torch.Generator().manual_seed(0), "cpu")
    assert z.abs().max() <= 2.0 and z.dtype == torch.float32
    # N(0, 1) given |z| <= 2: std 0.880, and no pile of values at the bounds (clamping puts 4.6% there)
    assert z.std().item() == pytest.approx(0.8796, rel=0.01) and z.mean().abs() < 0.01
    assert (z.abs() > 1.99).float().mean() < 0.002
    clamped = draw_noise("truncated_clamp", (200_000,), torch.Generator().manual_seed(0), "cpu")
    assert clamped.abs().max() == 2.0 and (clamped.abs() == 2.0).float().mean().item() == pytest.approx(0.0455, rel=0.1)
    # the share of |z| in (1, 2] matches the truncated normal's: (Phi(2) - Phi(1)) / (Phi(2) - 0.5)
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    assert (z.abs() > 1).float().mean().item() == pytest.approx((phi(2) - phi(1)) / (phi(2) - 0.5), abs=0.005)


def test_a_gan_draws_its_configured_noise():
    model = build_model(load_recipe("duck-cow-2d", [*FAST, "model.noise=uniform01"]), (2,), 2)
    z = model.sample_noise(1000, torch.Generator().manual_seed(0))
    assert z.shape == (1000, 100) and z.min() >= 0 and z.max() < 1
    recipe = build_model(load_recipe("duck-cow-2d", FAST), (2,), 2).sample_noise(1000, torch.Generator().manual_seed(0))
    assert recipe.min() < -0.9 and recipe.max() > 0.9  # the recipe's U(-1, 1)


def _optimizers(recipe: str, *overrides: str):
    cfg = load_recipe(recipe, [*FAST, *overrides])
    shape = (2,) if recipe.startswith("duck") else (1, 28, 28)
    model = build_model(cfg, shape, 2 if recipe.startswith("duck") else 10)
    return cfg, model, make_optimizers(model, cfg.optim)


def test_lr_d_and_lr_g_reach_their_groups_and_default_to_lr():
    _, model, optimizers = _optimizers("duck-cow-2d", "optim.lr=1e-3", "optim.lr_d=4e-4", "optim.lr_g=1e-4")
    assert [g["lr"] for g in optimizers["discriminator"].param_groups] == [4e-4]
    assert [g["lr"] for g in optimizers["generator"].param_groups] == [1e-4]
    assert {id(p) for p in optimizers["generator"].param_groups[0]["params"]} == \
        {id(p) for p in model.generator.parameters()}
    _, _, plain = _optimizers("duck-cow-2d", "optim.lr=1e-3", "optim.lr_g=5e-4")
    assert plain["discriminator"].param_groups[0]["lr"] == 1e-3 and plain["generator"].param_groups[0]["lr"] == 5e-4


def test_a_decayed_schedule_scales_each_group_from_its_own_rate():
    cfg, _, optimizers = _optimizers("duck-cow-2d", "optim.lr=1e-3", "optim.lr_d=4e-4", "optim.schedule=linear")
    set_learning_rate(optimizers, cfg.optim, 0.5)
    assert optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(2e-4)
    assert optimizers["generator"].param_groups[0]["lr"] == pytest.approx(5e-4)


def test_a_translator_and_a_vae_get_their_rates():
    cfg = load_recipe("gmm-discogan", ["optim.lr_d=3e-4", "optim.lr_g=1e-4", "model.hidden=8"])
    optimizers = make_optimizers(build_model(cfg, (2,), 5), cfg.optim)
    assert optimizers["discriminator"].param_groups[0]["lr"] == 3e-4
    assert optimizers["generator"].param_groups[0]["lr"] == 1e-4
    vae = load_recipe("mnist-vae", ["optim.lr_d=5e-1", "optim.lr_g=5e-1", "model.hidden=8"])
    (only,) = make_optimizers(build_model(vae, (1, 28, 28), 10), vae.optim).values()
    assert only.param_groups[0]["lr"] == vae.optim.lr  # no D or G in a VAE: optim.lr


@pytest.mark.parametrize("key", ["optim.lr_d", "optim.lr_g"])
def test_negative_rates_are_refused_in_one_line_naming_the_key(key):
    with pytest.raises(GenforgeError, match=rf"{key}=-0.1: must be >= 0") as caught:
        validate(load_recipe("mnist-dcgan", [f"{key}=-0.1"]))
    assert "\n" not in str(caught.value)


def test_livestream_recipe_is_the_livestreams_settings():
    cfg = load_recipe("mnist-dcgan-livestream")
    assert (cfg.model.arch, cfg.model.noise, cfg.model.schedule, cfg.train.batch_size) == \
        ("livestream", "truncated", "threshold", 50)
    assert (cfg.optim.lr_d, cfg.optim.lr_g) == (3e-4, 1e-4)


def test_livestream_recipe_trains_two_steps_with_its_rates(tmp_path):
    cfg = load_recipe("mnist-dcgan-livestream", [*FAST, "train.batch_size=8"])
    result = train(cfg, tmp_path, progress=False)
    assert result.step == 2 and (tmp_path / "samples" / "final.png").is_file()


def test_duck_cow_2d_is_two_clusters_on_weight_and_size_and_trains(tmp_path):
    data = load_images("duck-cow-2d", "train")
    assert data.images.shape[1] == 2 and data.classes == ("duck", "cow")
    ducks, cows = data.images[data.labels == 0], data.images[data.labels == 1]
    assert (ducks.mean(0) < cows.mean(0)).all()  # cows weigh more and are bigger
    assert ((data.images > 0) & (data.images < 1)).all(1).float().mean() > 0.999  # on the 0..1 axes
    result = train(load_recipe("duck-cow-2d", [*FAST, "train.sample_every=1", "model.hidden=8"]), tmp_path,
                   progress=False)
    assert {"eval/modes", "eval/hq", "eval/reverse_kl"} <= set(result.metrics)
    assert (tmp_path / "plots" / "progress.gif").is_file() and (tmp_path / "plots" / "value.png").is_file()
