"""The GAN family: DCGAN, the TensorFlow livestream's network, MLPs on toy points; every loss.

Goodfellow et al. 2014 (arXiv 1406.2661) for the game; Radford et al. 2015 (DCGAN,
arXiv 1511.06434) for the networks: strided (transposed) convolutions, batch norm
(not on D's first layer), ReLU in G, LeakyReLU(0.2) in D, tanh output, weights from
N(0, 0.02), Adam 2e-4 with beta1 0.5.

Losses by ``model.loss`` (pure functions in :mod:`genforge.losses`): the BCE game with the
minimax or non-saturating G loss, least squares (Mao et al. 2017), hinge (Lim & Ye 2017),
Wasserstein with weight clipping (Arjovsky et al. 2017) and WGAN-GP (Gulrajani et al.
2017, whose critic has no batch norm: ``d_norm=auto`` gives it layer norm). Conditional
GANs (Mirza & Osindero 2014, arXiv 1411.1784): z is joined by the one-hot class, and D
sees the class as extra input maps (``concat``) or by projection (Miyato & Koyama 2018,
arXiv 1802.05637). On toy points (N, D) both networks are MLPs (``arch=mlp``). Shared blocks
come from :mod:`genforge.nets`; the metrics and end-of-run pictures of a trained GAN are
registered in :mod:`genforge.metrics.registry` and :mod:`genforge.viz`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genforge import losses
from genforge.fields import check_ranges, opt
from genforge.errors import GenforgeError
from genforge.models.base import Batch, Capabilities, GenerativeModel, Phase
from genforge.nets import (KERNELS, FlattenFrom, Maxout, dcgan_init, down_block, frozen, memory_format_of, relayout,
                           computes_bf16_on_cpu, split_batches, stride2_padding, up_block, up_to_image)

JOINT_PASSES = [True]  # False: D's real and fake batches always in two passes (benches and tests compare them)


def _joint_pays(x: torch.Tensor) -> bool:
    """Where one pass over D's two batches was measured faster (bench/README.md, Zen 4): a CPU computing
    in bf16 (x1.02-1.04); in float32 the 32x32 DCGAN's lost (x0.94-0.97), and no GPU was measured."""
    return computes_bf16_on_cpu(x)


BCE_LOSSES = ("nonsaturating", "minimax")  # the BCE game of Goodfellow et al.: D outputs logits
REJECT_POOL = 10_000  # model.reject: samples whose D logits set the acceptance threshold


