"""The GAN family: network shapes and ranges, DCGAN init, frozen D in G's step, the losses."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from genforge.errors import GenforgeError
from genforge.models.base import Batch
from genforge.models.gan import GAN, GANConfig, frozen
from tests.conftest import activation_grad_layouts, step_phases

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _gan(size: int = 28, **kwargs) -> GAN:
    torch.manual_seed(0)
    kwargs = {"width": 8, "latent_dim": 16, **kwargs}
    return GAN(GANConfig(**kwargs), (1, size, size), 10)


@pytest.mark.parametrize("size", [28, 32])
def test_dcgan_generator_shape_and_range(size):
    model = _gan(size)
    raw = model.generator(model.sample_noise(6))
    assert raw.shape == (6, 1, size, size)
    assert raw.min() >= -1 and raw.max() <= 1  # tanh
    images = model.generate(model.sample_noise(6))
    assert images.min() >= 0 and images.max() <= 1
    assert model.sample(5, torch.Generator().manual_seed(0)).shape == (5, 1, size, size)


@pytest.mark.parametrize("size", [28, 32, 64])
def test_discriminator_gives_one_logit_per_image(size):
    model = _gan(size)
    assert model.discriminator(torch.randn(5, 1, size, size)).shape == (5,)


def test_g_width_sets_generator_channels_apart_from_d():
    model = _gan(32, width=8, g_width=16)  # the widely copied 32x32 DCGAN's shape: G twice D's channels
    g_convs = [m.in_channels for m in model.generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    d_convs = [m.out_channels for m in model.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert g_convs == [64, 32, 16] and d_convs == [8, 16, 32]
    assert [m.in_channels for m in _gan(32, width=8).generator.modules()
            if isinstance(m, nn.ConvTranspose2d)] == [32, 16, 8]  # g_width=0: G follows width


@pytest.mark.parametrize("widths", [{"width": 0}, {"g_width": -1}])
def test_bad_widths_are_clear_errors(widths):
    with pytest.raises(GenforgeError, match="model.width must be at least 1 and model.g_width 0"):
        _gan(**widths)


def test_livestream_networks_shape_and_range():
    model = _gan(arch="livestream")
    assert model.output_range == "sigmoid"
    raw = model.generator(model.sample_noise(4))
    assert raw.shape == (4, 1, 28, 28) and raw.min() >= 0 and raw.max() <= 1
    assert model.discriminator(model.prepare(torch.zeros(4, 1, 28, 28, dtype=torch.uint8))).shape == (4,)
    assert model.prepare(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).max() == 1.0  # data in [0, 1]


@pytest.mark.parametrize("latent_dim", [16, 32])  # the last conv: 4 or 8 channels -> 1, at 56x56
def test_livestream_generator_trains_channels_last_in_float32(latent_dim):
    # oneDNN's float32 backward of a channels-last 1x1 stride-2 conv to one channel corrupted
    # memory (an abort or a segfault within a few steps); the generator keeps that conv in NCHW.
    model = _gan(arch="livestream", latent_dim=latent_dim).to(memory_format=torch.channels_last)
    for batch in (8, 16, 64):
        images = model.generator(model.sample_noise(batch))
        images.backward(torch.randn_like(images))
    assert all(torch.isfinite(p.grad).all() for p in model.generator.parameters())


def test_dcgan_prepares_data_to_minus_one_one():
    model = _gan()
    prepared = model.prepare(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    assert prepared.tolist() == [[[[-1.0, 1.0]]]]
    assert model.to_unit(prepared).tolist() == [[[[0.0, 1.0]]]]


def test_unsupported_image_size():
    with pytest.raises(GenforgeError, match="image_size=30"):
        _gan(30)


@torch.no_grad()
def test_dcgan_init_std_002():
    model = _gan(width=32)
    weights = torch.cat([m.weight.flatten() for m in model.modules()
                         if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))])
    assert weights.numel() > 10_000
    assert weights.mean().abs() < 0.002 and weights.std().item() == pytest.approx(0.02, rel=0.05)
    bn = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01) and bn.std().item() == pytest.approx(0.02, rel=0.3)
    biases = [m.bias for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
              and m.bias is not None]
    assert biases and all(torch.equal(b, torch.zeros_like(b)) for b in biases)


@pytest.mark.parametrize("noise", ["gaussian", "uniform", "truncated"])
def test_noise_distributions(noise):
    z = _gan(noise=noise).sample_noise(4000, torch.Generator().manual_seed(0))
    assert z.shape == (4000, 16)
    if noise == "uniform":
        assert z.min() >= -1 and z.max() <= 1 and z.std() == pytest.approx(1 / math.sqrt(3), rel=0.05)
    elif noise == "truncated":
        assert z.abs().max() <= 2
    else:
        assert z.abs().max() > 2.5 and z.std() == pytest.approx(1.0, rel=0.05)


def test_generator_step_leaves_discriminator_untouched():
    model = _gan()
    g_opt = torch.optim.Adam(model.generator.parameters(), lr=1e-2)
    d_before = {k: v.clone() for k, v in model.discriminator.named_parameters()}
    g_before = {k: v.clone() for k, v in model.generator.named_parameters()}
    g_phase = [p for p in model.phases() if p.optimizer == "generator"][0]
    losses = g_phase.step(Batch(torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)))
    g_opt.zero_grad()
    losses["loss"].backward()
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen afterwards
    assert all(p.grad is not None for p in model.generator.parameters())
    g_opt.step()
    assert all(torch.equal(d_before[k], v) for k, v in model.discriminator.named_parameters())
    assert all(not torch.equal(g_before[k], v) for k, v in model.generator.named_parameters())


def test_discriminator_step_does_not_train_the_generator():
    model = _gan()
    d_phase = [p for p in model.phases() if p.optimizer == "discriminator"][0]
    d_phase.step(Batch(torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)))["loss"].backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert all(p.grad is not None for p in model.discriminator.parameters())


class Recorder(nn.Module):
    """Wraps a network and keeps every input it is given."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x):
        self.inputs.append(x)
        return self.net(x)


