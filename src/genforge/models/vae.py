"""Variational autoencoder on binarised images (Kingma & Welling 2013, arXiv 1312.6114).

The MLP VAE of the TensorFlow livestream, done right:
- noise drawn per example (the original drew one eps for the whole batch),
- the encoder outputs a log-variance, z = mu + eps * exp(0.5 * logvar),
- the Bernoulli likelihood is computed from logits (BCE with logits), never log(sigmoid + 1e-9).
Loss = negative ELBO = -sum_pixels log p(x|z) + KL(q(z|x) || N(0, I)), averaged over the batch.
Its test ELBO and NLL are judged by :mod:`genforge.metrics.registry`; its pictures
(reconstructions, prior samples, latent map, manifold) are drawn by :mod:`genforge.viz`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from genforge.fields import check_ranges, opt
from genforge.models.base import Capabilities, GenerativeModel, Phase


@dataclass
class VAEConfig:
    latent_dim: int = opt(20, "size of the latent code z (2 gives the classic manifold grid)")
    hidden: int = opt(500, "width of the encoder's and decoder's hidden layer")
    binarize: str = opt("round", "pixels to {0,1}: round (fixed, as the original) or dynamic (resampled per batch)",
                        ("round", "dynamic"))
    init: str = opt("default", "weight init: default (PyTorch) or trunc_normal (std 0.1, as the original)",
                    ("default", "trunc_normal"))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, summed over latent dims: (B,)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) of binary pixels, summed over pixels: (B,). Stable: computed from logits."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(-1)


class VAE(GenerativeModel):
    """Encoder 784 -> hidden (tanh) -> (mu, logvar); decoder z -> hidden (tanh) -> 784 logits."""

    family = "vae"
    Config = VAEConfig
    output_range = "sigmoid"

    # Ranges of the family's keys (one line each: key, value, what is allowed).
    RANGES = {"latent_dim": ">= 1", "hidden": ">= 1"}

    @classmethod
    def check_config(cls, cfg: Any, data_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> None:
        """Refuse a run config (a ``RunConfig``) this family cannot train, before anything is built or
        written (``genforge.config.validate`` calls it); the VAE has no check that needs the data."""
        check_ranges(cfg.model, cls.RANGES, "model.")

    def __init__(self, cfg: VAEConfig, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__(cfg, image_shape, num_classes)
        check_ranges(cfg, self.RANGES, "model.")
        pixels = math.prod(image_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, cfg.hidden), nn.Tanh(),
                                     nn.Linear(cfg.hidden, 2 * cfg.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.hidden), nn.Tanh(), nn.Linear(cfg.hidden, pixels))
        if cfg.init == "trunc_normal":
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2)
                    nn.init.zeros_(layer.bias)

    # --- the model -------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in {0,1} -> mu, logvar, each (B, latent_dim)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> Bernoulli logits (B, C, H, W)."""
        return self.decoder(z).view(-1, *self.image_shape)

    def loss_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-batch means of the negative ELBO, its reconstruction term and the KL, in nats."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # eps per example and dim
        recon = bernoulli_nll(self.decode_logits(z), x)
        kl = gaussian_kl(mu, logvar)
        return {"loss": (recon + kl).mean(), "recon": recon.mean(), "kl": kl.mean()}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        unit = images.float() / 255.0
        if self.cfg.binarize == "dynamic" and self.training:
            return torch.bernoulli(unit)  # a fresh binarisation each time: less over-fitting
        return torch.round(unit)

    # --- what the training loop needs ------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(encoder=True, likelihood=True)

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"vae": list(self.parameters())}

    def phases(self) -> list[Phase]:
        return [Phase("vae", "vae", lambda batch: self.loss_terms(batch.images))]

    def sample_noise(self, n, generator=None, device=None):
        where = generator.device if generator is not None else (device or "cpu")  # a CPU generator draws on the CPU
        return torch.randn(n, self.cfg.latent_dim, generator=generator, device=where).to(device or "cpu")

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return self.decode(noise)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> images in [0, 1] (B, C, H, W): the Bernoulli means, as the original showed."""
        return torch.sigmoid(self.decode_logits(z))

    # --- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def test_elbo(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
        """Mean negative ELBO, reconstruction and KL over ``x`` (one noise draw per image)."""
        totals = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start:start + batch_size]
            for key, value in self.loss_terms(chunk).items():
                totals[key] += float(value) * chunk.shape[0]
        return {key: value / x.shape[0] for key, value in totals.items()}

    @torch.no_grad()
    def importance_nll(self, x: torch.Tensor, k: int = 5000, chunk: int = 20_000, progress: bool = False) -> float:
        """Importance-weighted estimate of -log p(x) in nats, averaged over ``x`` (Burda et al. 2015).

        log p(x) ~= logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k,
        z_i ~ q(z|x), k samples per image, evaluated ``chunk`` decoder rows at a time.
        """
        mu, logvar = self.encode(x)
        std = torch.exp(0.5 * logvar)
        per_image = max(1, chunk // k)
        total = 0.0
        log_2pi = math.log(2 * math.pi)
        for start in tqdm(range(0, x.shape[0], per_image), desc="NLL", disable=not progress, leave=False):
            xs, m, s, lv = (t[start:start + per_image] for t in (x, mu, std, logvar))
            log_weights = []
            for k_start in range(0, k, max(1, chunk // xs.shape[0])):
                kk = min(k - k_start, max(1, chunk // xs.shape[0]))
                eps = torch.randn(xs.shape[0], kk, m.shape[-1], device=x.device)  # (B, k, D)
                z = m[:, None] + s[:, None] * eps
                log_q = -0.5 * (eps.pow(2) + lv[:, None] + log_2pi).sum(-1)
                log_prior = -0.5 * (z.pow(2) + log_2pi).sum(-1)
                logits = self.decode_logits(z.flatten(0, 1)).view(xs.shape[0], kk, -1)
                target = xs.flatten(1)[:, None].expand_as(logits)
                log_lik = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
                log_weights.append(log_lik + log_prior - log_q)
            log_w = torch.cat(log_weights, dim=1)
            total += float((math.log(k) - torch.logsumexp(log_w, dim=1)).sum())
        return total / x.shape[0]
