"""The GAN family's losses, norms, conditioning, toy networks and recipes (issue 4)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genforge.config import load_recipe
from genforge.errors import GenforgeError
from genforge.models.base import Batch
from genforge.models.gan import GAN, GANConfig

from ..conftest import step_phases

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LOSSES = ["nonsaturating", "minimax", "least_squares", "hinge", "wasserstein", "wgan-gp"]


def _gan(shape=(1, 28, 28), classes=10, **kwargs) -> GAN:
    torch.manual_seed(0)
    return GAN(GANConfig(**{"width": 8, "latent_dim": 16, **kwargs}), shape, classes)


def _batch(n=8, shape=(1, 28, 28)):
    return Batch(torch.rand(n, *shape) * 2 - 1, torch.arange(n) % 10)


def _run_phases(model, batch):
    """One update of every phase, as the training loop does; returns the logged terms."""
    return step_phases(model, {k: torch.optim.Adam(v, lr=1e-2) for k, v in model.optimizer_groups().items()}, batch)


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_both_networks(loss):
    model = _gan(loss=loss)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logged = _run_phases(model, _batch())
    assert all(torch.isfinite(v).all() for v in logged.values())
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(before[k], v)}
    assert changed == {"generator", "discriminator"}
    assert ("d/gp" in logged) == (loss == "wgan-gp") and ("d/wdist" in logged) == (loss in ("wasserstein", "wgan-gp"))
    assert ("d/value" in logged) == (loss in ("nonsaturating", "minimax"))


class Half(nn.Module):
    def forward(self, x):  # logit 0: D(x) = 1/2 everywhere
        return torch.zeros(x.shape[0])


def test_value_function_is_minus_log_4_when_d_says_one_half():
    model = _gan()
    model.discriminator = Half()
    terms = model.d_terms(torch.zeros(4, 1, 28, 28))
    assert terms["value"].item() == pytest.approx(-math.log(4))
    assert terms["d_real"].item() == terms["d_fake"].item() == 0.5


def test_wasserstein_clips_the_critic_after_each_step():
    model = _gan(loss="wasserstein", clip=0.01, d_steps=2)
    _run_phases(model, _batch())
    assert max(p.abs().max().item() for p in model.discriminator.parameters()) <= 0.01 + 1e-9
    assert _gan(loss="hinge").phases()[0].after is None


@pytest.mark.parametrize("norm, kind", [("auto", nn.GroupNorm), ("instance", nn.GroupNorm), ("none", None)])
def test_wgan_gp_critic_has_no_batch_norm(norm, kind):
    model = _gan(loss="wgan-gp", d_norm=norm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.discriminator.modules())
    if kind:
        assert any(isinstance(m, kind) for m in model.discriminator.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in _gan().discriminator.modules())  # DCGAN keeps BN


def test_r1_penalty_is_logged_when_on():
    assert "d/r1" in _run_phases(_gan(r1_gamma=1.0), _batch())


@pytest.mark.parametrize("conditional", ["concat", "projection"])
def test_conditional_shapes_and_labels(conditional):
    model = _gan(conditional=conditional)
    labels = torch.tensor([7, 0, 3])
    noise = model.sample_noise(3, labels=labels)
    assert noise.shape == (3, 16 + 10) and model.noise_labels(noise).tolist() == [7, 0, 3]
    assert model.generate(noise).shape == (3, 1, 28, 28)
    assert model.discriminator(torch.zeros(3, 1, 28, 28), labels).shape == (3,)
    assert model.sample_labels(labels).shape == (3, 1, 28, 28)
    assert model.class_grid(2).shape == (20, 1, 28, 28)
    assert model.fixed_inputs(None, 12, torch.Generator()).shape == (12, 26)
    logged = _run_phases(model, _batch())
    assert all(torch.isfinite(v).all() for v in logged.values())


def test_conditional_d_depends_on_the_label():
    model = _gan(conditional="projection")
    nn.init.normal_(model.discriminator.embed.weight)
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(model.discriminator(x, torch.tensor([0, 0])), model.discriminator(x, torch.tensor([1, 1])))


def test_unconditional_gan_refuses_a_class():
    with pytest.raises(GenforgeError, match="not conditional"):
        _gan().sample_labels(torch.tensor([1]))


@pytest.mark.parametrize("dim", [1, 2])
def test_mlp_on_points(dim):
    model = _gan(shape=(dim,), classes=2, arch="mlp", hidden=16, layers=2)
    assert model.generate(model.sample_noise(5)).shape == (5, dim)
    assert model.discriminator(torch.zeros(5, dim)).shape == (5,)
    assert model.prepare(torch.ones(3, dim)).dtype == torch.float32
    logged = _run_phases(model, Batch(torch.randn(8, dim), torch.zeros(8, dtype=torch.long)))
    assert all(torch.isfinite(v).all() for v in logged.values())


@pytest.mark.parametrize("shape, arch", [((2,), "mlp"), ((1, 28, 28), "dcgan")])
def test_packing_joins_m_samples_into_one_input_of_d(shape, arch):
    model = _gan(shape=shape, classes=2, arch=arch, hidden=16, layers=2, pack=4, loss="wgan-gp")
    x = torch.randn(8, *shape)
    packed = model._pack(x)
    assert packed.shape == (2, 4 * shape[0], *shape[1:])
    assert torch.equal(packed[1, shape[0]:2 * shape[0]], x[5])  # pack 1 holds samples 4..7 in order
    terms = model.d_terms(x)
    assert terms["loss_adv"].shape == () and torch.isfinite(terms["gp"])
    logged = _run_phases(model, Batch(x, torch.zeros(8, dtype=torch.long)))
    assert all(torch.isfinite(v).all() for v in logged.values())


def test_maxout_takes_the_largest_piece_per_unit():
    from genforge.models.gan import Maxout

    unit = Maxout(2, 1, 3)
    with torch.no_grad():
        unit.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        unit.linear.bias.zero_()
    x = torch.tensor([[2.0, 1.0], [-3.0, 0.5], [-1.0, -2.0]])
    assert torch.equal(unit(x), torch.tensor([[2.0], [2.5], [3.0]]))  # max(x, y, -x - y)


def test_pacgan_networks_batch_norm_g_and_maxout_d():
    model = _gan(shape=(2,), classes=2, arch="mlp", hidden=16, layers=2, g_norm="batch", maxout=5, pack=2)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.generator.modules()) == 2
    assert not any(isinstance(m, nn.LeakyReLU) for m in model.discriminator.modules())
    assert model.discriminator.main[0].linear.weight.shape == (16 * 5, 4)  # packed input of 2 x 2
    logged = _run_phases(model, Batch(torch.randn(8, 2), torch.zeros(8, dtype=torch.long)))
    assert all(torch.isfinite(v).all() for v in logged.values())
    with pytest.raises(GenforgeError, match="model.maxout"):
        _gan(shape=(2,), arch="mlp", maxout=0)


class _Scores(nn.Module):
    """A stand-in D whose logit is a fixed function of the point."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.offset = nn.Parameter(torch.zeros(()))  # so that the model has a parameter (and a device)

    def forward(self, x):
        return self.fn(x) + self.offset


