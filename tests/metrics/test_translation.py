"""Judging translators: where translated toy points land, diversity, and the Fashion-MNIST judge."""

from __future__ import annotations

import pytest
import torch

from genforge.data.datasets import load_images
from genforge.metrics.modes import mode_stats, translation_mode_metrics
from genforge.metrics.translation import fashion_translation_metrics, pairwise_diversity

from ..conftest import SHARED_DATASETS

HAS_FASHION = (SHARED_DATASETS / "fashion-mnist").is_dir()


def test_mode_metrics_perfect_and_collapsed():
    means = torch.tensor([[2.0 * k, 0.0] for k in range(10)])
    source = torch.arange(5).repeat_interleave(40)
    noise = 0.1 * torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    perfect = translation_mode_metrics(means[2 * source] + noise, source, means, 0.1)
    assert perfect["distinct_modes"] == 5 and perfect["distinct_fraction"] == 1.0
    assert perfect["high_quality"] > 0.95 and perfect["modes_covered"] == 5 and perfect["mapping_purity"] > 0.95
    collapsed = translation_mode_metrics(means[torch.zeros_like(source)] + noise, source, means, 0.1)
    assert collapsed["distinct_modes"] == 1 and collapsed["distinct_fraction"] == 0.2
    assert collapsed["modes_covered"] == 1
    off = translation_mode_metrics(torch.full((200, 2), 1.0), source, means, 0.1)  # between two modes: low quality
    assert off["high_quality"] == 0.0 and off["distinct_modes"] == 0


def test_mode_stats_and_diversity():
    data = load_images("gmm-ring", "train")
    means, std = mode_stats(data.images_b, data.labels_b)
    assert means.shape == (10, 2) and std == pytest.approx(0.1, rel=0.1)
    same = torch.ones(10, 1, 4, 4)
    assert pairwise_diversity(same) == 0.0
    assert pairwise_diversity(torch.rand(10, 1, 4, 4)) > 0.5


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST not in ../shared/datasets")
def test_fashion_judge_scores_real_shoes_well_and_a_collapsed_translation_badly():
    from genforge.metrics.extractor import load_extractor

    data = load_images("fashion-bags-shoes", "test", str(SHARED_DATASETS))
    shoes = data.images_b[:400].float() / 255.0
    extractor = load_extractor("fashion-mnist")
    real = fashion_translation_metrics(extractor, shoes[:200], shoes[200:], "a2b")
    assert real["a2b_fashion_classifier_acc"] > 0.95
    assert 0.8 < real["a2b_feature_diversity_ratio"] < 1.2
    collapsed = fashion_translation_metrics(extractor, shoes[:1].expand(200, -1, -1, -1), shoes[200:], "a2b")
    assert collapsed["a2b_feature_diversity_ratio"] < 1e-6
    assert collapsed["a2b_feature_fid"] > real["a2b_feature_fid"] + 10
    bags = data.images[:200].float() / 255.0
    assert fashion_translation_metrics(extractor, bags, shoes[200:], "a2b")["a2b_fashion_classifier_acc"] < 0.05
