"""Variational autoencoder on binarised images (Kingma & Welling 2013, arXiv 1312.6114).

The MLP VAE of the TensorFlow livestream, done right:
- noise drawn per example (the original drew one eps for the whole batch),
- the encoder outputs a log-variance, z = mu + eps * exp(0.5 * logvar),
- the Bernoulli likelihood is computed from logits (BCE with logits), never log(sigmoid + 1e-9).
Loss = negative ELBO = -sum_pixels log p(x|z) + KL(q(z|x) || N(0, I)), averaged over the batch.

``model.arch=conv`` is the image VAE the talk promised Pokemon (and faces) from: a strided-conv
encoder and a transposed-conv decoder sized by ``data.image_size``, fitted to 8-bit colour with a
discretised logistic likelihood (``model.likelihood=logistic``: Salimans et al. 2017, PixelCNN++,
arXiv 1701.05517, sec. 2.1, one logistic per sub-pixel with its own scale), so its test ELBO is an
honest bound on a discrete likelihood and reads in bits per dimension; never a Bernoulli term on
rounded colour pixels.
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

from genforge.errors import GenforgeError
from genforge.fields import check_ranges, opt
from genforge.models.base import Capabilities, GenerativeModel, Phase
from genforge.nets import FlattenFrom, down_block, memory_format_of, relayout, up_block


@dataclass
class VAEConfig:
    latent_dim: int = opt(20, "size of the latent code z (2 gives the classic manifold grid)")
    hidden: int = opt(500, "width of the encoder's and decoder's hidden layer")
    binarize: str = opt("round", "pixels to {0,1}: round (fixed, as the original) or dynamic (resampled per batch)",
                        ("round", "dynamic"))
    init: str = opt("default", "weight init: default (PyTorch) or trunc_normal (std 0.1, as the original)",
                    ("default", "trunc_normal"))
    arch: str = opt("mlp", "networks: mlp (one hidden layer, the livestream's) or conv (strided convs down to 4x4 "
                    "and transposed convs back, sized by data.image_size: colour image folders)", ("mlp", "conv"))
    width: int = opt(32, "arch=conv: channels of the first encoder conv, doubled at each halving of the side")
    likelihood: str = opt("auto", "p(x|z): bernoulli (binarised pixels, model.binarize), logistic (discretised "
                          "logistic per sub-pixel over the 256 levels: 8-bit colour, bits/dim), auto = bernoulli "
                          "for arch=mlp, logistic for arch=conv", ("auto", "bernoulli", "logistic"))


LOG_SCALE_MIN = -7.0  # the logistics' smallest log-scale (PixelCNN++): a bin is then ~1/(256 e^-7) = 4 scales wide
LEVELS = 256  # 8-bit pixels
DECODED_PIXELS = 20_000 * 784  # decoder output pixels per chunk of the importance-weighted NLL


def likelihood_of(cfg: VAEConfig) -> str:
    """The likelihood ``cfg`` asks for, with ``auto`` resolved by the networks."""
    if cfg.likelihood != "auto":
        return cfg.likelihood
    return "logistic" if cfg.arch == "conv" else "bernoulli"


def halvings(side: int) -> int | None:
    """How often a conv VAE halves ``side`` to reach a 4x4 (or 7x7) map; None when it cannot."""
    for base in (4, 7):
        steps = side // base
        if side % base == 0 and steps >= 2 and steps & (steps - 1) == 0:
            return steps.bit_length() - 1
    return None


def bits_per_dim(nats_per_image: float, dims: int) -> float:
    """A negative log-likelihood in nats per image as bits per dimension (sub-pixel): nats / (dims ln 2).
    A model that gives each of 256 levels 1/256 scores 8."""
    return nats_per_image / (dims * math.log(2.0))


def discretized_logistic_nll(means: torch.Tensor, log_scales: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log P(x) of 8-bit pixels ``target`` in [0, 1] under one logistic per sub-pixel integrated over
    its bin of width 1/255 (the lowest and highest bins reach to -inf and +inf, so the 256
    probabilities sum to 1); summed over sub-pixels: (B,). Computed in float32 from log-sigmoids, and
    from the density at the bin's centre where the bin's mass underflows (PixelCNN++, sec. 2.1)."""
    means, log_scales = means.float(), log_scales.float().clamp_min(LOG_SCALE_MIN)
    x = torch.round(target.float() * (LEVELS - 1)) / (LEVELS - 1)  # augmented pixels back on the grid
    half_bin = 0.5 / (LEVELS - 1)
    inv_scale = torch.exp(-log_scales)
    upper, lower = inv_scale * (x - means + half_bin), inv_scale * (x - means - half_bin)
    log_cdf_upper = F.logsigmoid(upper)  # log P(X <= upper edge): the lowest bin's mass
    log_survival_lower = F.logsigmoid(-lower)  # log P(X > lower edge): the highest bin's mass
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    centre = inv_scale * (x - means)
    log_density_mass = centre - log_scales - 2.0 * F.softplus(centre) + math.log(2 * half_bin)
    log_mass = torch.where(mass > 1e-5, torch.log(mass.clamp_min(1e-12)), log_density_mass)
    log_prob = torch.where(x < half_bin, log_cdf_upper, torch.where(x > 1 - half_bin, log_survival_lower, log_mass))
    return -log_prob.flatten(1).sum(-1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, summed over latent dims: (B,)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) of binary pixels, summed over pixels: (B,). Stable: computed from logits."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(-1)


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> strided 4x4 convs (batch norm on all but the first, LeakyReLU 0.2), ``width``
    channels doubling at each halving, down to 4x4 (or 7x7) -> FC -> (B, 2 latent): mu and logvar."""

    def __init__(self, channels: int, side: int, width: int, latent_dim: int):
        super().__init__()
        steps = halvings(side)
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(steps):
            layers += down_block(c_in, width * 2 ** i, 4, None if i == 0 else "batch")
            c_in = width * 2 ** i
        base = side >> steps
        self.main = nn.Sequential(*layers, FlattenFrom(), nn.Linear(c_in * base * base, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ConvDecoder(nn.Module):
    """z (B, latent) -> FC -> (B, C0, 4, 4) (BN, ReLU) -> transposed 4x4 convs (BN, ReLU), channels
    halving as the side doubles -> (B, out_channels, H, W), the likelihood's raw parameters."""

    def __init__(self, latent_dim: int, out_channels: int, side: int, width: int):
        super().__init__()
        steps = halvings(side)
        first, base = width * 2 ** (steps - 1), side >> steps
        self.shape = (first, base, base)
        self.project = nn.Linear(latent_dim, first * base * base)
        self.lift = nn.Sequential(nn.BatchNorm2d(first), nn.ReLU(True))
        blocks: list[nn.Module] = []
        ch = first
        for _ in range(steps - 1):
            blocks += up_block(ch, ch // 2, 4)
            ch //= 2
        self.main = nn.Sequential(*blocks)
        self.out = nn.ConvTranspose2d(ch, out_channels, 4, 2, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        maps = self.project(z).view(-1, *self.shape)  # (B, C0, 4, 4) NCHW
        maps = relayout(maps, memory_format_of(self.out.weight))  # the convs' layout, for BN and ReLU too
        return self.out(self.main(self.lift(maps)))


class VAE(GenerativeModel):
    """Encoder 784 -> hidden (tanh) -> (mu, logvar); decoder z -> hidden (tanh) -> 784 logits; or
    with ``arch=conv`` the conv networks above, and the discretised logistic for colour."""

    family = "vae"
    Config = VAEConfig
    output_range = "sigmoid"

    # Ranges of the family's keys (one line each: key, value, what is allowed).
    RANGES = {"latent_dim": ">= 1", "hidden": ">= 1", "width": ">= 1"}

    @classmethod
    def check_config(cls, cfg: Any, data_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> None:
        """Refuse a run config (a ``RunConfig``) this family cannot train, before anything is built or
        written (``genforge.config.validate`` calls it): the conv networks' image sizes, and with the
        data's shape, toy points and a Bernoulli likelihood on colour pixels."""
        cls.check_model(cfg.model, (cfg.data.channels, cfg.data.image_size, cfg.data.image_size))
        if data_shape is not None:
            cls.check_model(cfg.model, data_shape, known_channels=True)

    @classmethod
    def check_model(cls, cfg: VAEConfig, shape: tuple[int, ...], known_channels: bool = False) -> None:
        """The model section against one item's ``shape``; its channels are trusted only when they are
        the data's own (``known_channels``: data.channels does not apply to named sets)."""
        check_ranges(cfg, cls.RANGES, "model.")
        if len(shape) != 3:
            raise GenforgeError(f"the vae family encodes images (C, H, W); this data has shape {tuple(shape)} "
                                "(toy points train with the gan or discogan family)")
        if cfg.arch == "conv" and halvings(shape[-1]) is None:
            raise GenforgeError(f"model.arch=conv halves images down to 4x4 (or 7x7): data.image_size must be 4 or 7 "
                                f"times a power of two (8, 16, 28, 32, 64, 128, ...), not {shape[-1]}")
        if known_channels and shape[0] == 3 and likelihood_of(cfg) == "bernoulli":
            raise GenforgeError("a Bernoulli likelihood rounds every pixel to 0 or 1, which does not fit colour "
                                "images: use model.arch=conv (or model.likelihood=logistic) for RGB data")

    def __init__(self, cfg: VAEConfig, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__(cfg, image_shape, num_classes)
        self.check_model(cfg, image_shape)
        self.likelihood = likelihood_of(cfg)
        channels, side = image_shape[0], image_shape[-1]
        out_channels = channels * (2 if self.likelihood == "logistic" else 1)  # logistic: means and log-scales
        if cfg.arch == "conv":
            self.encoder = ConvEncoder(channels, side, cfg.width, cfg.latent_dim)
            self.decoder = ConvDecoder(cfg.latent_dim, out_channels, side, cfg.width)
            return
        pixels = math.prod(image_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, cfg.hidden), nn.Tanh(),
                                     nn.Linear(cfg.hidden, 2 * cfg.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.hidden), nn.Tanh(),
                                     nn.Linear(cfg.hidden, out_channels * side * image_shape[1]))
        if cfg.init == "trunc_normal":
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2)
                    nn.init.zeros_(layer.bias)

    # --- the model -------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in {0,1} (Bernoulli) or [0, 1] (logistic) -> mu, logvar, each (B, latent_dim)."""
        mu, logvar = self.encoder(x).float().chunk(2, dim=-1)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> the likelihood's raw parameters: Bernoulli logits (B, C, H, W), or the
        logistics' centres (less 1/2) and log-scales, (B, 2C, H, W)."""
        channels, height, width = self.image_shape
        return self.decoder(z).view(-1, channels * (2 if self.likelihood == "logistic" else 1), height, width)

    def reconstruction_nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) in nats per image, (B,), from the decoder's raw ``params`` (:meth:`decode_logits`)."""
        if self.likelihood == "logistic":
            offsets, log_scales = params.chunk(2, dim=1)
            return discretized_logistic_nll(offsets + 0.5, log_scales, x)
        return bernoulli_nll(params.float(), x)

    def loss_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-batch means of the negative ELBO, its reconstruction term and the KL, in nats."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # eps per example and dim
        recon = self.reconstruction_nll(self.decode_logits(z), x)
        kl = gaussian_kl(mu, logvar)
        return {"loss": (recon + kl).mean(), "recon": recon.mean(), "kl": kl.mean()}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        unit = images.float() / 255.0
        if self.likelihood == "logistic":
            return unit  # the 256 levels as they are: the logistic integrates over each one's bin
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
        """(B, latent_dim) -> images in [0, 1] (B, C, H, W): the Bernoulli means, as the original showed,
        or the logistics' centres (each sub-pixel's most likely value)."""
        params = self.decode_logits(z).float()
        if self.likelihood == "logistic":
            return (params[:, :self.image_shape[0]] + 0.5).clamp(0.0, 1.0)
        return torch.sigmoid(params)

    def walk(self, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
        """A fusion: ``steps`` images decoded along the straight line between the latent means of the
        prepared images ``a`` and ``b`` (each (C, H, W)), the first and last being their
        reconstructions: (steps, C, H, W) in [0, 1]. The caller puts the model in inference mode."""
        mu, _ = self.encode(torch.stack([a, b]))  # (2, latent)
        t = torch.linspace(0.0, 1.0, steps, device=mu.device)[:, None]  # (steps, 1)
        return self.decode((1 - t) * mu[0] + t * mu[1])

    def bits_per_dim(self, nats_per_image: float) -> float:
        """``nats_per_image`` (a negative ELBO or NLL) in bits per sub-pixel of this model's images."""
        return bits_per_dim(nats_per_image, math.prod(self.image_shape))

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
    def importance_nll(self, x: torch.Tensor, k: int = 5000, chunk: int | None = None, progress: bool = False) -> float:
        """Importance-weighted estimate of -log p(x) in nats, averaged over ``x`` (Burda et al. 2015).

        log p(x) ~= logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k,
        z_i ~ q(z|x), k samples per image, evaluated ``chunk`` decoder rows at a time (default: as
        many as hold about 16 million pixels, 20,000 MNIST digits).
        """
        chunk = chunk or max(1, DECODED_PIXELS // math.prod(self.image_shape))
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
                target = xs.repeat_interleave(kk, dim=0)  # (B * k, C, H, W), image-major as z below
                log_lik = -self.reconstruction_nll(self.decode_logits(z.flatten(0, 1)), target).view(xs.shape[0], kk)
                log_weights.append(log_lik + log_prior - log_q)
            log_w = torch.cat(log_weights, dim=1)
            total += float((math.log(k) - torch.logsumexp(log_w, dim=1)).sum())
        return total / x.shape[0]
