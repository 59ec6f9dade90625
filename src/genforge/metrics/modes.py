"""Mode metrics of points on a known Gaussian mixture: generated ones (the GAN toys) and
translated ones (the DiscoGAN toys, :func:`translation_mode_metrics`).

As VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018, arXiv 1712.04086) count them,
over 2,500 samples:

- a sample is *high quality* when it lies within 3 standard deviations (Euclidean distance)
  of its nearest mode;
- a mode is *captured* when at least one high-quality sample lies nearest to it;
- *reverse KL* is KL(p || uniform) of the histogram ``p`` of high-quality samples over the
  modes: 0 when every mode gets the same share, log K when all of them sit on one mode.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SAMPLES = 2500  # the papers' sample count


def mode_metrics(points: torch.Tensor, means: torch.Tensor, std: float) -> dict[str, float]:
    """``points`` (N, D) against mixture ``means`` (K, D) of per-axis ``std``.

    Returns ``modes`` (captured, 0..K), ``hq`` (high-quality share in %), ``reverse_kl``
    (nats; log K when no sample is high quality) and ``modes_total`` (K).
    """
    points, means = points.double().cpu(), means.double().cpu()
    distances = torch.cdist(points, means)  # (N, K)
    nearest_distance, nearest = distances.min(dim=1)
    high_quality = nearest_distance <= 3 * std
    counts = torch.bincount(nearest[high_quality], minlength=means.shape[0]).double()  # (K,)
    k = means.shape[0]
    total = counts.sum()
    if total > 0:
        share = counts / total
        nonzero = share > 0
        reverse_kl = float((share[nonzero] * (share[nonzero] * k).log()).sum())
    else:
        reverse_kl = math.log(k)
    return {"modes": float((counts > 0).sum()), "hq": 100.0 * float(high_quality.double().mean()),
            "reverse_kl": reverse_kl, "modes_total": float(k)}


def mode_histogram(points: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Share of ``points`` (N, D) nearest to each mode of ``means`` (K, D): (K,) summing to 1."""
    nearest = torch.cdist(points.double().cpu(), means.double().cpu()).argmin(dim=1)
    return torch.bincount(nearest, minlength=means.shape[0]).double() / max(points.shape[0], 1)


# --- two domains: where translated points land on the target mixture (the DiscoGAN toys) ---

def mode_stats(points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-label means (K, 2) and the pooled per-axis standard deviation of labelled points."""
    classes = int(labels.max()) + 1
    means = torch.stack([points[labels == k].mean(0) for k in range(classes)])
    std = float((points - means[labels]).pow(2).mean().sqrt())
    return means, std


def translation_mode_metrics(translated: torch.Tensor, source_labels: torch.Tensor, target_means: torch.Tensor,
                             std: float, min_share: float = 0.01) -> dict[str, float]:
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
