"""The R5 recipes (pokemon-wgan, pokemon-wgan-gp, pokemon-dcgan) and the DCGAN ``kernel`` option."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genforge.cli import main
from genforge.config import load_recipe
from genforge.errors import GenforgeError
from genforge.models import build_model
from genforge.models.gan import GAN, GANConfig, stride2_padding

from ..conftest import synthetic_folder, train_on_folder

RECIPES = ("pokemon-wgan", "pokemon-wgan-gp", "pokemon-dcgan")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def convs(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


# --- the kernel option -------------------------------------------------------------------

def test_stride2_padding_halves_and_doubles_exactly():
    assert stride2_padding(4) == (1, 0) and stride2_padding(5) == (2, 1) and stride2_padding(3) == (1, 1)


@pytest.mark.parametrize("kernel", [3, 4, 5, 6, 7])
@pytest.mark.parametrize("size, channels", [(28, 1), (32, 1), (64, 3), (128, 3)])
def test_every_kernel_gives_the_image_size_at_any_depth(kernel, size, channels):
    torch.manual_seed(0)
    model = GAN(GANConfig(width=4, latent_dim=8, kernel=kernel), (channels, size, size), 0)
    images = model.generate(model.sample_noise(2))
    assert images.shape == (2, channels, size, size)
    assert model.discriminator(images * 2 - 1).shape == (2,)
    for conv in convs(model, nn.ConvTranspose2d) + convs(model, nn.Conv2d):
        assert conv.kernel_size == (kernel, kernel) and conv.stride == (2, 2)


def test_kernel_5_is_the_tensorflow_layer_and_depth_follows_the_size():
    for size, ups in ((64, 4), (128, 5)):
        model = GAN(GANConfig(width=4, kernel=5), (3, size, size), 0)
        transposed = convs(model.generator, nn.ConvTranspose2d)
        assert len(transposed) == ups  # 4 -> 8 -> ... -> size
        assert all((t.padding, t.output_padding) == ((2, 2), (1, 1)) for t in transposed)
        assert all(c.padding == (2, 2) for c in convs(model.discriminator, nn.Conv2d))


def test_default_kernel_keeps_the_radford_network():
    model = GAN(GANConfig(width=8), (1, 28, 28), 10)
    assert {c.kernel_size for c in convs(model, nn.ConvTranspose2d) + convs(model, nn.Conv2d)} == {(4, 4)}
    assert {c.padding for c in convs(model, nn.Conv2d)} == {(1, 1)}


def test_bad_kernel_is_a_config_error():
    with pytest.raises(GenforgeError, match="model.kernel must be 3 to 7, not 9"):
        GAN(GANConfig(kernel=9), (3, 64, 64), 0)


# --- the recipes ------------------------------------------------------------------------

def test_recipes_are_listed(capsys):
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out
    for name in RECIPES:
        assert f"\n{name} " in "\n" + listed


@pytest.mark.parametrize("name", RECIPES)
def test_common_settings(name):
    cfg = load_recipe(name)
    assert cfg.family == "gan" and cfg.model.arch == "dcgan" and cfg.model.kernel == 5
    assert (cfg.model.latent_dim, cfg.model.noise) == (100, "uniform")
    assert (cfg.data.dataset, cfg.data.image_size, cfg.data.channels, cfg.data.background) == ("pokemon", 64, 3, "black")
    assert (cfg.data.flip, cfg.data.brightness, cfg.data.contrast) == (True, 0.1, 0.1)
    assert cfg.train.batch_size == 64


def test_wgan_is_the_original():
    cfg = load_recipe("pokemon-wgan")
    assert (cfg.model.loss, cfg.model.clip, cfg.model.d_steps) == ("wasserstein", 0.01, 5)
    assert (cfg.optim.name, cfg.optim.lr) == ("rmsprop", 2e-4)
    model = build_model(cfg, (3, 64, 64), 0)
    assert convs(model.discriminator, nn.BatchNorm2d)  # the original's critic keeps batch norm
    assert isinstance(model.discriminator.main[-1], nn.Linear)  # no sigmoid: a critic, not a classifier
    assert model.phases()[0].repeats == 5 and model.phases()[0].after is not None  # clipping after each step


def test_wgan_gp_is_gulrajani_with_one_critic_step():
    cfg = load_recipe("pokemon-wgan-gp")
    assert (cfg.model.loss, cfg.model.gp_weight, cfg.model.d_steps) == ("wgan-gp", 10.0, 1)
    assert (cfg.optim.lr, cfg.train.ema_decay) == (2e-4, 0.999)
    assert (cfg.optim.name, cfg.optim.beta1, cfg.optim.beta2) == ("adam", 0.0, 0.9)
    model = build_model(cfg, (3, 64, 64), 0)
    assert not convs(model.discriminator, nn.BatchNorm2d)  # no batch norm in the critic
    assert convs(model.discriminator, nn.GroupNorm)  # layer norm instead


def test_dcgan_variant():
    cfg = load_recipe("pokemon-dcgan")
    assert (cfg.model.loss, cfg.model.d_steps, cfg.optim.name, cfg.optim.lr, cfg.optim.beta1) == \
        ("nonsaturating", 1, "adam", 2e-4, 0.5)


def test_r5_channel_counts():
    """At 128 px, width 32 is R5's generator (FC to 4x4x512, then 256, 128, 64, 32, 3); at 64 px,
    width 64 is R5's critic (64, 128, 256, 512)."""
    g = build_model(load_recipe("pokemon-wgan", ["data.image_size=128"]), (3, 128, 128), 0).generator
    assert g.project[0].out_features == 4 * 4 * 512
    assert [t.out_channels for t in convs(g, nn.ConvTranspose2d)] == [256, 128, 64, 32, 3]
    d = build_model(load_recipe("pokemon-wgan", ["model.width=64"]), (3, 64, 64), 0).discriminator
    assert [c.out_channels for c in convs(d, nn.Conv2d)] == [64, 128, 256, 512]


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_trains_on_a_folder(name, tmp_path, private_cache):
    images = synthetic_folder(tmp_path / "images", count=20)
    cfg = load_recipe(name, [f"data.path={images}", "data.image_size=32", "model.width=4", "model.latent_dim=8",
                             "train.steps=2", "train.batch_size=8", "train.threads=1", "train.device=cpu",
                             "train.log_every=1", "train.sample_every=100", "train.checkpoint_every=100"])
    result = train_on_folder(cfg, tmp_path / "run")
    assert result.step == 2 and not result.interrupted
    assert (tmp_path / "run" / "samples" / "final.png").is_file()
    state = (tmp_path / "run" / "checkpoints" / "latest" / "model.safetensors")
    assert state.is_file()
    if name == "pokemon-wgan":
        from safetensors.torch import load_file

        critic = [v for k, v in load_file(str(state)).items() if k.startswith("discriminator.") and "weight" in k]
        assert max(float(v.abs().max()) for v in critic) <= 0.01 + 1e-7  # clipped after every critic step
