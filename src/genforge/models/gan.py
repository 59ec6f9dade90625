"""GANs on images: the canonical DCGAN and the TensorFlow livestream's network.

Goodfellow et al. 2014 (arXiv 1406.2661) for the game; Radford et al. 2015 (DCGAN,
arXiv 1511.06434) for the networks: strided (transposed) convolutions, batch norm
(not on D's first layer), ReLU in G, LeakyReLU(0.2) in D, tanh output, weights from
N(0, 0.02), Adam 2e-4 with beta1 0.5.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genforge import losses
from genforge.config import opt
from genforge.models.base import Batch, GenerativeModel, Phase


@dataclass
class GANConfig:
    arch: str = opt("dcgan", "networks: dcgan (Radford et al.) or livestream (the original TF code)",
                    ("dcgan", "livestream"))
    latent_dim: int = opt(100, "size of the noise vector z")
    width: int = opt(64, "DCGAN base channel count (D's first layer; G's last hidden layer)")
    noise: str = opt("gaussian", "distribution of z", ("gaussian", "uniform", "truncated"))
    loss: str = opt("nonsaturating", "generator loss: nonsaturating -log D(G(z)) or minimax log(1 - D(G(z)))",
                    ("nonsaturating", "minimax"))
    real_label: float = opt(1.0, "target for real images in D's loss (0.9 = one-sided label smoothing)")
    d_steps: int = opt(1, "discriminator steps per generator step")
    schedule: str = opt("alternate", "alternate D and G steps, or threshold-gate them as the livestream did",
                        ("alternate", "threshold"))


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: every conv/linear weight from N(0, 0.02); BN scale from N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def _base_size(image_size: int) -> int:
    """Side of G's first feature map: 7 for 28 px (7 -> 14 -> 28), else 4 (4 -> 8 -> ... -> size)."""
    for base in (7, 4):
        ups = math.log2(image_size / base)
        if ups >= 1 and ups == int(ups):
            return base
    raise ValueError(f"image size {image_size} is not 7 or 4 times a power of two (use 28, 32 or 64)")


