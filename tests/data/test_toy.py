"""The 2-D Gaussian-mixture domains of DiscoGAN's toy and the two-domain datasets."""

from __future__ import annotations

import pytest
import torch

from genforge.data.datasets import load_images, resize_images
from genforge.data.toy import TOYS, toy_domains

from ..conftest import SHARED_DATASETS


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_shapes_labels_and_modes(name):
    spec = TOYS[name]
    data = load_images(name, "train")
    assert data.images.shape == (512, 2) and data.images.dtype == torch.float32
    assert data.images_b.shape == (512, 2) and data.labels_b.shape == (512,)
    assert set(data.labels.tolist()) == set(range(len(spec.means_a)))
    assert set(data.labels_b.tolist()) == set(range(len(spec.means_b)))
    for points, labels, means in ((data.images, data.labels, spec.means_a), (data.images_b, data.labels_b, spec.means_b)):
        for k, mean in enumerate(means):
            cluster = points[labels == k]
            assert torch.allclose(cluster.mean(0), torch.tensor(mean), atol=4 * spec.std / len(cluster) ** 0.5 + 1e-3)
            assert cluster.std(0).mean().item() == pytest.approx(spec.std, rel=0.25)


def test_toy_is_seeded_and_splits_differ():
    a1, la1, b1, _ = toy_domains("gmm-discogan", "train")
    a2, la2, b2, _ = toy_domains("gmm-discogan", "train")
    test = toy_domains("gmm-discogan", "test")[0]
    assert torch.equal(a1, a2) and torch.equal(la1, la2) and torch.equal(b1, b2)
    assert not torch.equal(a1, test)


def test_faithful_toy_modes_and_wide_option():
    assert TOYS["gmm-discogan"].means_a == ((0, 0), (2, 2), (-1, -1), (1, -1), (-1, 1))
    assert TOYS["gmm-discogan"].means_b == ((-1, -1), (1, 1))
    assert TOYS["gmm-discogan"].std == 0.1
    assert TOYS["gmm-discogan-wide"].std == pytest.approx(0.316, abs=1e-3)
    assert len(TOYS["gmm-ring"].means_a) == 5 and len(TOYS["gmm-ring"].means_b) == 10


def test_points_pass_through_resize():
    points = torch.randn(8, 2)
    assert resize_images(points, 32) is points
    data = load_images("gmm-ring", "test").resized(32)
    assert data.images.shape == (512, 2) and data.images_b.shape == (512, 2)


@pytest.mark.skipif(not (SHARED_DATASETS / "fashion-mnist").is_dir(), reason="Fashion-MNIST not in ../shared/datasets")
def test_fashion_bags_shoes_domains():
    data = load_images("fashion-bags-shoes", "test", SHARED_DATASETS)
    assert set(data.labels.tolist()) == {8}
    assert set(data.labels_b.tolist()) == {5, 7, 9}
    assert len(data) == 1000 and len(data.images_b) == 3000
    resized = data.resized(32)
    assert resized.images.shape[1:] == (1, 32, 32) and resized.images_b.shape[1:] == (1, 32, 32)