@pytest.mark.parametrize("reuse, d_steps, g_passes, shared", [(True, 1, 1, True), (False, 1, 2, False),
                                                               (True, 2, 3, False)])  # reuse needs d_steps=1
def test_generator_step_learns_from_the_fakes_d_judged(reuse, d_steps, g_passes, shared):
    model = _gan(reuse_fakes=reuse, d_steps=d_steps)
    model.generator, model.discriminator = Recorder(model.generator), Recorder(model.discriminator)
    optimizers = {name: torch.optim.Adam(params, lr=1e-2) for name, params in model.optimizer_groups().items()}
    g_before = [p.clone() for p in model.generator.parameters()]
    step_phases(model, optimizers, Batch(torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)))
    assert len(model.generator.inputs) == g_passes  # reuse: one G forward a step; else one per phase repeat
    judged = model.discriminator.inputs  # each D step: reals, then fakes (float32: two passes); the G step: fakes
    assert [len(x) for x in judged] == [8] * (2 * d_steps + 1)
    assert torch.equal(judged[-1], judged[-2]) == shared  # G learns from the very fakes D's last step saw
    assert not judged[-2].requires_grad and judged[-1].requires_grad  # detached for D; G's graph for G
    assert all(not torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()))  # G learned


@pytest.mark.parametrize("arch", ["dcgan", "livestream"])
def test_channels_last_training_keeps_activation_gradients_in_their_layout(arch):
    model = _gan(arch=arch).to(memory_format=torch.channels_last)
    real = model.prepare(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8))
    batch = Batch(real.contiguous(memory_format=torch.channels_last), torch.zeros(8, dtype=torch.long))
    d_phase, g_phase = model.phases()
    for phase in (d_phase, g_phase):
        matched = activation_grad_layouts(phase.step(batch)["loss"])
        assert any(name.startswith("Relu") or name.startswith("Threshold") for name in matched) == (
            phase is g_phase or arch == "livestream")  # G's ReLUs (D's step never differentiates G)
        assert arch == "livestream" or any(name.startswith("LeakyRelu") for name in matched)  # the DCGAN D's
        assert all(all(flags) for flags in matched.values()), (phase.name, matched)


def test_frozen_restores_previous_flags():
    net = nn.Linear(2, 2)
    net.bias.requires_grad_(False)
    with frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
    assert net.weight.requires_grad and not net.bias.requires_grad


def test_phases_follow_the_config():
    assert [(p.name, p.optimizer, p.repeats) for p in _gan(d_steps=3).phases()] == [
        ("d", "discriminator", 3), ("g", "generator", 1)]
    assert [p.name for p in _gan(schedule="threshold").phases()] == ["d_fake", "g", "d_real"]
    assert set(_gan().optimizer_groups()) == {"generator", "discriminator"}


