"""The metrics rank what they should: real data near zero, collapse and noise far worse."""

from __future__ import annotations

import torch

from genforge.config import load_recipe
from genforge.metrics import core
from genforge.metrics.evaluate import EvalInputs, FeatureSet, feature_metrics
from genforge.metrics.extractor import extract
from genforge.models import build_model


def feature_set(extractor, images) -> FeatureSet:
    return FeatureSet(*extract(extractor, images, with_logits=True))


def test_real_vs_real_fid_near_zero_and_far_below_an_untrained_generator(extractor, digits):
    _, test = digits
    first, second = feature_set(extractor, test.images[:500]), feature_set(extractor, test.images[500:])
    real_fid = core.fid(first.features, second.features)

    torch.manual_seed(0)
    cfg = load_recipe("mnist-dcgan")
    untrained = build_model(cfg, (1, 28, 28), 10)
    noise_images = untrained.sample(500, torch.Generator().manual_seed(0))
    untrained_fid = core.fid(first.features, extract(extractor, noise_images))

    assert real_fid < 0.05 * untrained_fid, (real_fid, untrained_fid)
    assert real_fid < 5.0, real_fid  # a sampling-noise floor: the features of one domain, 500 vs 500


def test_one_digit_scores_worse_than_all_ten(extractor, digits):
    train, test = digits
    reference = feature_set(extractor, test.images)
    threes = train.images[train.labels == 3][:500]
    mixed = train.images[:500]
    one = feature_metrics(EvalInputs(reference, feature_set(extractor, threes)))
    ten = feature_metrics(EvalInputs(reference, feature_set(extractor, mixed)))
    assert one["fid"] > 5 * ten["fid"]
    assert one["kid"] > ten["kid"]
    assert one["recall"] < ten["recall"]
    assert one["classes_covered"] == 1 and ten["classes_covered"] == 10
    assert one["class_entropy"] < 0.2 < 2.0 < ten["class_entropy"]


def test_extractor_accepts_32px_padded_digits(extractor, digits):
    from genforge.data.datasets import resize_images

    _, test = digits
    at28 = extract(extractor, test.images[:64])
    at32 = extract(extractor, resize_images(test.images[:64], 32))
    torch.testing.assert_close(at28, at32)