def test_top_k_g_loss_learns_from_the_fakes_d_scores_most_real():
    from genforge import losses

    model = _gan(shape=(1,), classes=0, arch="mlp", latent_dim=1, top_k=0.5, top_k_until=0.5)
    model.generator = nn.Identity()
    model.sample_noise = lambda n, device=None, **_: torch.tensor([[-3.0], [2.0], [0.0], [5.0]])
    model.discriminator = _Scores(lambda x: x)
    assert torch.allclose(model.g_loss(4, "cpu"), losses.g_nonsaturating(torch.tensor([5.0, 2.0])))
    model.progress = 0.5  # top_k_until reached: every fake counts again
    assert torch.allclose(model.g_loss(4, "cpu"), losses.g_nonsaturating(torch.tensor([-3.0, 2.0, 0.0, 5.0])))


def test_the_loop_tells_the_model_how_far_training_is(monkeypatch, tmp_path):
    from genforge.train import train

    seen = []
    original = GAN.g_loss

    def spy(self, n, device, fakes=None):
        seen.append(self.progress)
        return original(self, n, device, fakes)

    monkeypatch.setattr(GAN, "g_loss", spy)
    train(load_recipe("ring-8", [*TINY_TOY, "train.steps=4", "train.checkpoint_every=4"]), tmp_path, progress=False)
    assert seen == [0.0, 0.25, 0.5, 0.75]


def test_rejection_sampling_turns_g_into_the_density_d_points_at():
    """G = N(0, 1); an optimal D for data N(1, 1) has logit log p_data/p_G = x - 1/2: the kept samples are N(1, 1)."""
    model = _gan(shape=(1,), classes=0, arch="mlp", latent_dim=1, reject=0.999)
    model.generator = nn.Identity()
    model.discriminator = _Scores(lambda x: x - 0.5)
    kept = model.sample(4000, torch.Generator().manual_seed(0))
    assert kept.shape == (4000, 1)
    assert abs(kept.mean().item() - 1.0) < 0.1 and abs(kept.std().item() - 1.0) < 0.1
    assert torch.equal(kept, model.sample(4000, torch.Generator().manual_seed(0)))  # seeded: the same samples
    plain = model.sample(4000, torch.Generator().manual_seed(0), reject=0.0)  # the quantile is a parameter
    assert abs(plain.mean().item()) < 0.1  # G's own N(0, 1)
    assert model.cfg.reject == 0.999  # sampling never rewrites the config
    model.cfg.reject = 0.0
    asked = model.sample(4000, torch.Generator().manual_seed(0), reject=0.999)
    assert torch.equal(asked, kept)  # reject=q is model.reject=q
    with pytest.raises(GenforgeError, match="quantile in"):
        model.sample(10, reject=1.5)


