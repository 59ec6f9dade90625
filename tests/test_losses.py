"""Every GAN loss of genforge.losses against values computed by hand, and the penalties against autograd."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genforge import losses

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def sp(v: float) -> float:  # softplus
    return math.log1p(math.exp(v))


def test_bce_discriminator_loss_and_label_smoothing():
    # -[log s(r) + log(1 - s(f))] = softplus(-r) + softplus(f), averaged over the batch
    expected = (sp(-2.0) + sp(1.0)) / 2 + (sp(0.5) + sp(-3.0)) / 2
    assert losses.d_bce(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)
    # target 0.9 on reals: -(0.9 log s(r) + 0.1 log(1 - s(r))) = 0.9 softplus(-r) + 0.1 softplus(r)
    smoothed = sum(0.9 * sp(-r) + 0.1 * sp(r) for r in (2.0, -1.0)) / 2 + (sp(0.5) + sp(-3.0)) / 2
    assert losses.d_bce(REAL, FAKE, real_label=0.9).item() == pytest.approx(smoothed, rel=1e-6)


def test_d_bce_at_the_optimum_is_log_4():
    # D = 1/2 everywhere (logit 0): -[log 1/2 + log 1/2] = log 4, the value function -log 4
    assert losses.d_bce(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(4), rel=1e-6)


def test_generator_bce_losses():
    assert losses.g_nonsaturating(FAKE).item() == pytest.approx((sp(-0.5) + sp(3.0)) / 2, rel=1e-6)
    assert losses.g_minimax(FAKE).item() == pytest.approx(-(sp(0.5) + sp(-3.0)) / 2, rel=1e-6)


def test_least_squares():
    # 0.5 [mean (r - 1)^2 + mean f^2] = 0.5 [(1 + 4)/2 + (0.25 + 9)/2]
    assert losses.d_least_squares(REAL, FAKE).item() == pytest.approx(0.5 * (2.5 + 4.625))
    assert losses.g_least_squares(FAKE).item() == pytest.approx(0.5 * (0.25 + 16) / 2)


def test_hinge():
    # relu(1 - r): relu(-1)=0, relu(2)=2 -> 1;  relu(1 + f): 1.5, relu(-2)=0 -> 0.75
    assert losses.d_hinge(REAL, FAKE).item() == pytest.approx(1.75)
    assert losses.g_hinge(FAKE).item() == pytest.approx(1.25)


def test_wasserstein_and_clipping():
    assert losses.d_wasserstein(REAL, FAKE).item() == pytest.approx(-1.25 - 0.5)
    assert losses.g_wasserstein(FAKE).item() == pytest.approx(1.25)
    critic = nn.Linear(3, 2)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.5, -0.005, 0.0], [-2.0, 0.001, 0.02]]))
    losses.clip_weights(critic, 0.01)
    assert critic.weight.flatten().tolist() == pytest.approx([0.01, -0.005, 0.0, -0.01, 0.001, 0.01])
    assert critic.bias.abs().max() <= 0.01


def test_registries_cover_every_config_loss():
    from genforge.models.gan import GANConfig

    choices = [f.metadata["choices"] for f in GANConfig.__dataclass_fields__.values() if f.name == "loss"][0]
    for name in choices:
        base = "wasserstein" if name == "wgan-gp" else name
        assert base in losses.G_LOSSES and base in losses.D_LOSSES


def test_gradient_penalty_of_a_linear_critic_is_known():
    # D(x) = w.x has gradient w everywhere: penalty = lambda (|w| - 1)^2, here |w| = 5
    critic = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    value = losses.gradient_penalty(lambda x: critic(x).squeeze(-1), torch.randn(6, 2), torch.randn(6, 2), 10.0)
    assert value.item() == pytest.approx(10.0 * 16.0, rel=1e-6)


def test_gradient_penalty_matches_an_autograd_reference():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    state = torch.get_rng_state()
    value = losses.gradient_penalty(lambda x: critic(x).squeeze(-1), real, fake, 10.0)
    torch.set_rng_state(state)  # the same alpha draw
    alpha = torch.rand(5, 1)
    norms = []
    for i in range(5):  # the gradient of D at each interpolate, one sample at a time
        point = (alpha[i] * real[i] + (1 - alpha[i]) * fake[i]).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(point).sum(), point)
        norms.append(grad.norm())
    expected = 10.0 * torch.stack([(n - 1) ** 2 for n in norms]).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    value.backward()  # create_graph: the penalty trains the critic
    assert critic[0].weight.grad is not None and critic[2].weight.grad is not None


def test_r1_penalty_of_a_linear_critic():
    critic = nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[1.0, 2.0]]))
    assert losses.r1_penalty(lambda x: critic(x).squeeze(-1), torch.randn(4, 2), gamma=10.0).item() == pytest.approx(
        0.5 * 10.0 * 5.0)


def test_softplus_difference_by_hand_and_without_a_lower_bound():
    # E[softplus(f)] - E[softplus(r)]: the DiscoGAN livestream's D loss
    expected = (sp(0.5) + sp(-3.0)) / 2 - (sp(2.0) + sp(-1.0)) / 2
    assert losses.d_softplus_difference(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)
    falling = [losses.d_softplus_difference(torch.full((2,), r), FAKE).item() for r in (1.0, 10.0, 100.0, 1000.0)]
    assert falling == sorted(falling, reverse=True) and falling[-1] < -999  # more confident on reals: lower, no floor
    assert losses.d_bce(torch.full((2,), 1000.0), FAKE).item() > 0  # BCE is bounded below by 0
