"""DiscoGAN: unpaired cross-domain translation (Kim et al. 2017, arXiv 1703.05192).

Two generators G_AB: A -> B and G_BA: B -> A, and a discriminator per domain. Each
direction is trained with a GAN loss against the target domain's discriminator plus a
reconstruction loss through the other generator: A -> G_AB -> G_BA -> A. The
"reconstruction generators" of the paper's figure are the *same modules* applied again,
so one parameter update moves both the translation and the reconstruction.

Loss of one direction (official code): (1 - w) * [(1 - fm) * BCE + fm * feature matching]
+ w * recon, with the curriculum w = 0.01 for the first 10k steps, then 0.5. Ablations:
``variant = gan`` (no reconstruction), ``recongan`` (A -> B with A -> B -> A only),
``discogan`` (both). ``cyclegan = true`` switches to CycleGAN's settings (Zhu et al. 2017,
arXiv 1703.10593): least-squares GAN + 10 * L1 cycle loss.

Networks: MLPs (2 hidden x 256, ReLU) for the 2-D toys; for images a conv encoder-decoder
G (4 strided convs down, 4 transposed convs up, BN, LeakyReLU 0.2 / ReLU, tanh) and a
conv D (4 strided convs, BN, one logit) as in the official code, at 32x32, built from the
blocks of :mod:`genforge.nets`. The translation metrics live in :mod:`genforge.metrics.translation`,
the scatter plots and grids in :mod:`genforge.viz`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genforge import losses
from genforge.fields import check_ranges, opt
from genforge.errors import GenforgeError
from genforge.models.base import Batch, Capabilities, GenerativeModel, Phase
from genforge.nets import MLP, dcgan_init, down_block, frozen, relayout, up_block, up_to_image


@dataclass
class DiscoGANConfig:
    variant: str = opt("discogan", "gan (GAN loss only, both directions), recongan (A->B with A->B->A "
                       "reconstruction) or discogan (both directions, both reconstructions)",
                       ("gan", "recongan", "discogan"))
    arch: str = opt("auto", "networks: mlp (2-D points), conv (images) or auto (by the data)", ("auto", "mlp", "conv"))
    hidden: int = opt(256, "MLP width (2 hidden layers, ReLU)")
    width: int = opt(64, "conv base channel count (doubled at each of 4 layers)")
    gan_loss: str = opt("nonsaturating", "GAN loss: nonsaturating BCE, least_squares, or softplus_difference (the "
                        "livestream's D loss E[softplus(D(fake))] - E[softplus(D(real))], beside the nonsaturating G "
                        "loss: it has no lower bound, so D's loss falls without end and the curves go wild; to see "
                        "why, not to train with)", ("nonsaturating", "least_squares", "softplus_difference"))
    recon_loss: str = opt("mse", "reconstruction distance", ("mse", "l1"))
    cyclegan: bool = opt(False, "CycleGAN's settings instead: least-squares GAN + cycle_weight * L1 cycle, no curriculum")
    cycle_weight: float = opt(10.0, "CycleGAN's lambda on the L1 cycle loss (cyclegan=true only)")
    feature_matching: float = opt(0.0, "share fm of feature matching in the GAN term (official image code: 0.9)")
    recon_weight: float = opt(0.5, "w in (1 - w) GAN + w recon once the curriculum is over (official: 0.5)")
    recon_weight_start: float = opt(0.01, "w for the first curriculum_steps steps (official: 0.01)")
    curriculum_steps: int = opt(10000, "steps at recon_weight_start before recon_weight; 0 = no curriculum")
    g_steps: int = opt(1, "generator steps per discriminator step, each on a fresh batch")


# D's loss by model.gan_loss (G's: least squares for least_squares, else non-saturating BCE)
DISCRIMINATOR_LOSSES = {"nonsaturating": losses.d_bce, "least_squares": losses.d_least_squares,
                        "softplus_difference": losses.d_softplus_difference}


# --- networks -------------------------------------------------------------------------

class PointCritic(MLP):
    """(B, 2) -> (logit (B,), hidden features) for feature matching."""

    def __init__(self, dim_in: int, hidden: int):
        super().__init__(dim_in, hidden, 1)

    def features(self, x):
        logit, feats = super().features(x)
        return logit.squeeze(-1), feats

    def forward(self, x):
        return self.features(x)[0]


class ConvTranslator(nn.Module):
    """Encoder-decoder: (B, C, S, S) -> 4 x (conv 4/2, BN, lrelu) -> (B, 8w, S/16, S/16)
    -> 4 x (transposed conv 4/2, BN, ReLU; tanh last) -> (B, C, S, S)."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(*down_block(channels, w), *down_block(w, 2 * w, norm="batch"),
                                     *down_block(2 * w, 4 * w, norm="batch"), *down_block(4 * w, 8 * w, norm="batch"))
        up: list[nn.Module] = []
        for c_in, c_out in ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w)):
            up += up_block(c_in, c_out)
        self.decoder = nn.Sequential(*up, *up_to_image(w, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class ConvCritic(nn.Module):
    """(B, C, S, S) -> 4 x (conv 4/2, BN but on the first, lrelu) -> conv to one logit (B,);
    the activations of layers 2-4 are the feature-matching features (official code)."""

    def __init__(self, channels: int, width: int, image_size: int):
        super().__init__()
        w = width
        self.blocks = nn.ModuleList([nn.Sequential(*down_block(channels, w))] +
                                    [nn.Sequential(*down_block(c, 2 * c, norm="batch")) for c in (w, 2 * w, 4 * w)])
        self.out = nn.Conv2d(8 * w, 1, image_size // 16)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return self.out(x).flatten(), feats[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]


# --- the family ---------------------------------------------------------------------

class DiscoGAN(GenerativeModel):
    """G_AB, G_BA, D_A, D_B; reconstructions reuse G_AB and G_BA (shared weights)."""

    family = "discogan"
    Config = DiscoGANConfig
    two_domains = True

    # Ranges of the family's keys (one line each: key, value, what is allowed).
    RANGES = {"hidden": ">= 1", "width": ">= 1", "cycle_weight": ">= 0", "feature_matching": "[0, 1]",
              "recon_weight": "[0, 1]", "recon_weight_start": "[0, 1]", "curriculum_steps": ">= 0", "g_steps": ">= 1"}

    @classmethod
    def check_config(cls, cfg: Any, data_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> None:
        """Refuse a run config (a ``RunConfig``) this family cannot train, before anything is built or
        written (``genforge.config.validate`` calls it); ``data_shape`` adds the data's checks once known."""
        cls.check_model(cfg.model, data_shape)

    @classmethod
    def check_model(cls, cfg: DiscoGANConfig, data_shape: tuple[int, ...] | None = None) -> None:
        """The model section's checks, also run whenever the networks are built."""
        check_ranges(cfg, cls.RANGES, "model.")
        if cfg.cyclegan and cfg.gan_loss != "nonsaturating":
            raise GenforgeError(f"model.gan_loss={cfg.gan_loss} does not combine with model.cyclegan=true, whose GAN "
                                "loss is least squares: leave model.gan_loss at nonsaturating")
        if data_shape is None:
            return
        points = len(data_shape) == 1
        if cfg.arch == "mlp" and not points:
            raise GenforgeError("model.arch=mlp is for 2-D point data; use conv for images")
        if cfg.arch == "conv" and points:
            raise GenforgeError("model.arch=conv needs images; the toy datasets need mlp (or auto)")
        if not points and data_shape[1] % 16:
            raise GenforgeError(f"the conv DiscoGAN needs an image size divisible by 16 (data.image_size=32), "
                                f"not {data_shape[1]}")

    def __init__(self, cfg: DiscoGANConfig, image_shape: tuple[int, ...], num_classes: int):
        super().__init__(cfg, image_shape, num_classes)
        self.check_model(cfg, image_shape)
        self.points = len(image_shape) == 1  # toy data: float points (B, D) instead of images
        arch = cfg.arch if cfg.arch != "auto" else ("mlp" if self.points else "conv")
        if arch == "mlp":
            dim = int(np.prod(image_shape))
            self.G_AB, self.G_BA = MLP(dim, cfg.hidden, dim), MLP(dim, cfg.hidden, dim)
            self.D_A, self.D_B = PointCritic(dim, cfg.hidden), PointCritic(dim, cfg.hidden)
        else:
            channels, size, _ = image_shape
            self.G_AB, self.G_BA = ConvTranslator(channels, cfg.width), ConvTranslator(channels, cfg.width)
            self.D_A, self.D_B = ConvCritic(channels, cfg.width, size), ConvCritic(channels, cfg.width, size)
            dcgan_init(self)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))  # curriculum clock, resumed with the weights

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(data="points" if self.points else "images", latent=False, translator=True)

    def optimizer_groups(self):
        return {"generator": [*self.G_AB.parameters(), *self.G_BA.parameters()],
                "discriminator": [*self.D_A.parameters(), *self.D_B.parameters()]}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() if images.is_floating_point() else super().prepare(images)

    # --- translation ----------------------------------------------------------------
    def translators(self, direction: str) -> tuple[nn.Module, nn.Module]:
        """(forward, backward) generators of ``a2b`` or ``b2a``."""
        if direction == "a2b":
            return self.G_AB, self.G_BA
        if direction == "b2a":
            return self.G_BA, self.G_AB
        raise GenforgeError(f"unknown direction '{direction}'; use a2b or b2a")

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "a2b") -> tuple[torch.Tensor, torch.Tensor]:
        """Network-space inputs -> (translations, reconstructions), both in network space."""
        forward, backward = self.translators(direction)
        fake = forward(x)
        return fake, backward(fake)

    def sample_noise(self, n, generator=None, device=None):
        raise GenforgeError("a DiscoGAN translates images rather than sampling noise: use `genforge translate RUN_DIR`")

    def fixed_inputs(self, data: Any, n: int, generator: torch.Generator) -> torch.Tensor:
        """Points: every training point of A then of B. Images: n/4 of A then n/4 of B, chosen by
        ``generator``; ``generate`` shows each beside its translation."""
        from genforge.data.datasets import resize_images

        if self.points:
            return torch.cat([self.prepare(data.images), self.prepare(data.images_b)])
        half = n // 4
        pick_a = torch.randperm(len(data.images), generator=generator)[:half]
        pick_b = torch.randperm(len(data.images_b), generator=generator)[:half]
        size = self.image_shape[-1]
        return torch.cat([self.prepare(resize_images(data.images[pick_a], size)),
                          self.prepare(resize_images(data.images_b[pick_b], size))])

    def generate(self, inputs: torch.Tensor) -> torch.Tensor:
        """Fixed inputs (A half, then B half) -> a progress picture in [0, 1]: pairs (source,
        translation) for images, (B, 2n, ...); for points one rendered scatter plot (1, 3, H, W)."""
        half = inputs.shape[0] // 2
        a, b = inputs[:half], inputs[half:]
        fake_b, fake_a = self.G_AB(a), self.G_BA(b)
        if self.points:
            from genforge import viz

            return viz.translation_progress(a, b, fake_b, fake_a)
        pairs = torch.stack([torch.cat([a, b]), torch.cat([fake_b, fake_a])], dim=1)  # (2 half, 2, C, H, W)
        return self.to_unit(pairs.flatten(0, 1))

    # --- losses ---------------------------------------------------------------------
    def recon_weight(self) -> torch.Tensor:
        """The curriculum: recon_weight_start for curriculum_steps steps, then recon_weight (no host sync)."""
        cfg = self.cfg
        device = self.iteration.device
        return torch.where(self.iteration < cfg.curriculum_steps, torch.tensor(cfg.recon_weight_start, device=device),
                           torch.tensor(cfg.recon_weight, device=device))

    def _least_squares(self) -> bool:
        return self.cfg.cyclegan or self.cfg.gan_loss == "least_squares"

    def _recon(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.cfg.cyclegan or self.cfg.recon_loss == "l1":
            return F.l1_loss(output, target)
        return F.mse_loss(output, target)

    def _directions(self, batch: Batch):
        """(name, source, target-domain real, forward G, backward G, target D, source domain letter)."""
        a, b = batch.images, batch.images_b
        if b is None:
            raise GenforgeError("DiscoGAN needs a two-domain dataset (fashion-bags-shoes, gmm-discogan, gmm-ring)")
        both = [("a2b", a, b, self.G_AB, self.G_BA, self.D_B, "a"), ("b2a", b, a, self.G_BA, self.G_AB, self.D_A, "b")]
        return both[:1] if self.cfg.variant == "recongan" else both

    def g_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        w = self.recon_weight()
        terms: dict[str, torch.Tensor] = {}
        total = 0.0
        for name, source, real, forward, backward, critic, letter in self._directions(batch):
            fake = forward(source)
            with frozen(critic):  # D is not updated here, but gradients flow through it
                fake_logits, fake_feats = critic.features(fake)
                gan = (losses.g_least_squares if self._least_squares() else losses.g_nonsaturating)(fake_logits)
                if cfg.feature_matching > 0:  # Salimans et al. 2016 / official DiscoGAN code
                    with torch.no_grad():
                        _, real_feats = critic.features(real)
                    # (the batch means' gradients come back channels-last where the features are, so that
                    # they sum with the next layer's in one layout: see relayout)
                    matching = sum(F.mse_loss(relayout(f, torch.contiguous_format).mean(0), r.mean(0))
                                   for f, r in zip(fake_feats, real_feats))
                    terms[f"fm_{name}"] = matching
                    gan = (1 - cfg.feature_matching) * gan + cfg.feature_matching * matching
            terms[f"gan_{name}"] = gan
            if cfg.variant == "gan":
                total = total + gan
                continue
            recon = self._recon(backward(fake), source)  # the same G modules: A -> B -> A
            terms[f"recon_{letter}"] = recon
            total = total + (gan + cfg.cycle_weight * recon if cfg.cyclegan else (1 - w) * gan + w * recon)
        return {"loss": total, **terms}

    def d_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        total = 0.0
        d_loss = losses.d_least_squares if self._least_squares() else DISCRIMINATOR_LOSSES[self.cfg.gan_loss]
        for name, source, real, forward, _, critic, _ in self._directions(batch):
            with torch.no_grad():
                fake = forward(source)
            real_logits, fake_logits = critic(real), critic(fake)  # separate passes: same BN statistics as G's step
            loss = d_loss(real_logits, fake_logits)
            terms[f"d_{name}"] = loss
            total = total + loss
        return {"loss": total, **terms}

    def phases(self) -> list[Phase]:
        def d_step(batch: Batch):
            self.iteration += 1  # one per training step: the curriculum's clock
            return self.d_terms(batch)

        return [Phase("d", "discriminator", d_step), Phase("g", "generator", self.g_terms, repeats=self.cfg.g_steps)]

    def triplets(self, source: torch.Tensor, direction: str) -> torch.Tensor:
        """Network-space images (B, C, H, W) -> rows source | translation | reconstruction in [0, 1], (3B, C, H, W)."""
        fake, recon = self.translate(source, direction)
        return self.to_unit(torch.stack([source, fake, recon], dim=1).flatten(0, 1)).cpu()

    def translate_batches(self, x: torch.Tensor, direction: str, chunk: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`translate` ``chunk`` inputs at a time; (translations, reconstructions) on the CPU."""
        parts = [self.translate(x[i:i + chunk], direction) for i in range(0, len(x), chunk)]
        return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()