class DCGANGenerator(nn.Module):
    """z (B, latent) -> FC -> (B, C0, s, s) -> transposed convs (BN, ReLU) -> tanh (B, C, H, W)."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int):
        super().__init__()
        base = _base_size(image_size)
        ups = int(math.log2(image_size // base))
        first = width * 2 ** (ups - 1)
        self.shape = (first, base, base)
        self.project = nn.Sequential(nn.Linear(latent_dim, first * base * base, bias=False),
                                     nn.Unflatten(1, self.shape), nn.BatchNorm2d(first), nn.ReLU(True))
        blocks: list[nn.Module] = []
        ch = first
        for _ in range(ups - 1):
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        blocks += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.main = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(self.project(z))


class DCGANDiscriminator(nn.Module):
    """(B, C, H, W) -> strided convs (BN on all but the first, LeakyReLU 0.2) -> one logit (B,)."""

    def __init__(self, channels: int, image_size: int, width: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch, size = width, image_size // 2
        while size > 4 and size % 2 == 0 and size // 2 >= 4:
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True)]
            ch, size = ch * 2, size // 2
        self.main = nn.Sequential(*layers, nn.Flatten(), nn.Linear(ch * size * size, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).squeeze(-1)


class LivestreamGenerator(nn.Module):
    """The livestream's G: z -> FC 56x56x1 -> BN, ReLU -> conv 3x3/2 (50) -> BN, ReLU -> upsample
    -> conv 3x3/2 (25) -> BN, ReLU -> upsample -> conv 1x1/2 (1) -> sigmoid, 28x28.
    BN (eps 1e-5) on all but the last layer."""

    def __init__(self, latent_dim: int, channels: int, image_size: int):
        super().__init__()
        big = image_size * 2
        self.main = nn.Sequential(
            nn.Linear(latent_dim, big * big), nn.Unflatten(1, (1, big, big)), nn.BatchNorm2d(1, eps=1e-5), nn.ReLU(True),
            nn.Conv2d(1, latent_dim // 2, 3, 2, 1), nn.BatchNorm2d(latent_dim // 2, eps=1e-5), nn.ReLU(True),
            nn.Upsample(size=(big, big)),
            nn.Conv2d(latent_dim // 2, latent_dim // 4, 3, 2, 1), nn.BatchNorm2d(latent_dim // 4, eps=1e-5), nn.ReLU(True),
            nn.Upsample(size=(big, big)),
            nn.Conv2d(latent_dim // 4, channels, 1, 2), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class LivestreamDiscriminator(nn.Module):
    """The livestream's D: conv 5x5 x32, ReLU, avg-pool 2 -> conv 5x5 x64, ReLU, avg-pool 2
    -> FC 1024 (ReLU) -> FC 1 logit."""

    def __init__(self, channels: int, image_size: int):
        super().__init__()
        quarter = image_size // 4
        self.main = nn.Sequential(
            nn.Conv2d(channels, 32, 5, 1, 2), nn.ReLU(True), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 5, 1, 2), nn.ReLU(True), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(64 * quarter * quarter, 1024), nn.ReLU(True), nn.Linear(1024, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).squeeze(-1)


@contextmanager
def frozen(module: nn.Module):
    """No parameter gradients for ``module`` inside the block; gradients still flow through it."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class GAN(GenerativeModel):
    """Generator + discriminator trained with binary cross-entropy on logits."""

    family = "gan"
    Config = GANConfig
    ema_networks = ("generator",)

    def __init__(self, cfg: GANConfig, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__(cfg, image_shape, num_classes)
        channels, size, _ = image_shape
        if cfg.arch == "livestream":
            if size % 4:
                raise ValueError(f"the livestream networks need an image size divisible by 4, not {size}")
            self.generator = LivestreamGenerator(cfg.latent_dim, channels, size)
            self.discriminator = LivestreamDiscriminator(channels, size)
            self.output_range = "sigmoid"  # the original's G ends in a sigmoid: data scaled to [0, 1]
        else:
            self.generator = DCGANGenerator(cfg.latent_dim, channels, size, cfg.width)
            self.discriminator = DCGANDiscriminator(channels, size, cfg.width)
            dcgan_init(self)

    def optimizer_groups(self):
        return {"generator": list(self.generator.parameters()),
                "discriminator": list(self.discriminator.parameters())}

    def sample_noise(self, n, generator=None, device=None):
        device = device or "cpu"
        if self.cfg.noise == "uniform":
            return torch.rand(n, self.cfg.latent_dim, generator=generator, device=device) * 2 - 1
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)
        if self.cfg.noise == "truncated":  # TF's truncated_normal: resample |z| > 2; clamping is close enough
            z = z.clamp(-2.0, 2.0)
        return z

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return self.to_unit(self.generator(noise))

    # --- losses ----------------------------------------------------------------------
    def _fake(self, n: int, device: torch.device) -> torch.Tensor:
        return self.generator(self.sample_noise(n, device=device))

    def d_terms(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """D's BCE on real (target real_label) and fake (target 0) images, and its mean outputs."""
        with torch.no_grad():
            fake = self._fake(real.shape[0], real.device)
        # Separate passes, so BN statistics of a fake batch are the same here as in G's step;
        # one concatenated pass lets D separate by batch statistics that G never sees.
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(fake)
        loss_real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, self.cfg.real_label))
        loss_fake = F.softplus(fake_logits).mean()  # BCE with target 0
        return {"loss_real": loss_real, "loss_fake": loss_fake, "d_real": torch.sigmoid(real_logits).mean(),
                "d_fake": torch.sigmoid(fake_logits).mean()}

    def g_loss(self, n: int, device: torch.device) -> torch.Tensor:
        with frozen(self.discriminator):  # D is not updated, but gradients flow through it
            fake_logits = self.discriminator(self._fake(n, device))
        return losses.G_LOSSES[self.cfg.loss](fake_logits)

    # --- phases ------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        def d_step(batch: Batch):
            terms = self.d_terms(batch.images)
            return {"loss": terms["loss_real"] + terms["loss_fake"], **terms}

        def g_step(batch: Batch):
            return {"loss": self.g_loss(batch.images.shape[0], batch.images.device)}

        if self.cfg.schedule == "threshold":
            return self._threshold_phases()
        return [Phase("d", "discriminator", d_step, repeats=self.cfg.d_steps),
                Phase("g", "generator", g_step)]

    def _threshold_phases(self) -> list[Phase]:
        """The livestream's schedule: update D on fakes only while that loss > 0.6, G while its
        loss > 0.5, D on reals while that loss > 0.45 (one host sync per phase)."""

        def d_fake(batch: Batch):
            loss = self.d_terms(batch.images)["loss_fake"]
            return {"loss": loss, "gate": loss > 0.6}

        def g_step(batch: Batch):
            loss = self.g_loss(batch.images.shape[0], batch.images.device)
            return {"loss": loss, "gate": loss > 0.5}

        def d_real(batch: Batch):
            loss = self.d_terms(batch.images)["loss_real"]
            return {"loss": loss, "gate": loss > 0.45}

        return [Phase("d_fake", "discriminator", d_fake), Phase("g", "generator", g_step),
                Phase("d_real", "discriminator", d_real)]
