"""Judging a two-domain translator (DiscoGAN) on its test split: where translations land,
how well they reconstruct, and whether they collapse.

- points (the toys): per direction, :func:`genforge.metrics.modes.translation_mode_metrics`
  of the translated points on the target mixture (fitted to the target test points), and the
  reconstruction MSE;
- images: a small domain classifier trained on the training split judges each translation
  (a translated bag should say "shoe"), the reconstruction MSE, the pairwise diversity of
  translations against the real target images', the pixel-space FID of the translations
  against the real target images (and of the untranslated sources, where translation starts
  from: the measure that needs no classifier, for two folders of the user's own), and on
  Fashion-MNIST's bags and shoes the shipped extractor's class accuracy, feature FID and
  feature diversity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genforge.data.datasets import BAG as BAG_CLASS, SHOES as SHOE_CLASSES
from genforge.metrics.modes import mode_stats, translation_mode_metrics

JUDGED_IMAGES = 1000  # test images per domain the image metrics translate


def pairwise_diversity(images: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between flattened images (mode collapse drives it to 0)."""
    flat = images.flatten(1).double()
    distances = torch.cdist(flat, flat)
    n = flat.shape[0]
    return float(distances.sum() / max(n * (n - 1), 1))


def pixel_fids(real_target: torch.Tensor, fake: torch.Tensor, source: torch.Tensor, direction: str) -> dict[str, float]:
    """Pixel-space FID (32x32 pixels through genforge's fixed random projection, as for image folders)
    of the translations ``fake`` against the real target images, and of the untranslated ``source``
    images against them: a translation is doing its work when the first falls well below the second.
    Images in [0, 1]; both sides need at least 2 images."""
    from genforge.metrics import core
    from genforge.metrics.features import pixel_set

    target = pixel_set([real_target]).features
    return {f"{direction}_pixel_fid": core.fid(target, pixel_set([fake]).features),
            f"{direction}_pixel_fid_untranslated": core.fid(target, pixel_set([source]).features)}


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


def prepared_domains(model: Any, test_data: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Both domains of the test split in the model's network space, on ``device``."""
    return model.prepare(test_data.images).to(device), model.prepare(test_data.images_b).to(device)


@torch.no_grad()
def point_translation_metrics(model: Any, test_data: Any, device: torch.device) -> dict[str, float]:
    """``{a2b,b2a}_{high_quality, modes_covered, ...}`` and ``recon_{a,b}`` on the toy's test split."""
    a, b = prepared_domains(model, test_data, device)
    result: dict[str, float] = {}
    for direction, source, source_labels, target, target_labels in (
            ("a2b", a, test_data.labels, b, test_data.labels_b), ("b2a", b, test_data.labels_b, a, test_data.labels)):
        fake, recon = model.translate(source, direction)
        means, std = mode_stats(target.cpu(), target_labels)
        for key, value in translation_mode_metrics(fake.cpu(), source_labels, means, std).items():
            result[f"{direction}_{key}"] = value
        result[f"recon_{direction[0]}"] = float(F.mse_loss(recon, source))
    return result


def _fashion_extractor(model: Any, dataset: str):
    """genforge's Fashion-MNIST extractor for the bags/shoes domains (grey images only), else None."""
    if dataset != "fashion-bags-shoes" or model.image_shape[0] != 1:
        return None
    from genforge.metrics.extractor import load_extractor

    return load_extractor("fashion-mnist")


@torch.no_grad()
def image_translation_metrics(model: Any, train_data: Any, test_data: Any, device: torch.device) -> dict[str, float]:
    """The domain classifier's accuracy on real and translated test images, reconstruction MSE,
    diversity (and its ratio to the real target images'), pixel-space FID per direction, and the
    Fashion-MNIST extractor's view."""
    size = model.image_shape[-1]
    train = train_data.resized(size)
    judge = train_domain_classifier(model.prepare(train.images), model.prepare(train.images_b))
    a, b = prepared_domains(model, test_data, device)
    a, b = a[:JUDGED_IMAGES], b[:JUDGED_IMAGES]
    result = {"classifier_real_acc": float(torch.cat([judge(a.cpu()).argmax(1) == 0,
                                                      judge(b.cpu()).argmax(1) == 1]).float().mean())}
    extractor = _fashion_extractor(model, train_data.name)
    for direction, source, target, want in (("a2b", a, b, 1), ("b2a", b, a, 0)):
        fake, recon = model.translate_batches(source, direction)
        result[f"{direction}_domain_acc"] = float((judge(fake).argmax(1) == want).float().mean())
        result[f"recon_{direction[0]}"] = float(F.mse_loss(recon, source.cpu()))
        real_unit, fake_unit = model.to_unit(target.cpu()), model.to_unit(fake)
        result[f"{direction}_diversity"] = pairwise_diversity(fake_unit)
        result[f"{direction}_diversity_ratio"] = result[f"{direction}_diversity"] / max(pairwise_diversity(real_unit),
                                                                                        1e-12)
        result.update(pixel_fids(real_unit, fake_unit, model.to_unit(source.cpu()), direction))
        if extractor is not None:
            result.update(fashion_translation_metrics(extractor, fake_unit, real_unit, direction))
    return result
