"""Each metric against a direct numpy/scipy reference, and FID against torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from genforge.metrics import core
from genforge.metrics.extractor import extract


def numpy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def numpy_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3 (Binkowski et al.)."""
    d, m = x.shape[1], x.shape[0]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def numpy_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    def radii(x):
        return np.sort(cdist(x, x), axis=1)[:, k]  # column 0 is the point itself

    r_real, r_fake = radii(real), radii(fake)
    precision = (cdist(fake, real) <= r_real[None]).any(1).mean()
    recall = (cdist(real, fake) <= r_fake[None]).any(1).mean()
    return float(precision), float(recall)


@pytest.fixture(scope="module")
def features(extractor, digits):
    train, test = digits
    return extract(extractor, test.images[:500]), extract(extractor, train.images[:600])


def test_fid_matches_numpy_scipy(features):
    real, fake = features
    ours = core.fid(real, fake)
    reference = numpy_fid(real.double().numpy(), fake.double().numpy())
    assert ours == pytest.approx(reference, rel=1e-3)
    assert ours > 0


def test_fid_matches_torchmetrics_with_our_extractor(extractor, digits):
    from torchmetrics.image.fid import FrechetInceptionDistance

    train, test = digits
    metric = FrechetInceptionDistance(feature=extractor, normalize=True)
    real_images, fake_images = test.images[:400].float() / 255, train.images[:400].float() / 255
    metric.update(real_images, real=True)
    metric.update(fake_images, real=False)
    expected = float(metric.compute())
    ours = core.fid(extract(extractor, real_images), extract(extractor, fake_images))
    assert ours == pytest.approx(expected, rel=1e-3)


def test_kid_matches_numpy_on_the_same_subsets(features):
    real, fake = features
    mean, std = core.kid(real, fake, subsets=5, subset_size=200, seed=3)
    generator = torch.Generator().manual_seed(3)  # the same subsets core.kid draws
    scores = []
    for _ in range(5):
        r = torch.randperm(real.shape[0], generator=generator)[:200]
        f = torch.randperm(fake.shape[0], generator=generator)[:200]
        scores.append(numpy_mmd(real[r].double().numpy(), fake[f].double().numpy()))
    assert mean == pytest.approx(np.mean(scores), rel=1e-4)
    assert std == pytest.approx(np.std(scores), rel=1e-3)
    full, zero = core.kid(real[:300], fake[:300], subsets=2, subset_size=300)  # whole sets: order-free
    assert full == pytest.approx(numpy_mmd(real[:300].double().numpy(), fake[:300].double().numpy()), rel=1e-4)
    assert zero == pytest.approx(0.0, abs=1e-6 * abs(full) + 1e-12)


def test_precision_recall_matches_numpy(features):
    real, fake = features
    ours = core.precision_recall(real[:400], fake[:400], chunk=128)
    reference = numpy_precision_recall(real[:400].double().numpy(), fake[:400].double().numpy())
    assert ours == pytest.approx(reference, abs=1e-12)
    assert core.precision_recall(real, real) == (1.0, 1.0)


def test_class_coverage_and_collapse_warning():
    logits = torch.full((100, 10), -10.0)
    logits[torch.arange(100), torch.arange(100) % 10] = 10.0  # ten classes, confidently
    spread = core.class_coverage(logits)
    assert spread["classes_covered"] == 10 and spread["confident_share"] == 1.0
    assert spread["class_entropy"] == pytest.approx(math.log(10))
    assert core.collapse_warning(spread, 10) is None
    logits[:, :] = 0.0
    logits[:, 7] = 1.0  # every sample a (not confident) 7
    single = core.class_coverage(logits)
    assert single["classes_covered"] == 1 and single["class_entropy"] == 0.0 and single["confident_share"] == 0.0
    assert single["class_histogram"][7] == 1.0
    assert "mode collapse" in core.collapse_warning(single, 10)
