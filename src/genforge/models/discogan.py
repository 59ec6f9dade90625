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
conv D (4 strided convs, BN, one logit) as in the official code, at 32x32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genforge import losses, viz
from genforge.config import check_ranges, opt
from genforge.data.datasets import BAG as BAG_CLASS, SHOES as SHOE_CLASSES
from genforge.errors import GenforgeError
from genforge.models.base import Batch, Capabilities, Context, GenerativeModel, Phase, relayout
from genforge.models.gan import dcgan_init, frozen


@dataclass
class DiscoGANConfig:
    variant: str = opt("discogan", "gan (GAN loss only, both directions), recongan (A->B with A->B->A "
                       "reconstruction) or discogan (both directions, both reconstructions)",
                       ("gan", "recongan", "discogan"))
    arch: str = opt("auto", "networks: mlp (2-D points), conv (images) or auto (by the data)", ("auto", "mlp", "conv"))
    hidden: int = opt(256, "MLP width (2 hidden layers, ReLU)")
    width: int = opt(64, "conv base channel count (doubled at each of 4 layers)")
    gan_loss: str = opt("nonsaturating", "GAN loss: nonsaturating BCE or least_squares", ("nonsaturating", "least_squares"))
    recon_loss: str = opt("mse", "reconstruction distance", ("mse", "l1"))
    cyclegan: bool = opt(False, "CycleGAN's settings instead: least-squares GAN + cycle_weight * L1 cycle, no curriculum")
    cycle_weight: float = opt(10.0, "CycleGAN's lambda on the L1 cycle loss (cyclegan=true only)")
    feature_matching: float = opt(0.0, "share fm of feature matching in the GAN term (official image code: 0.9)")
    recon_weight: float = opt(0.5, "w in (1 - w) GAN + w recon once the curriculum is over (official: 0.5)")
    recon_weight_start: float = opt(0.01, "w for the first curriculum_steps steps (official: 0.01)")
    curriculum_steps: int = opt(10000, "steps at recon_weight_start before recon_weight; 0 = no curriculum")
    g_steps: int = opt(1, "generator steps per discriminator step, each on a fresh batch")


# --- networks -------------------------------------------------------------------------

