"""GAN losses as pure functions of discriminator/critic outputs, each with its paper.

Conventions: ``real`` and ``fake`` are D's raw outputs (logits for the BCE-family losses,
unbounded scores for Wasserstein and hinge), each of shape (B,). Every function returns a
scalar to *minimise*: ``d_*`` for the discriminator/critic, ``g_*`` for the generator.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


# --- Goodfellow et al. 2014, "Generative Adversarial Nets" (arXiv 1406.2661) -------------
def d_bce(real: torch.Tensor, fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """-[log D(x) + log(1 - D(G(z)))] from logits; ``real_label`` < 1 is one-sided label smoothing
    (Salimans et al. 2016)."""
    loss_real = F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_label))
    return loss_real + F.softplus(fake).mean()  # -log(1 - sigmoid(f)) = softplus(f)


def g_minimax(fake: torch.Tensor) -> torch.Tensor:
    """The original minimax generator loss, log(1 - D(G(z))) = -softplus(f): saturates when D wins."""
    return -F.softplus(fake).mean()


def g_nonsaturating(fake: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss of the same paper, -log D(G(z)) = softplus(-f)."""
    return F.softplus(-fake).mean()


def d_softplus_difference(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[softplus(D(G(z)))] - E[softplus(D(x))]: the D loss of the DiscoGAN livestream's toy, kept to show
    why its curves went "wildly crazy". It differs from :func:`d_bce` by the sign inside the real term
    (softplus(r) where BCE has softplus(-r)), so it has no lower bound: it falls without end as D's
    logits on real data grow, and D is rewarded for confidence, not for being right."""
    return F.softplus(fake).mean() - F.softplus(real).mean()


# --- Mao et al. 2017, "Least Squares Generative Adversarial Networks" (arXiv 1611.04076) --
def d_least_squares(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """0.5 [(D(x) - 1)^2 + D(G(z))^2] (the a=0, b=c=1 coding)."""
    return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())


def g_least_squares(fake: torch.Tensor) -> torch.Tensor:
    """0.5 (D(G(z)) - 1)^2."""
    return 0.5 * (fake - 1).pow(2).mean()


# --- Lim & Ye 2017 "Geometric GAN"; Miyato et al. 2018 (arXiv 1705.02894, 1802.05957) -----
def d_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def g_hinge(fake: torch.Tensor) -> torch.Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


# --- Arjovsky et al. 2017, "Wasserstein GAN" (arXiv 1701.07875) ---------------------------
def d_wasserstein(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """L_D = E[D(G(z))] - E[D(x)]: the negated critic estimate of the Wasserstein-1 distance."""
    return fake.mean() - real.mean()


def g_wasserstein(fake: torch.Tensor) -> torch.Tensor:
    """L_G = -E[D(G(z))]."""
    return -fake.mean()


@torch.no_grad()
def clip_weights(critic: nn.Module, bound: float = 0.01) -> None:
    """WGAN's Lipschitz constraint: every critic parameter clipped to [-bound, bound] after each step."""
    for param in critic.parameters():
        param.clamp_(-bound, bound)


# --- Gulrajani et al. 2017, "Improved Training of Wasserstein GANs" (arXiv 1704.00028) ---
def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     weight: float = 10.0) -> torch.Tensor:
    """lambda * E[(||grad_x_hat D(x_hat)||_2 - 1)^2] at x_hat uniformly between real and fake samples."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return weight * (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


# --- Mescheder et al. 2018, "Which Training Methods for GANs do actually Converge?" -------
def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, gamma: float = 10.0) -> torch.Tensor:
    """gamma/2 * E[||grad_x D(x)||^2] on real data."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(real).sum(), real, create_graph=True)
    return 0.5 * gamma * grad.flatten(1).pow(2).sum(1).mean()


# Generator and discriminator losses by config name (losses.D_LOSSES["hinge"], ...).
G_LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "nonsaturating": g_nonsaturating, "minimax": g_minimax, "least_squares": g_least_squares,
    "hinge": g_hinge, "wasserstein": g_wasserstein,
}
D_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "nonsaturating": d_bce, "minimax": d_bce, "least_squares": d_least_squares,
    "hinge": d_hinge, "wasserstein": d_wasserstein,
}