# --- the losses, from given logits ---------------------------------------------------

REAL_MARK = 5.0  # a pixel value outside tanh's range marks the real images


class FixedD(nn.Module):
    """A stand-in discriminator: logit ``real[i]`` for the i-th real image of a pass, ``fake[i]`` for fakes."""

    def __init__(self, real, fake):
        super().__init__()
        self.real, self.fake = torch.tensor(real), torch.tensor(fake)
        self.scale = nn.Parameter(torch.ones(()))  # so gradients can flow "through D"

    def forward(self, x):
        is_real = x[:, 0, 0, 0] == REAL_MARK
        n = len(self.real)
        index = torch.arange(x.shape[0]) % n
        return torch.where(is_real, self.real[index], self.fake[index]) * self.scale


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


FAKE = [0.5, -1.0, 2.0]
REAL = [1.5, -0.25, 3.0]


@pytest.mark.parametrize("loss", ["nonsaturating", "minimax"])
def test_generator_losses_from_given_logits(loss):
    model = _gan(loss=loss)
    model.discriminator = FixedD(REAL, FAKE)
    value = model.g_loss(3, torch.device("cpu")).item()
    if loss == "nonsaturating":  # -log D(G(z))
        expected = sum(-math.log(_sigmoid(f)) for f in FAKE) / 3
    else:  # log(1 - D(G(z))), minimised by G
        expected = sum(math.log(1 - _sigmoid(f)) for f in FAKE) / 3
    assert value == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("loss, expected", [
    ("nonsaturating", -_sigmoid(4.0) / 3),  # d/dl mean softplus(-l) = -sigmoid(-l) / n, at l = -4
    ("minimax", -_sigmoid(-4.0) / 3),  # d/dl mean -softplus(l) = -sigmoid(l) / n: vanishes when D rejects fakes
])
def test_generator_gradient_when_d_rejects_fakes(loss, expected):
    """Goodfellow et al.'s point: with D(G(z)) ~ 0 the minimax gradient vanishes, the non-saturating one does not."""
    model = _gan(loss=loss)
    model.discriminator = FixedD([0.0] * 3, [-4.0] * 3)
    model.discriminator.fake.requires_grad_(True)  # a plain tensor, not a parameter: frozen() leaves it be
    model.g_loss(3, torch.device("cpu")).backward()
    assert model.discriminator.scale.grad is None  # D's parameters are frozen during G's loss
    assert model.discriminator.fake.grad.tolist() == pytest.approx([expected] * 3, rel=1e-5)


@pytest.mark.parametrize("real_label", [1.0, 0.9])
def test_discriminator_terms_from_given_logits(real_label):
    model = _gan(real_label=real_label)
    model.discriminator = FixedD(REAL, FAKE)
    terms = model.d_terms(torch.full((3, 1, 28, 28), REAL_MARK))
    bce = lambda logit, t: -(t * math.log(_sigmoid(logit)) + (1 - t) * math.log(1 - _sigmoid(logit)))  # noqa: E731
    assert terms["loss_real"].item() == pytest.approx(sum(bce(r, real_label) for r in REAL) / 3, rel=1e-6)
    assert terms["loss_fake"].item() == pytest.approx(sum(bce(f, 0.0) for f in FAKE) / 3, rel=1e-6)
    assert terms["d_real"].item() == pytest.approx(sum(map(_sigmoid, REAL)) / 3, rel=1e-6)
    assert terms["d_fake"].item() == pytest.approx(sum(map(_sigmoid, FAKE)) / 3, rel=1e-6)


def test_threshold_gates_from_given_logits():
    model = _gan(schedule="threshold")
    d_fake, g, d_real = model.phases()
    batch = Batch(torch.full((3, 1, 28, 28), REAL_MARK), torch.zeros(3, dtype=torch.long))
    model.discriminator = FixedD([5.0] * 3, [-5.0] * 3)  # D winning: D idles, G trains
    assert not d_fake.step(batch)["gate"] and not d_real.step(batch)["gate"] and g.step(batch)["gate"]
    model.discriminator = FixedD([-5.0] * 3, [5.0] * 3)  # D losing: D trains, G idles
    assert d_fake.step(batch)["gate"] and d_real.step(batch)["gate"] and not g.step(batch)["gate"]