class MLP(nn.Module):
    """in -> hidden (ReLU) -> hidden (ReLU) -> out, linear output; also returns the hidden activations."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim_in, hidden), nn.Linear(hidden, hidden)])
        self.out = nn.Linear(hidden, dim_out)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for layer in self.layers:
            x = F.relu(layer(x))
            feats.append(x)
        return self.out(x), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]


class PointCritic(MLP):
    """(B, 2) -> (logit (B,), hidden features) for feature matching."""

    def __init__(self, dim_in: int, hidden: int):
        super().__init__(dim_in, hidden, 1)

    def features(self, x):
        logit, feats = super().features(x)
        return logit.squeeze(-1), feats

    def forward(self, x):
        return self.features(x)[0]


def _down(c_in: int, c_out: int, norm: bool) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm), *([nn.BatchNorm2d(c_out)] if norm else []),
            nn.LeakyReLU(0.2, True)]


class ConvTranslator(nn.Module):
    """Encoder-decoder: (B, C, S, S) -> 4 x (conv 4/2, BN, lrelu) -> (B, 8w, S/16, S/16)
    -> 4 x (transposed conv 4/2, BN, ReLU; tanh last) -> (B, C, S, S)."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(*_down(channels, w, False), *_down(w, 2 * w, True), *_down(2 * w, 4 * w, True),
                                     *_down(4 * w, 8 * w, True))
        up: list[nn.Module] = []
        for c_in, c_out in ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w)):
            up += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        self.decoder = nn.Sequential(*up, nn.ConvTranspose2d(w, channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class ConvCritic(nn.Module):
    """(B, C, S, S) -> 4 x (conv 4/2, BN but on the first, lrelu) -> conv to one logit (B,);
    the activations of layers 2-4 are the feature-matching features (official code)."""

    def __init__(self, channels: int, width: int, image_size: int):
        super().__init__()
        w = width
        self.blocks = nn.ModuleList([nn.Sequential(*_down(channels, w, False)), nn.Sequential(*_down(w, 2 * w, True)),
                                     nn.Sequential(*_down(2 * w, 4 * w, True)), nn.Sequential(*_down(4 * w, 8 * w, True))])
        self.out = nn.Conv2d(8 * w, 1, image_size // 16)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return self.out(x).flatten(), feats[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]


# --- metrics on translated toy points (pure functions, tested on constructed cases) ---

def mode_stats(points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-label means (K, 2) and the pooled per-axis standard deviation of labelled points."""
    classes = int(labels.max()) + 1
    means = torch.stack([points[labels == k].mean(0) for k in range(classes)])
    std = float((points - means[labels]).pow(2).mean().sqrt())
    return means, std


def mode_metrics(translated: torch.Tensor, source_labels: torch.Tensor, target_means: torch.Tensor, std: float,
                 min_share: float = 0.01) -> dict[str, float]:
    """How translated points (N, 2) sit on the target mixture.

    - ``high_quality``: share of points within 3 std (Euclidean) of a target mode;
    - ``modes_covered``: target modes nearest to at least ``min_share`` of the points (and one);
    - ``distinct_modes``: source modes whose high-quality points mostly land on different target
      modes (5 for a one-to-one map of 5 modes, 1 when all collapse onto one), with
      ``distinct_fraction`` = that / number of source modes;
    - ``mapping_purity``: mean share of each source mode's points on its most common target mode.
    """
    distance, nearest = torch.cdist(translated.double(), target_means.double()).min(dim=1)
    good = distance <= 3 * std
    counts = torch.bincount(nearest[good], minlength=len(target_means))
    covered = int((counts >= max(1.0, min_share * len(translated))).sum())
    sources = source_labels.unique()
    majority, purity = set(), []
    for k in sources.tolist():
        hits = nearest[good & (source_labels == k)]
        if hits.numel():
            target_counts = torch.bincount(hits, minlength=len(target_means))
            majority.add(int(target_counts.argmax()))
            purity.append(float(target_counts.max()) / int((source_labels == k).sum()))
        else:
            purity.append(0.0)
    return {"high_quality": float(good.double().mean()), "modes_covered": float(covered),
            "target_modes": float(len(target_means)), "distinct_modes": float(len(majority)),
            "distinct_fraction": len(majority) / len(sources), "mapping_purity": float(np.mean(purity))}


def pairwise_diversity(images: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between flattened images (mode collapse drives it to 0)."""
    flat = images.flatten(1).double()
    distances = torch.cdist(flat, flat)
    n = flat.shape[0]
    return float(distances.sum() / max(n * (n - 1), 1))


def fashion_translation_metrics(extractor: nn.Module, fake: torch.Tensor, real_target: torch.Tensor,
                                direction: str) -> dict[str, float]:
    """Translations judged by genforge's Fashion-MNIST extractor (images in [0, 1]): the share
    classified as the target domain's classes (bag = 8; shoes = 5, 7, 9), the target-domain
    FID against real target images, and the diversity of translations in feature space
    (mean pairwise feature distance, as a ratio to that of the real target images)."""
    from genforge.metrics import core
    from genforge.metrics.extractor import extract

    fake_features, logits = extract(extractor, fake.float(), with_logits=True)
    real_features = extract(extractor, real_target.float())
    wanted = torch.tensor(SHOE_CLASSES if direction == "a2b" else (BAG_CLASS,))
    real_diversity = pairwise_diversity(real_features)
    return {f"{direction}_fashion_classifier_acc": float(torch.isin(logits.argmax(1), wanted).float().mean()),
            f"{direction}_feature_fid": core.frechet_distance(*core.feature_stats(real_features),
                                                              *core.feature_stats(fake_features)),
            f"{direction}_feature_diversity_ratio": pairwise_diversity(fake_features) / max(real_diversity, 1e-12)}


def train_domain_classifier(images_a: torch.Tensor, images_b: torch.Tensor, seed: int = 0, steps: int = 300) -> nn.Module:
    """A small MLP telling domain A (class 0) from B (class 1), trained on balanced batches of
    network-space images; the judge of translated images (a translated bag should say "B")."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # callers may be under no_grad
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Flatten(), nn.Linear(images_a[0].numel(), 64), nn.ReLU(), nn.Linear(64, 2))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(steps):
            ia = torch.randint(len(images_a), (128,), generator=generator)
            ib = torch.randint(len(images_b), (128,), generator=generator)
            x = torch.cat([images_a[ia], images_b[ib]])
            y = torch.cat([torch.zeros(128, dtype=torch.long), torch.ones(128, dtype=torch.long)])
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval().requires_grad_(False)


# --- the family ---------------------------------------------------------------------

class DiscoGAN(GenerativeModel):
    """G_AB, G_BA, D_A, D_B; reconstructions reuse G_AB and G_BA (shared weights)."""

    family = "discogan"
    Config = DiscoGANConfig

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
            return _render_progress(a, b, fake_b, fake_a)
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
        d_loss = losses.d_least_squares if self._least_squares() else losses.d_bce
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

    # --- evaluation and report ------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, ctx: Context) -> dict[str, float]:
        if self.points:
            result = self._evaluate_points(ctx)
        else:
            result = self._evaluate_images(ctx)
        (ctx.run_dir / "translation_metrics.json").write_text(json.dumps(result, indent=2))
        return result

    def _test_domains(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        data = ctx.test_data
        return self.prepare(data.images).to(ctx.device), self.prepare(data.images_b).to(ctx.device)

    def _evaluate_points(self, ctx: Context) -> dict[str, float]:
        data = ctx.test_data
        a, b = self._test_domains(ctx)
        result: dict[str, float] = {}
        for direction, source, source_labels, target, target_labels in (
                ("a2b", a, data.labels, b, data.labels_b), ("b2a", b, data.labels_b, a, data.labels)):
            fake, recon = self.translate(source, direction)
            means, std = mode_stats(target.cpu(), target_labels)
            for key, value in mode_metrics(fake.cpu(), source_labels, means, std).items():
                result[f"{direction}_{key}"] = value
            result[f"recon_{direction[0]}"] = float(F.mse_loss(recon, source))
        return result

    def _evaluate_images(self, ctx: Context) -> dict[str, float]:
        size = self.image_shape[-1]
        train = ctx.train_data.resized(size)
        judge = train_domain_classifier(self.prepare(train.images), self.prepare(train.images_b))
        a, b = self._test_domains(ctx)
        a, b = a[:1000], b[:1000]
        result = {"classifier_real_acc": float(torch.cat([judge(a.cpu()).argmax(1) == 0,
                                                          judge(b.cpu()).argmax(1) == 1]).float().mean())}
        extractor = self._fashion_extractor(ctx)
        for direction, source, target, want in (("a2b", a, b, 1), ("b2a", b, a, 0)):
            fake, recon = self._translate_in_chunks(source, direction)
            result[f"{direction}_domain_acc"] = float((judge(fake).argmax(1) == want).float().mean())
            result[f"recon_{direction[0]}"] = float(F.mse_loss(recon, source.cpu()))
            real_unit = self.to_unit(target.cpu())
            real_diversity = pairwise_diversity(real_unit)
            fake_unit = self.to_unit(fake)
            result[f"{direction}_diversity"] = pairwise_diversity(fake_unit)
            result[f"{direction}_diversity_ratio"] = result[f"{direction}_diversity"] / max(real_diversity, 1e-12)
            if extractor is not None:
                result.update(fashion_translation_metrics(extractor, fake_unit, real_unit, direction))
        return result

    def _fashion_extractor(self, ctx: Context):
        """genforge's Fashion-MNIST extractor for the bags/shoes domains (grey images only), else None."""
        if ctx.train_data.name != "fashion-bags-shoes" or self.image_shape[0] != 1:
            return None
        from genforge.metrics.extractor import load_extractor

        return load_extractor("fashion-mnist")

    def _translate_in_chunks(self, x: torch.Tensor, direction: str, chunk: int = 250):
        parts = [self.translate(x[i:i + chunk], direction) for i in range(0, len(x), chunk)]
        return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()

    @torch.no_grad()
    def report(self, ctx: Context) -> list[Path]:
        plots = ctx.run_dir / "plots"
        rows = viz.read_metrics(ctx.run_dir / "metrics.jsonl")
        written = [viz.plot_curves(rows, ["d/loss", "g/gan_a2b", "g/gan_b2a", "g/recon_a", "g/recon_b"],
                                   plots / "curves.png", title=f"DiscoGAN ({self.cfg.variant}): learning curves")]
        a, b = self._test_domains(ctx)
        if self.points:
            written.append(_plot_points(ctx.test_data, a, b, self, plots / "translations.png"))
        else:
            for direction, source in (("a2b", a[:16]), ("b2a", b[:16])):
                written.append(viz.save_grid(self.triplets(source, direction), plots / f"translations_{direction}.png", nrow=3))
        return [p for p in written if p is not None]

    def triplets(self, source: torch.Tensor, direction: str) -> torch.Tensor:
        """Network-space images (B, C, H, W) -> rows source | translation | reconstruction in [0, 1], (3B, C, H, W)."""
        fake, recon = self.translate(source, direction)
        return self.to_unit(torch.stack([source, fake, recon], dim=1).flatten(0, 1)).cpu()


# --- pictures of the toy ----------------------------------------------------------------

def _hue_by_angle(points: torch.Tensor) -> np.ndarray:
    """A colour per source point from its angle around the source mean (modes get distinct colours)."""
    centred = (points - points.mean(0)).cpu().numpy()
    return (np.arctan2(centred[:, 1], centred[:, 0]) + np.pi) / (2 * np.pi)


def _render_progress(a, b, fake_b, fake_a) -> torch.Tensor:
    """Two panels, A -> B over real B and B -> A over real A, rendered to a (1, 3, H, W) image."""
    plt = viz._pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.5), dpi=80)
    for ax, title, real, source, fake in ((axes[0], "A -> B", b, a, fake_b), (axes[1], "B -> A", a, b, fake_a)):
        real, fake = real.cpu().numpy(), fake.cpu().numpy()
        ax.scatter(real[:, 0], real[:, 1], s=3, color="0.8")
        ax.scatter(fake[:, 0], fake[:, 1], s=3, c=_hue_by_angle(source), cmap="hsv", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def _plot_points(data, a: torch.Tensor, b: torch.Tensor, model: DiscoGAN, path: Path) -> Path:
    """The original toy's scatter plots: data A, data B, A -> B and B -> A coloured by source mode,
    and both reconstructions."""
    plt = viz._pyplot()
    fake_b, recon_a = model.translate(a, "a2b")
    fake_a, recon_b = model.translate(b, "b2a")
    la, lb = data.labels.numpy(), data.labels_b.numpy()
    panels = [("data A", a, la, None), ("data B", b, lb, None), ("A -> B (colour: A mode)", fake_b, la, b),
              ("B -> A (colour: B mode)", fake_a, lb, a), ("A -> B -> A", recon_a, la, a), ("B -> A -> B", recon_b, lb, b)]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8), dpi=100)
    cmap = plt.get_cmap("tab10")
    for ax, (title, points, labels, backdrop) in zip(axes.flat, panels):
        if backdrop is not None:  # the real domain the points should land on, in grey behind
            backdrop = backdrop.cpu().numpy()
            ax.scatter(backdrop[:, 0], backdrop[:, 1], s=3, color="0.85")
        points = points.cpu().numpy()
        for k in np.unique(labels):
            mask = labels == k
            ax.scatter(points[mask, 0], points[mask, 1], s=3, color=cmap(int(k) % 10), label=str(k))
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")
    axes.flat[2].legend(markerscale=3, frameon=False, fontsize=7, title="source mode")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
