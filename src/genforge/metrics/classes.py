"""What the evaluation classifier of a named image set says about generated images: the
class histogram (mode collapse shows as a spike) and, for a conditional generator, how often
a sample is filed under the class it was asked for."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import nn

from genforge.errors import GenforgeError

HISTOGRAM_SAMPLES = 1000  # samples in the checkpoints' class histogram
ACCURACY_SAMPLES = 1000  # samples (an equal share per class) in the conditional class accuracy


@lru_cache(maxsize=8)
def classifier_for(dataset: str, device: str = "cpu") -> nn.Module | None:
    """The evaluation classifier of ``dataset`` (loaded once per process), or None if there is none."""
    from genforge.metrics.extractor import extractor_for, load_extractor

    try:
        return load_extractor(extractor_for(dataset), device=device)
    except GenforgeError:
        return None


@torch.no_grad()
def classify(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class logits (N, K) on the CPU of images (N, C, H, W) in [0, 1], 500 at a time."""
    device = next(classifier.parameters()).device
    return torch.cat([classifier.logits(part.to(device)).cpu() for part in images.split(500)])


def class_shares(classifier: nn.Module, images: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """The share of ``images`` the classifier files under each class: (classes,) summing to 1."""
    predicted = classify(classifier, images).argmax(1)
    return torch.bincount(predicted, minlength=classes).float() / max(len(predicted), 1)


def class_histogram(model: Any, classifier: nn.Module, generator: torch.Generator) -> dict[str, float]:
    """``class_share_K`` of 1,000 samples: the generated class histogram at a checkpoint."""
    shares = class_shares(classifier, model.sample(HISTOGRAM_SAMPLES, generator))
    return {f"class_share_{k}": float(v) for k, v in enumerate(shares)}


def class_accuracy(model: Any, classifier: nn.Module, generator: torch.Generator) -> dict[str, float]:
    """``class_accuracy``: the share of 1,000 samples (100 per class of 10) that the classifier
    files under the class asked of the conditional generator."""
    labels = torch.arange(ACCURACY_SAMPLES) % model.capabilities.classes
    predicted = classify(classifier, model.sample_labels(labels, generator)).argmax(1)
    return {"class_accuracy": float((predicted == labels).float().mean())}
