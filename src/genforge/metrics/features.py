"""The feature spaces that sample-quality metrics are computed in, and their cached references.

Two spaces: ``classifier`` (the trained extractor of MNIST / Fashion-MNIST: 128-d features
and 10 class logits, scored against the test split) and ``pixel`` (image sets without an
extractor: a fixed random projection to 128-d of the pixels at 32x32, and the pixels themselves
for colour statistics and the nearest-neighbour copy check, scored against the training images).
Reference features of each real split are cached on disk, keyed by extractor hash + dataset +
split + image size. The metric functions on these features are registered in
:mod:`genforge.metrics.evaluate`; :class:`TrainingEval` is the cheap FID during training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from genforge.atomic import write_atomic
from genforge.metrics import EXTRACTOR_SHA256, core
from genforge.metrics.extractor import Classifier, extract, extractor_for, load_extractor
from genforge.runtime import Distributed

SAMPLE_CHUNK = 500  # samples generated (and reduced to 32x32 pixels) at a time: 10,000 at 128 px would be 2 GB


@dataclass
class FeatureSet:
    """Extractor outputs of a set of images: features (N, 128) and class logits (N, C).
    In the pixel space: random projections (N, 128), no logits (N, 0), and the downscaled
    pixels themselves (N, C * 32 * 32) in [0, 1]."""

    features: torch.Tensor
    logits: torch.Tensor
    pixels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    def subset(self, index: torch.Tensor) -> FeatureSet:
        return FeatureSet(self.features[index], self.logits[index],
                          None if self.pixels is None else self.pixels[index])


@dataclass
class EvalInputs:
    """What a metric on features compares: a reference set and the set judged against it."""

    real: FeatureSet  # the reference split (the test split; an image folder's training images)
    fake: FeatureSet  # generated samples (or a held-out real split, for the floor)
    seed: int = 0
    channels: int = 1  # image channels (the pixel-space colour statistics need them)


def pixel_set(chunks: Iterable[torch.Tensor]) -> FeatureSet:
    """The pixel-space description of images given in chunks ((B, C, H, W) uint8 or [0, 1]):
    downscaled pixels, their random projection, no logits."""
    from genforge.metrics.nearest import pixel_vectors, project

    pixels = torch.cat([pixel_vectors(chunk) for chunk in chunks])
    return FeatureSet(project(pixels), torch.empty(pixels.shape[0], 0), pixels)


def sample_chunks(model: Any, n: int, generator: torch.Generator) -> Iterable[torch.Tensor]:
    """``n`` samples of ``model``, SAMPLE_CHUNK at a time (so that large images need not all be held)."""
    return (model.sample(min(SAMPLE_CHUNK, n - start), generator) for start in range(0, n, SAMPLE_CHUNK))


def extractor_key(extractor_name: str) -> str:
    """The cache key part naming an extractor and its weights."""
    return f"{extractor_name}-{EXTRACTOR_SHA256[extractor_name][:16]}"


def cache_dir() -> Path:
    """``$GENFORGE_CACHE``, else ``$XDG_CACHE_HOME/genforge/eval`` or ``~/.cache/genforge/eval``."""
    from genforge.data.root import cache_dir as kind_dir

    return kind_dir("eval")


def reference_features(dataset: str, split: str, image_size: int, extractor: Classifier, extractor_name: str,
                       root: str | None = None) -> FeatureSet:
    """Features and logits of a real split at ``image_size``, computed once and cached on disk."""
    from safetensors.torch import load_file, save

    from genforge.data.datasets import load_images, resize_images

    path = cache_dir() / f"{dataset}-{split}-{image_size}px-{extractor_key(extractor_name)}.safetensors"
    if path.is_file():
        try:
            cached = load_file(str(path))
            return FeatureSet(cached["features"], cached["logits"])
        except Exception:  # a torn or foreign cache file: recompute it
            pass
    data = load_images(dataset, split, root)
    features, logits = extract(extractor, resize_images(data.images, image_size), with_logits=True)
    write_atomic(path, save({"features": features.contiguous(), "logits": logits.contiguous()}))
    return FeatureSet(features, logits)


def floor_size(dataset: str, n: int, root: str | None = None) -> int:
    """Held-out real images in the floor: n, at most the size of either split (1,000 for mnist-10k)."""
    from genforge.data.datasets import load_images

    return min(n, len(load_images(dataset, "train", root)), len(load_images(dataset, "test", root)))


# --- the cheap metric during training ---------------------------------------------------

class TrainingEval:
    """FID of ``n`` samples against the test split every N steps, plus the mode-collapse alarm.

    Sampling uses its own generator seeded from (seed, step), so the training RNG stream is
    untouched and a resumed run computes the same values.
    """

    def __init__(self, dataset: str, image_size: int, n: int, seed: int, device: torch.device,
                 root: str | None = None, ranks: Distributed | None = None):
        self.name = extractor_for(dataset)
        self.extractor = load_extractor(self.name, device=device)
        self.real = reference_features(dataset, "test", image_size, self.extractor, self.name, root)
        self.real_stats = core.feature_stats(self.real.features)
        self.n, self.seed, self.warned = n, seed, False
        self.ranks, self.device = ranks or Distributed(), device

    def __call__(self, model, step: int) -> tuple[dict[str, float], str | None]:
        """({"eval/fid", "eval/class_entropy", "eval/classes_covered"}, a collapse warning once or None).
        Under torchrun each rank samples and embeds its share; every rank gets the same values."""
        ranks = self.ranks
        share = -(-self.n // ranks.world)  # ceil(n / processes): all n when there is one
        seed = self.seed * 1_000_003 + step + 7 + 104_729 * ranks.rank
        with torch.no_grad(), model.ema_weights():
            images = model.sample(share, torch.Generator().manual_seed(seed))
        features, logits = extract(self.extractor, images, with_logits=True)
        if ranks.active:
            both = ranks.gather(torch.cat([features, logits], 1).to(self.device)).cpu()[:self.n]
            features, logits = both[:, :features.shape[1]], both[:, features.shape[1]:]
        fid = core.frechet_distance(*self.real_stats, *core.feature_stats(features))
        coverage = core.class_coverage(logits)
        warning = None
        if not self.warned:
            warning = core.collapse_warning(coverage, logits.shape[1])
            self.warned = warning is not None
        values = {"eval/fid": fid, "eval/class_entropy": coverage["class_entropy"],
                  "eval/classes_covered": float(coverage["classes_covered"])}
        return values, (f"step {step}: {warning}" if warning else None)
