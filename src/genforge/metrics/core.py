"""The metric functions on feature vectors: pure, seeded, each with a numpy reference in tests.

Features are (N, D) tensors from :mod:`genforge.metrics.extractor`; "real" is the
reference split, "fake" the generated samples.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torchmetrics.image.kid import maximum_mean_discrepancy

from genforge.errors import GenforgeError


@contextmanager
def torch_threads(count: int):
    """Run a block with ``count`` torch threads: a 128x128 eigendecomposition gains nothing from
    more, and on a loaded 2-core machine threaded LAPACK took 5 s instead of 30 ms."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    x = features.double().cpu()
    if x.shape[0] < 2:
        raise GenforgeError(f"FID needs at least 2 samples per side, got {x.shape[0]}")
    return x.mean(0), torch.cov(x.T)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """FID (Heusel et al. 2017, arXiv 1706.08500): ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).

    Tr (S1 S2)^1/2 is computed as Tr (S1^1/2 S2 S1^1/2)^1/2, a symmetric PSD matrix, so two
    ``eigh`` calls replace the general matrix square root (same value as scipy's ``sqrtm``
    and torchmetrics' ``eigvals`` route; tests check both), without complex round-off.
    """
    with torch_threads(1):
        root = _psd_sqrt(sigma1)
        trace_covmean = torch.linalg.eigvalsh(root @ sigma2 @ root).clamp_min(0).sqrt().sum()
        diff = mu1 - mu2
        return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2.0 * trace_covmean)


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two (N, D) feature sets."""
    return frechet_distance(*feature_stats(real), *feature_stats(fake))


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018, arXiv 1801.01401): unbiased MMD^2 with the cubic polynomial
    kernel k(x, y) = (x.y / D + 1)^3, mean and std over ``subsets`` random subsets of
    ``min(subset_size, N_real, N_fake)`` features each (torchmetrics' estimator, but with a
    seeded generator instead of the global RNG, and float32 dot products for speed)."""
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise GenforgeError(f"KID needs at least 2 samples per side, got {size}")
    generator = torch.Generator().manual_seed(seed)
    real, fake = real.float().cpu(), fake.float().cpu()
    gamma = 1.0 / real.shape[1]

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # float32 products, float64 sums
        return ((a @ b.T).double() * gamma + 1.0) ** 3

    scores = []
    for _ in range(subsets):
        x = real[torch.randperm(real.shape[0], generator=generator)[:size]]
        y = fake[torch.randperm(fake.shape[0], generator=generator)[:size]]
        scores.append(maximum_mean_discrepancy(kernel(x, x), kernel(x, y), kernel(y, y)))
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False))


def _kth_neighbour_radii(points: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point in the same set, (N,)."""
    radii = []
    for start in range(0, points.shape[0], chunk):
        dist = torch.cdist(points[start:start + chunk], points)  # (chunk, N)
        radii.append(dist.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def _inside_manifold(queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """For each query, whether it lies in some hypersphere (point, radius), (M,) bool."""
    inside = []
    for start in range(0, queries.shape[0], chunk):
        dist = torch.cdist(queries[start:start + chunk], points)  # (chunk, N)
        inside.append((dist <= radii[None]).any(dim=1))
    return torch.cat(inside)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, arXiv 1904.06991).

    Each set's manifold is the union of balls around its points reaching their k-th
    nearest neighbour. Precision: share of fake points inside the real manifold
    (quality). Recall: share of real points inside the fake manifold (diversity).
    Use equally many real and fake points: the radii shrink as a set grows.
    """
    if min(real.shape[0], fake.shape[0]) <= k:
        raise GenforgeError(f"precision/recall with k={k} needs more than {k} samples per side")
    real, fake = real.double().cpu(), fake.double().cpu()
    real_radii = _kth_neighbour_radii(real, k, chunk)
    fake_radii = _kth_neighbour_radii(fake, k, chunk)
    precision = _inside_manifold(fake, real, real_radii, chunk).double().mean()
    recall = _inside_manifold(real, fake, fake_radii, chunk).double().mean()
    return float(precision), float(recall)


def class_coverage(logits: torch.Tensor, confidence: float = 0.9, lost_share: float = 0.1) -> dict[str, object]:
    """What the domain classifier thinks the samples are.

    Returns the class histogram (shares summing to 1), its entropy in nats (log C for a
    uniform spread), ``classes_covered`` (classes holding at least ``lost_share`` of their
    uniform share 1/C) and ``confident_share`` (samples whose top class has probability
    >= ``confidence``).
    """
    probs = torch.softmax(logits.double(), dim=1)
    num_classes = probs.shape[1]
    counts = torch.bincount(probs.argmax(1), minlength=num_classes).double()
    shares = counts / counts.sum().clamp_min(1)
    nonzero = shares[shares > 0]
    entropy = float(-(nonzero * nonzero.log()).sum())
    return {"class_histogram": [round(float(s), 6) for s in shares],
            "class_entropy": entropy,
            "classes_covered": int((shares >= lost_share / num_classes).sum()),
            "confident_share": float((probs.max(1).values >= confidence).double().mean())}


def collapse_warning(coverage: dict[str, object], num_classes: int, entropy_ratio: float = 0.8) -> str | None:
    """A one-line warning when classes vanish or the class entropy drops (mode collapse), else None."""
    shares = coverage["class_histogram"]
    lost = [str(c) for c, share in enumerate(shares) if share < 0.1 / num_classes]
    floor = entropy_ratio * math.log(num_classes)
    if lost or coverage["class_entropy"] < floor:
        return (f"possible mode collapse: classes {', '.join(lost) or 'none'} (nearly) missing, "
                f"class entropy {coverage['class_entropy']:.3f} (uniform {math.log(num_classes):.3f}, "
                f"alarm below {floor:.3f})")
    return None