@dataclass
class GANConfig:
    arch: str = opt("dcgan", "networks: dcgan (Radford et al.), livestream (the original TF code) or mlp (toy points)",
                    ("dcgan", "livestream", "mlp"))
    latent_dim: int = opt(100, "size of the noise vector z")
    width: int = opt(64, "DCGAN base channel count (D's first layer; G's last hidden layer)")
    g_width: int = opt(0, "G's last hidden layer's channels when they differ from D's (ngf beside ndf; the widely "
                       "copied 32x32 DCGAN has 128: G 512-256-128); 0 = width")
    kernel: int = opt(4, "DCGAN kernel size of every strided (transposed) conv, 3 to 7: 4 as Radford et al., "
                      "5 as the TensorFlow DCGAN / Pokemon WGAN code")
    noise: str = opt("gaussian", "distribution of z: gaussian N(0, 1); uniform U(-1, 1); uniform01 U(0, 1) (the GAN "
                     "lecture's 'between zero and one'); truncated N(0, 1) within +-2, resampled as TF's "
                     "truncated_normal; truncated_clamp N(0, 1) clamped to +-2 (what truncated drew before 2026-12: "
                     "its old runs resume and sample alike with it)",
                     ("gaussian", "uniform", "uniform01", "truncated", "truncated_clamp"))
    loss: str = opt("nonsaturating", "the game: BCE with G loss nonsaturating -log D(G(z)) or minimax "
                    "log(1 - D(G(z))); least_squares; hinge; wasserstein (weight clipping); wgan-gp",
                    ("nonsaturating", "minimax", "least_squares", "hinge", "wasserstein", "wgan-gp"))
    clip: float = opt(0.01, "WGAN weight clipping bound of the critic (loss=wasserstein only); 0 = off")
    gp_weight: float = opt(10.0, "gradient penalty weight lambda (loss=wgan-gp only)")
    r1_gamma: float = opt(0.0, "R1 penalty gamma on real data (Mescheder et al. 2018), any loss; 0 = off")
    d_norm: str = opt("auto", "normalisation in D's hidden layers; auto = batch (dcgan) / none (mlp), "
                      "layer for wgan-gp", ("auto", "batch", "none", "layer", "instance"))
    real_label: float = opt(1.0, "target for real images in D's loss (0.9 = one-sided label smoothing)")
    d_steps: int = opt(1, "discriminator steps per generator step")
    reuse_fakes: bool = opt(True, "G's step learns from the fakes D's step just judged (one G forward a step, as the "
                            "DCGAN reference code does) instead of drawing new noise (Goodfellow et al.'s "
                            "Algorithm 1); d_steps=1 and schedule=alternate only")
    schedule: str = opt("alternate", "alternate D and G steps, or threshold-gate them as the livestream did",
                        ("alternate", "threshold"))
    pack: int = opt(1, "PacGAN packing (Lin et al. 2018): D judges packs of this many samples joined together "
                    "(points side by side, images along channels); train.batch_size must divide by it")
    top_k: float = opt(1.0, "top-k generator updates (Sinha et al. 2020): G learns from only this share of each "
                       "batch's fakes, the ones D scores most real; 1 = from all of them")
    top_k_until: float = opt(1.0, "share of train.steps during which top_k applies; G learns from every fake after it "
                              "(a --minutes run without train.steps: throughout)")
    reject: float = opt(0.0, "discriminator rejection sampling (Azadi et al. 2019) when sampling: keep a sample with "
                        "probability min(1, exp(logit - t)), t the quantile `reject` of D's logits over 10,000 samples "
                        "(e.g. 0.99); BCE losses, unpacked, unconditional; 0 = off")
    hidden: int = opt(256, "MLP width (arch=mlp)")
    layers: int = opt(3, "MLP hidden layers of G and D (arch=mlp)")
    g_norm: str = opt("none", "normalisation in the MLP generator's hidden layers (arch=mlp; PacGAN: batch)",
                      ("none", "batch"))
    maxout: int = opt(1, "MLP discriminator: maxout units of this many pieces instead of LeakyReLU (arch=mlp; "
                      "PacGAN: 5); 1 = LeakyReLU 0.2")
    conditional: str = opt("none", "class-conditional GAN: none, concat (labels joined to D's input) or "
                           "projection (Miyato & Koyama); G always gets the one-hot label beside z",
                           ("none", "concat", "projection"))
    class_histogram: bool = opt(False, "log the evaluation classifier's class histogram of 1,000 samples at every "
                                "checkpoint (mode collapse over training; MNIST / Fashion-MNIST)")


TRUNCATION = 2.0  # model.noise=truncated: |z| <= 2 standard deviations, as TF's truncated_normal


