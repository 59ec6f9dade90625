"""Mode metrics of generated points on a known Gaussian mixture (the GAN toys).

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