def test_rejection_sampling_on_images_gives_images_in_unit_range():
    model = _gan(reject=0.9)
    images = model.sample(30, torch.Generator().manual_seed(0), batch_size=1000)
    assert images.shape == (30, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_top_k_and_rejection_errors_say_what_to_change():
    with pytest.raises(GenforgeError, match="model.top_k must be in"):
        _gan(top_k=0.0)
    with pytest.raises(GenforgeError, match="top_k_until in"):
        _gan(top_k_until=1.5)
    with pytest.raises(GenforgeError, match="quantile in"):
        _gan(reject=1.0)
    for bad in ({"loss": "wgan-gp"}, {"pack": 2}, {"conditional": "concat"}):
        with pytest.raises(GenforgeError, match="model.reject reads D's logit"):
            _gan(reject=0.9, **bad)


def test_packing_errors_say_what_to_change():
    with pytest.raises(GenforgeError, match="batch_size to a multiple of 4"):
        _gan(shape=(2,), classes=2, arch="mlp", pack=4).d_terms(torch.randn(6, 2))
    with pytest.raises(GenforgeError, match="model.pack=2"):
        _gan(pack=2, conditional="concat")
    with pytest.raises(GenforgeError, match="model.pack=0"):
        _gan(shape=(2,), arch="mlp", pack=0)


def test_mlp_and_points_go_together():
    with pytest.raises(GenforgeError, match="arch=mlp"):
        _gan(shape=(2,), arch="dcgan")
    with pytest.raises(GenforgeError, match="arch=mlp"):
        _gan(arch="mlp")


# --- every new recipe trains two steps -------------------------------------------------

TINY_TOY = ["model.hidden=16", "model.layers=2", "model.latent_dim=8", "train.batch_size=32", "train.threads=1",
            "train.device=cpu", "train.steps=2", "train.log_every=1", "train.sample_every=1",
            "train.checkpoint_every=2"]


@pytest.mark.parametrize("recipe", ["duck-cow-1d", "ring-8", "grid-25", "grid-25-topk-drs"])
def test_toy_recipes_train_and_report(recipe, tmp_path):
    from genforge.train import train
    from genforge.viz import read_metrics

    extra = []
    if recipe == "grid-25-topk-drs":  # the toy bench's best configuration
        from genforge.bench import TOY_CONFIGS

        recipe, extra = "grid-25", list(TOY_CONFIGS["gan-ns-z2-bn-topk-drs"])
    result = train(load_recipe(recipe, [*extra, *TINY_TOY]), tmp_path, progress=False)
    assert result.step == 2
    assert {"eval/modes", "eval/hq", "eval/reverse_kl"} <= set(result.metrics)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert any("eval/modes" in row and row["step"] == 2 for row in rows)  # logged at the checkpoint
    assert (tmp_path / "plots" / "progress.gif").is_file() and (tmp_path / "samples" / "step-0000001.png").is_file()
    if recipe == "duck-cow-1d":  # minimax: the -log 4 and 1/2 reference plots
        assert (tmp_path / "plots" / "value.png").is_file() and (tmp_path / "plots" / "d_output.png").is_file()


@pytest.mark.parametrize("recipe", ["mnist-cgan", "fashion-cgan"])
def test_cgan_recipes_train_two_steps(recipe, tmp_path):
    from genforge.train import train

    from ..conftest import SHARED_DATASETS

    extra = []
    if recipe == "fashion-cgan":
        if not (SHARED_DATASETS / "fashion-mnist").is_dir():
            pytest.skip("Fashion-MNIST not in ../shared/datasets")
        extra = [f"data.root={SHARED_DATASETS}"]
    cfg = load_recipe(recipe, ["model.width=8", "model.latent_dim=8", "train.batch_size=16", "train.threads=1",
                               "train.device=cpu", "train.steps=2", "train.log_every=1", "train.sample_every=1000",
                               "train.checkpoint_every=1000", *extra])
    assert cfg.model.conditional == "projection"
    result = train(cfg, tmp_path, progress=False)
    assert result.step == 2 and 0.0 <= result.metrics["eval/class_accuracy"] <= 1.0
    assert (tmp_path / "plots" / "by_class.png").is_file()


def test_class_histogram_at_checkpoints_is_opt_in():
    from genforge.data.datasets import load_images

    from genforge.metrics.evaluate import checkpoint_metrics

    data = load_images("mnist-10k", "train")
    assert checkpoint_metrics(_gan(), data, 1) == {}
    shares = checkpoint_metrics(_gan(class_histogram=True), data, 1)
    assert len(shares) == 10 and sum(shares.values()) == pytest.approx(1.0)
    assert all(key.startswith("eval/class_share_") for key in shares)