def draw_noise(kind: str, shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    """Noise of ``model.noise`` kind ``kind``. ``truncated`` is N(0, 1) conditioned on |z| <= 2, the
    distribution TF's truncated_normal gets by resampling values beyond 2: here by the inverse CDF
    of a uniform draw between Phi(-2) and Phi(2), which gives it without a loop or a host sync.
    ``truncated_clamp`` piles the tails onto +-2 (4.6% of values), as genforge once did."""
    if kind in ("uniform", "uniform01"):
        z = torch.rand(shape, generator=generator, device=device)
        return z if kind == "uniform01" else z * 2 - 1
    if kind == "truncated":
        low = 0.5 * math.erfc(TRUNCATION / math.sqrt(2))  # Phi(-2)
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        return torch.special.ndtri(low + u * (1 - 2 * low)).float()
    z = torch.randn(shape, generator=generator, device=device)
    return z.clamp(-TRUNCATION, TRUNCATION) if kind == "truncated_clamp" else z


def _fits_dcgan(image_size: int) -> bool:
    """Whether the DCGAN networks reach ``image_size``: 7 or 4 times a power of two (at least 2)."""
    return any(image_size % base == 0 and image_size // base >= 2 and (image_size // base).bit_count() == 1
               for base in (7, 4))


def _base_size(image_size: int) -> int:
    """Side of G's first feature map: 7 for 28 px (7 -> 14 -> 28), else 4 (4 -> 8 -> ... -> size)."""
    for base in (7, 4):
        ups = math.log2(image_size / base)
        if ups >= 1 and ups == int(ups):
            return base
    raise ValueError(f"image size {image_size} is not 7 or 4 times a power of two (use 28, 32 or 64)")


class DCGANGenerator(nn.Module):
    """z (B, latent) -> FC -> (B, C0, s, s) -> transposed convs (BN, ReLU) -> tanh (B, C, H, W).

    Each transposed conv has stride 2 and ``kernel`` x ``kernel`` weights (padding from
    :func:`stride2_padding`); the number of them grows with the image size."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int, kernel: int = 4):
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
            blocks += up_block(ch, ch // 2, kernel)
            ch //= 2
        blocks += up_to_image(ch, channels, kernel)
        self.main = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        maps = self.project[:2](z)  # FC, unflattened: (B, C0, s, s) NCHW
        maps = relayout(maps, memory_format_of(self.main[0].weight))  # the convs' layout, for BN and ReLU too
        return self.main(self.project[2:](maps))


class DCGANDiscriminator(nn.Module):
    """(B, C, H, W) -> strided convs (norm on all but the first, LeakyReLU 0.2) -> one logit (B,).

    Conditional (``num_classes`` > 0): ``concat`` adds the one-hot label as K constant input
    maps; ``projection`` adds <embed(y), h> to the logit, h the flattened last features.
    Every conv has stride 2 and ``kernel`` x ``kernel`` weights."""

    def __init__(self, channels: int, image_size: int, width: int, norm: str = "batch",
                 num_classes: int = 0, conditional: str = "none", kernel: int = 4):
        super().__init__()
        self.conditional, self.num_classes = conditional, num_classes
        extra = num_classes if conditional == "concat" else 0
        layers = down_block(channels + extra, width, kernel)
        ch, size = width, image_size // 2
        while size > 4 and size % 2 == 0 and size // 2 >= 4:
            layers += down_block(ch, ch * 2, kernel, norm)
            ch, size = ch * 2, size // 2
        self.main = nn.Sequential(*layers, FlattenFrom(), nn.Linear(ch * size * size, 1))
        if conditional == "projection":
            self.embed = nn.Embedding(num_classes, ch * size * size)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional == "concat":
            maps = F.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]  # (B, K, 1, 1)
            x = torch.cat([x, maps.expand(-1, -1, *x.shape[-2:])], dim=1)
        if self.conditional == "projection":
            features = self.main[:-1](x)  # (B, F)
            return self.main[-1](features).squeeze(-1) + (self.embed(labels) * features).sum(1)
        return self.main(x).squeeze(-1)


class MLPGenerator(nn.Module):
    """z (B, latent) -> ``layers`` x (Linear, [BN], ReLU) of ``hidden`` units -> a point (B, D), no squashing."""

    def __init__(self, latent_dim: int, dim: int, hidden: int, layers: int, norm: str = "none"):
        super().__init__()
        blocks: list[nn.Module] = []
        width = latent_dim
        for _ in range(layers):
            if norm == "batch":
                blocks += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(True)]
            else:
                blocks += [nn.Linear(width, hidden), nn.ReLU(True)]
            width = hidden
        self.main = nn.Sequential(*blocks, nn.Linear(width, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class MLPDiscriminator(nn.Module):
    """A point (B, D) -> ``layers`` x (Linear, [norm], LeakyReLU 0.2) or x maxout units -> one logit (B,)."""

    def __init__(self, dim: int, hidden: int, layers: int, norm: str = "none", maxout: int = 1):
        super().__init__()
        blocks: list[nn.Module] = []
        width = dim
        for _ in range(layers):
            normaliser = {"batch": nn.BatchNorm1d(hidden), "layer": nn.LayerNorm(hidden)}.get(norm, nn.Identity())
            if maxout > 1:
                blocks += [Maxout(width, hidden, maxout), normaliser]
            else:
                blocks += [nn.Linear(width, hidden), normaliser, nn.LeakyReLU(0.2, True)]
            width = hidden
        self.main = nn.Sequential(*blocks, nn.Linear(width, 1))

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
        # The last 1x1 stride-2 conv runs in NCHW, maps and weight: in float32, oneDNN's backward of
        # it aborted or corrupted memory whenever either was channels-last (torch 2.13, 4-8 -> 1 at 56x56).
        maps = relayout(self.main[:-2](z), torch.contiguous_format)
        last = self.main[-2]
        out = F.conv2d(maps, last.weight.clone(memory_format=torch.contiguous_format), last.bias, last.stride)
        return self.main[-1](out)


class LivestreamDiscriminator(nn.Module):
    """The livestream's D: conv 5x5 x32, ReLU, avg-pool 2 -> conv 5x5 x64, ReLU, avg-pool 2
    -> FC 1024 (ReLU) -> FC 1 logit."""

    def __init__(self, channels: int, image_size: int):
        super().__init__()
        quarter = image_size // 4
        self.main = nn.Sequential(
            nn.Conv2d(channels, 32, 5, 1, 2), nn.ReLU(True), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 5, 1, 2), nn.ReLU(True), nn.AvgPool2d(2),
            FlattenFrom(), nn.Linear(64 * quarter * quarter, 1024), nn.ReLU(True), nn.Linear(1024, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).squeeze(-1)


class GAN(GenerativeModel):
    """Generator + discriminator (critic) playing the game named by ``model.loss``."""

    family = "gan"
    Config = GANConfig
    ema_networks = ("generator",)

    # Ranges of the family's keys that the checks below do not cover (one line each: key, value, what is allowed).
    RANGES = {"latent_dim": ">= 1", "clip": ">= 0", "gp_weight": ">= 0", "r1_gamma": ">= 0", "real_label": "(0, 1]",
              "d_steps": ">= 1", "hidden": ">= 1", "layers": ">= 1"}

    @classmethod
    def uncompilable(cls, cfg: GANConfig) -> str:
        """A gradient penalty (WGAN-GP's, R1's): compiled steps cannot backpropagate through it."""
        if cfg.loss != "wgan-gp" and cfg.r1_gamma == 0:
            return ""
        penalty = "model.loss=wgan-gp" if cfg.loss == "wgan-gp" else f"model.r1_gamma={cfg.r1_gamma}"
        return (f"{penalty} backpropagates through a gradient, which torch.compile cannot (aot_autograd has no "
                "double backward)")

    @classmethod
    def check_config(cls, cfg: Any, data_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> None:
        """Refuse a run config (a ``RunConfig``) this family cannot train, before anything is built or
        written (``genforge.config.validate`` calls it); ``data_shape`` ((C, H, W) images or (D,) points)
        and ``num_classes`` add the checks that need the data, once it is known."""
        cls.check_model(cfg.model, data_shape, num_classes)
        if cfg.train.batch_size % cfg.model.pack:
            raise GenforgeError(f"model.pack={cfg.model.pack} needs train.batch_size divisible by it, not "
                                f"{cfg.train.batch_size}: set train.batch_size to a multiple of {cfg.model.pack}")

    @classmethod
    def check_model(cls, cfg: GANConfig, data_shape: tuple[int, ...] | None = None,
                    num_classes: int | None = None) -> None:
        """The model section's checks, also run whenever the networks are built."""
        check_ranges(cfg, cls.RANGES, "model.")
        conditional = cfg.conditional != "none"
        if cfg.schedule == "threshold" and cfg.loss not in BCE_LOSSES:
            raise GenforgeError(f"schedule=threshold gates on BCE losses; it does not fit loss={cfg.loss}")
        if conditional and num_classes is not None and num_classes < 2:
            raise GenforgeError("a conditional GAN needs labelled data with at least 2 classes")
        if data_shape is not None and (len(data_shape) == 1) != (cfg.arch == "mlp"):
            raise GenforgeError("arch=mlp is for toy points (N, D) and toy points need arch=mlp; "
                                f"this data has shape {tuple(data_shape)}")
        if conditional and cfg.arch != "dcgan":
            raise GenforgeError(f"model.conditional={cfg.conditional} is implemented for arch=dcgan only")
        if cfg.pack < 1 or (cfg.pack > 1 and (conditional or cfg.arch == "livestream")):
            raise GenforgeError(f"model.pack={cfg.pack}: packing takes 1 or more, on unconditional dcgan or mlp nets")
        if not 0 < cfg.top_k <= 1 or not 0 <= cfg.top_k_until <= 1:
            raise GenforgeError(f"model.top_k must be in (0, 1] and model.top_k_until in [0, 1], not {cfg.top_k} and "
                                f"{cfg.top_k_until}")
        cls.check_reject(cfg, cfg.reject)
        if cfg.width < 1 or cfg.g_width < 0:
            raise GenforgeError(f"model.width must be at least 1 and model.g_width 0 (= width) or more, not "
                                f"{cfg.width} and {cfg.g_width}")
        if cfg.kernel not in KERNELS:
            raise GenforgeError(f"model.kernel must be {KERNELS.start} to {KERNELS.stop - 1}, not {cfg.kernel}")
        if cfg.arch == "mlp" and cfg.d_norm == "instance":
            raise GenforgeError("model.d_norm=instance needs images; use none, layer or batch with arch=mlp")
        if cfg.maxout < 1:
            raise GenforgeError(f"model.maxout must be 1 (LeakyReLU) or more pieces, not {cfg.maxout}")
        if data_shape is not None and len(data_shape) == 3:
            size = data_shape[1]
            if cfg.arch == "livestream" and size % 4:
                raise GenforgeError(f"data.image_size={size}: the livestream networks need a size divisible by 4")
            if cfg.arch == "dcgan" and not _fits_dcgan(size):
                raise GenforgeError(f"data.image_size={size}: the dcgan networks need 7 or 4 times a power of two "
                                    "(e.g. 28, 32 or 64)")

    @staticmethod
    def check_reject(cfg: GANConfig, quantile: float) -> None:
        """Refuse a rejection-sampling quantile this GAN cannot use (at config time and at sampling time)."""
        if not 0 <= quantile < 1:
            raise GenforgeError(f"model.reject is a quantile in [0, 1) (0 = off, e.g. 0.99), not {quantile}")
        if quantile and (cfg.loss not in BCE_LOSSES or cfg.pack > 1 or cfg.conditional != "none"):
            raise GenforgeError("model.reject reads D's logit as log p_data/p_G: it needs a BCE loss (nonsaturating or "
                                "minimax), model.pack=1 and an unconditional GAN")

    def __init__(self, cfg: GANConfig, image_shape: tuple[int, ...], num_classes: int):
        super().__init__(cfg, image_shape, num_classes)
        self.check_model(cfg, image_shape, num_classes)
        self.points = len(image_shape) == 1  # toy data: float points (B, D) instead of images
        self.classes = num_classes if cfg.conditional != "none" else 0  # one-hot entries joined to z
        self.progress = 0.0
        self._joint_passes = cfg.arch == "dcgan"  # D's real and fake batches as one pass (DCGANDiscriminator)
        norm = cfg.d_norm
        if norm == "auto":
            norm = "layer" if cfg.loss == "wgan-gp" else ("none" if self.points else "batch")
        if cfg.arch == "mlp":
            self.generator = MLPGenerator(cfg.latent_dim, image_shape[0], cfg.hidden, cfg.layers, cfg.g_norm)
            self.discriminator = MLPDiscriminator(image_shape[0] * cfg.pack, cfg.hidden, cfg.layers, norm, cfg.maxout)
            return
        channels, size, _ = image_shape
        if cfg.arch == "livestream":
            self.generator = LivestreamGenerator(cfg.latent_dim, channels, size)
            self.discriminator = LivestreamDiscriminator(channels, size)
            self.output_range = "sigmoid"  # the original's G ends in a sigmoid: data scaled to [0, 1]
        else:
            self.generator = DCGANGenerator(cfg.latent_dim + self.classes, channels, size, cfg.g_width or cfg.width,
                                            cfg.kernel)
            self.discriminator = DCGANDiscriminator(channels * cfg.pack, size, cfg.width, norm, num_classes, cfg.conditional,
                                                    cfg.kernel)
            dcgan_init(self)
            if cfg.conditional == "projection":
                nn.init.normal_(self.discriminator.embed.weight, 0.0, 0.02)

    @property
    def capabilities(self) -> Capabilities:
        rejection = self.cfg.loss in BCE_LOSSES and self.cfg.pack == 1 and not self.classes
        return Capabilities(data="points" if self.points else "images", classes=self.classes, rejection=rejection)

    def optimizer_groups(self):
        return {"generator": list(self.generator.parameters()),
                "discriminator": list(self.discriminator.parameters())}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() if self.points else super().prepare(images)

    def sample_noise(self, n, generator=None, device=None, labels: torch.Tensor | None = None):
        """z (n, latent_dim) from ``model.noise``; a conditional GAN's noise is [z, one-hot(labels)]
        (n, latent_dim + K), ``labels`` uniform over the classes unless given."""
        device = device or "cpu"
        where = generator.device if generator is not None else device  # a CPU generator draws on the CPU
        z = draw_noise(self.cfg.noise, (n, self.cfg.latent_dim), generator, where)
        if self.classes:
            if labels is None:
                labels = torch.randint(self.classes, (n,), generator=generator, device=where)
            z = torch.cat([z, F.one_hot(labels.to(where).long(), self.classes).to(z.dtype)], dim=1)
        return z.to(device)

    def noise_labels(self, noise: torch.Tensor) -> torch.Tensor | None:
        """The class a conditional GAN's noise asks for (argmax of its one-hot part), else None."""
        return noise[:, self.cfg.latent_dim:].argmax(1) if self.classes else None

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        """Noise -> images in [0, 1] (B, C, H, W); on toy data the points themselves (B, D)."""
        return self._output(self.generator(noise))

    def _output(self, raw: torch.Tensor) -> torch.Tensor:
        return raw if self.points else self.to_unit(raw)

    @property
    def progress(self) -> float:
        return self._progress

    @progress.setter
    def progress(self, value: float) -> None:
        # top_k reads a bool that flips at most once, not the float (torch.compile would
        # specialise on the float and recompile at every step)
        self._progress = value
        self._top_k_on = self.cfg.top_k < 1 and value < self.cfg.top_k_until

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, batch_size: int = 500,
               reject: float | None = None) -> torch.Tensor:
        """``n`` samples on the CPU; with a rejection quantile (``reject``, None = ``model.reject``;
        0 = off), those that discriminator rejection sampling keeps."""
        quantile = self.cfg.reject if reject is None else reject
        if not quantile:
            return super().sample(n, generator, batch_size)
        self.check_reject(self.cfg, quantile)
        device = next(self.parameters()).device
        pool, threshold, kept, count = [], None, [], 0  # the first REJECT_POOL samples' logits set the threshold
        with self.eval_mode():
            while count < n:
                raw = self.generator(self.sample_noise(batch_size, generator, device))
                pool.append((raw, self._logit(raw)))
                if threshold is None:
                    if len(pool) * batch_size < REJECT_POOL:
                        continue
                    threshold = torch.cat([logits for _, logits in pool]).quantile(quantile)
                for raw, logits in pool:
                    chosen = raw[self._accept(logits, threshold, generator)]
                    kept.append(self._output(chosen).cpu())
                    count += chosen.shape[0]
                pool = []
        return torch.cat(kept)[:n]

    def _logit(self, raw: torch.Tensor) -> torch.Tensor:
        """D's logit (N,) float32 of an unconditional GAN's raw samples: what rejection reads."""
        return self._critic(raw, None).reshape(-1).float()

    @staticmethod
    def _accept(logits: torch.Tensor, threshold: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """DRS's acceptance: True with probability min(1, exp(logit - threshold)), D's logit being
        log p_data(x) / p_G(x) up to a constant for an optimal BCE discriminator."""
        where = generator.device if generator is not None else logits.device
        uniform = torch.rand(logits.shape[0], generator=generator, device=where).to(logits.device)
        return uniform < (logits - threshold).clamp(max=0.0).exp()

    # --- losses ----------------------------------------------------------------------
    def _critic(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.discriminator(x, labels) if self.classes else self.discriminator(x)

    def _pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B/m, m*D) points, (B, C, H, W) -> (B/m, m*C, H, W) images: m = model.pack
        consecutive samples become one input of D."""
        m = self.cfg.pack
        if m == 1:
            return x
        if x.shape[0] % m:
            raise GenforgeError(f"model.pack={m} needs batches divisible by {m}, not {x.shape[0]}: "
                                f"set train.batch_size to a multiple of {m}")
        return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])

    def _fake(self, n: int, device: torch.device, labels: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        noise = self.sample_noise(n, device=device, labels=labels)
        return self.generator(noise), self.noise_labels(noise)

    def d_terms(self, real: torch.Tensor, labels: torch.Tensor | None = None,
                fakes: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
        """D's loss ``loss_adv`` (+ penalties ``gp``, ``r1``) and its mean outputs ``d_real``, ``d_fake``.

        BCE losses also give ``loss_real`` (target ``real_label``), ``loss_fake`` (target 0) and
        ``value``, the value function E log D(x) + E log(1 - D(G(z))) (-log 4 at the optimum);
        Wasserstein losses give ``wdist``, the critic's estimate E D(x) - E D(G(z)).
        A conditional GAN's fakes ask for the real batch's ``labels``. ``fakes``, if given, are
        G's output and labels from :meth:`_fake` (D sees them detached); else D draws its own."""
        if fakes is None:
            with torch.no_grad():
                fake, fake_labels = self._fake(real.shape[0], real.device, labels if self.classes else None)
        else:
            fake, fake_labels = fakes[0].detach(), fakes[1]
        # Each batch by its own BN statistics, so those of a fake batch are the same here as in G's
        # step (one plainly concatenated pass would let D separate by batch statistics G never sees):
        # a conv D runs both as one pass whose batch norm splits them (larger matrix products).
        real, fake = self._pack(real), self._pack(fake)
        if self._joint_passes and JOINT_PASSES[0] and _joint_pays(real):
            both_labels = None if labels is None else torch.cat([labels, fake_labels])
            with split_batches([real.shape[0], fake.shape[0]]):
                real_out, fake_out = self._critic(torch.cat([real, fake]), both_labels).split(
                    [real.shape[0], fake.shape[0]])
        else:
            real_out = self._critic(real, labels)
            fake_out = self._critic(fake, fake_labels)
        loss = self.cfg.loss
        if loss in BCE_LOSSES:
            loss_real = F.binary_cross_entropy_with_logits(real_out, torch.full_like(real_out, self.cfg.real_label))
            loss_fake = F.softplus(fake_out).mean()  # BCE with target 0
            terms = {"loss_real": loss_real, "loss_fake": loss_fake, "loss_adv": loss_real + loss_fake,
                     "value": -(F.softplus(-real_out).mean() + loss_fake),  # log sigmoid(r) = -softplus(-r)
                     "d_real": torch.sigmoid(real_out).mean(), "d_fake": torch.sigmoid(fake_out).mean()}
        else:
            name = "wasserstein" if loss == "wgan-gp" else loss
            terms = {"loss_adv": losses.D_LOSSES[name](real_out, fake_out),
                     "d_real": real_out.mean(), "d_fake": fake_out.mean()}
            if name == "wasserstein":
                terms["wdist"] = (real_out.mean() - fake_out.mean()).detach()
        if loss == "wgan-gp":  # fakes keep the real labels, so the interpolates have one class
            terms["gp"] = losses.gradient_penalty(lambda x: self._critic(x, labels), real, fake, self.cfg.gp_weight)
        if self.cfg.r1_gamma > 0:
            terms["r1"] = losses.r1_penalty(lambda x: self._critic(x, labels), real, self.cfg.r1_gamma)
        return terms

    def g_loss(self, n: int, device: torch.device,
               fakes: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
        """G's loss on ``n`` new fakes, or on ``fakes`` (G's output with its graph, and labels)."""
        name = "wasserstein" if self.cfg.loss == "wgan-gp" else self.cfg.loss
        with frozen(self.discriminator):  # D is not updated, but gradients flow through it
            fake, labels = fakes if fakes is not None else self._fake(n, device)
            fake_out = self._critic(self._pack(fake), labels)
        if self._top_k_on:  # the fakes D finds most real
            fake_out = fake_out.reshape(-1)
            fake_out = fake_out.topk(max(1, round(self.cfg.top_k * fake_out.shape[0]))).values
        return losses.G_LOSSES[name](fake_out)

    # --- phases ------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        if self.cfg.schedule == "threshold":
            return self._threshold_phases()
        reuse = self.cfg.reuse_fakes and self.cfg.d_steps == 1
        kept: list = []  # D's step leaves its fakes (with G's graph) here for the G step that follows
        # made in eager mode under train.compile: as outputs of the compiled D step, their graph would
        # be that step's, which D's backward runs (and frees) before G's step reaches it
        eager_fakes = torch.compiler.disable(self._fake)

        def d_step(batch: Batch):
            labels, fakes = batch.labels if self.classes else None, None
            if reuse:
                fakes = eager_fakes(batch.images.shape[0], batch.images.device, labels)
                kept[:] = [fakes]
            terms = self.d_terms(batch.images, labels, fakes)
            loss = terms["loss_adv"] + terms.get("gp", 0.0) + terms.get("r1", 0.0)
            return {"loss": loss, **terms}

        def g_step(batch: Batch):
            fakes = kept.pop() if kept else None
            return {"loss": self.g_loss(batch.images.shape[0], batch.images.device, fakes)}

        after = None
        if self.cfg.loss == "wasserstein" and self.cfg.clip > 0:  # Arjovsky et al.: clip after every critic step
            def after():
                losses.clip_weights(self.discriminator, self.cfg.clip)
        return [Phase("d", "discriminator", d_step, repeats=self.cfg.d_steps, after=after),
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

    # --- the loop's progress pictures (metrics and reports: genforge.metrics, genforge.viz) ---
    def fixed_inputs(self, data: Any, n: int, generator: torch.Generator) -> torch.Tensor:
        """Toy points: 2,500 noise vectors (a density needs more than a grid's 64). Conditional:
        classes 0, 1, ..., K-1, 0, ... so that each column of the progress grid is one class."""
        if self.points:
            from genforge.metrics.modes import SAMPLES

            return self.sample_noise(SAMPLES, generator, torch.device("cpu"))
        labels = torch.arange(n) % self.classes if self.classes else None
        return self.sample_noise(n, generator, torch.device("cpu"), labels=labels)

    def progress_image(self, fixed: torch.Tensor, data: Any) -> torch.Tensor:
        """Images: the grid of ``generate(fixed)`` (a column per class). Toy points: data against
        generated points, as rejection sampling keeps them when ``model.reject`` is on, with D's
        curve on 1-D data (:func:`genforge.viz.toy_progress`)."""
        from genforge import viz

        if not self.points:
            return viz.make_grid(self.generate(fixed).float().cpu(), nrow=self.classes or None)
        generated, note = self.generate(fixed), ""
        if self.cfg.reject:  # the points rejection sampling keeps, as sample() gives them
            logits = self._logit(generated)
            rng = torch.Generator(device=generated.device).manual_seed(0)  # never the training RNG
            generated = generated[self._accept(logits, logits.quantile(self.cfg.reject), rng)]
            note = f" (rejection keeps {generated.shape[0]})"
        return viz.toy_progress(data, generated, self.critic_curve if generated.shape[1] == 1 else None, note)

    def critic_curve(self, xs: torch.Tensor) -> tuple[torch.Tensor, str]:
        """D over 1-D points ``xs`` (N, 1): (D(x) for BCE games, else the critic's score (N,), its name)."""
        scores = self.discriminator(xs.repeat(1, self.cfg.pack))  # a pack of m copies of x
        if self.cfg.loss in BCE_LOSSES:
            return torch.sigmoid(scores), "D(x)"
        return scores, "critic(x)"

    # --- sampling by class ------------------------------------------------------------
    @torch.no_grad()
    def sample_labels(self, labels: torch.Tensor, generator: torch.Generator | None = None,
                      batch_size: int = 500) -> torch.Tensor:
        """Images in [0, 1] on the CPU of the classes ``labels`` (N,) asked of a conditional GAN."""
        if not self.classes:
            raise GenforgeError("this GAN is not conditional (model.conditional=none): it cannot be asked for a class")
        device = next(self.parameters()).device
        with self.eval_mode():
            return torch.cat([self.generate(self.sample_noise(len(part), generator, device, labels=part)).cpu()
                              for part in labels.split(batch_size)])

    @torch.no_grad()
    def class_grid(self, per_class: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(K * per_class) images, row k = class k; column j shares one z across all rows."""
        device = next(self.parameters()).device
        z = self.sample_noise(per_class, generator, device)[:, :self.cfg.latent_dim]  # (per_class, latent)
        labels = torch.arange(self.classes, device=device).repeat_interleave(per_class)
        noise = torch.cat([z.repeat(self.classes, 1), F.one_hot(labels, self.classes).to(z.dtype)], dim=1)
        with self.eval_mode():
            return self.generate(noise).cpu()