@pytest.mark.parametrize("options", [{}, {"conditional": "concat"}, {"conditional": "projection"},
                                     {"loss": "wgan-gp"}, {"pack": 2}, {"d_norm": "instance"}])
def test_d_s_real_and_fake_batches_in_one_pass_give_what_two_passes_give(options, monkeypatch):
    from genforge.models import gan as gan_module

    monkeypatch.setattr(gan_module, "_joint_pays", lambda x: True)  # in float32 too, for the comparison
    passes = []
    critic = GAN._critic
    monkeypatch.setattr(GAN, "_critic", lambda self, x, labels: passes.append(len(x)) or critic(self, x, labels))

    results = {}
    for joint in (True, False):
        model = _gan(**options)  # float32: the same numbers to rounding (the batch's size picks the kernels)
        model.train()
        real = torch.rand(8, 1, 28, 28) * 2 - 1
        labels = torch.arange(8) % 10
        torch.manual_seed(1)  # the fakes, and WGAN-GP's interpolation weights
        before = gan_module.JOINT_PASSES[0]
        gan_module.JOINT_PASSES[0] = joint
        try:
            terms = model.d_terms(real, labels if model.classes else None)
        finally:
            gan_module.JOINT_PASSES[0] = before
        loss = terms["loss_adv"] + terms.get("gp", 0.0)
        grads = torch.autograd.grad(loss, list(model.discriminator.parameters()))
        stats = {k: v.clone() for k, v in model.discriminator.state_dict().items() if "running" in k}
        results[joint] = ({k: v.detach() for k, v in terms.items()}, grads, stats)
    gp = 1 if options.get("loss") == "wgan-gp" else 0  # the penalty's own pass on the interpolates
    n = 8 // options.get("pack", 1)  # D's inputs: packs of model.pack images
    assert passes == [2 * n] + [n] * gp + [n, n] + [n] * gp  # one pass, then two
    (terms, grads, stats), (terms2, grads2, stats2) = results[True], results[False]
    assert terms.keys() == terms2.keys()
    for key in terms:
        torch.testing.assert_close(terms[key], terms2[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert stats.keys() == stats2.keys() and all(torch.allclose(stats[k], stats2[k], rtol=1e-5) for k in stats)
    assert stats or options.get("d_norm") == "instance" or options.get("loss") == "wgan-gp"  # BN was in the test


def test_a_dcgan_trains_to_the_same_losses_with_d_s_batches_in_one_pass_or_two(tmp_path, monkeypatch):
    """30 float32 steps of a tiny DCGAN: the logged losses agree to 1e-3 (one pass or two differ only in
    rounding, as the kernels a batch's size picks do)."""
    from genforge.models import gan as gan_module
    from genforge.train import train
    from tests.conftest import tiny_config

    losses = {}
    monkeypatch.setattr(gan_module, "_joint_pays", lambda x: True)  # in float32 too, for the comparison
    for joint in (True, False):
        monkeypatch.setattr(gan_module, "JOINT_PASSES", [joint])
        cfg = tiny_config("mnist-dcgan", "train.steps=30", "train.log_every=10", "train.precision=fp32")
        train(cfg, tmp_path / str(joint), progress=False)
        rows = [json.loads(line) for line in (tmp_path / str(joint) / "metrics.jsonl").read_text().splitlines()]
        losses[joint] = [row for row in rows if "images_per_s" in row]
    assert len(losses[True]) == 3
    for ours, theirs in zip(losses[True], losses[False]):
        for key in (k for k in theirs if k.endswith("/loss") or k.endswith("/d_real")):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-3, abs=1e-5), (ours["step"], key)


def test_one_pass_is_taken_where_it_was_measured_faster_a_cpu_in_bf16():
    from genforge.models.gan import _joint_pays

    x = torch.zeros(2, 1, 8, 8)
    assert not _joint_pays(x)  # float32 (the 32x32 DCGAN's step lost 3-6%)
    assert _joint_pays(x.to(torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _joint_pays(x)
    model = _gan()
    model.discriminator = Recorder(model.discriminator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.d_terms(torch.zeros(4, 1, 28, 28))
    assert [len(x) for x in model.discriminator.inputs] == [8]  # reals and fakes, one pass
    model.discriminator.inputs.clear()
    model.d_terms(torch.zeros(4, 1, 28, 28))
    assert [len(x) for x in model.discriminator.inputs] == [4, 4]
