"""genforge.data.augment: flip, brightness and contrast jitter of a batch, against a per-image reference."""

from __future__ import annotations

import pytest
import torch

from genforge.config import DataConfig
from genforge.data.augment import augment
from genforge.errors import GenforgeError

R5 = DataConfig(flip=True, brightness=0.1, contrast=0.1)


def batch(n: int = 64, low: float = -0.5, high: float = 0.5, channels: int = 3) -> torch.Tensor:
    """Images well inside [-1, 1] (so nothing is clamped), each with a left-right asymmetry."""
    g = torch.Generator().manual_seed(7)
    return low + (high - low) * torch.rand(n, channels, 8, 8, generator=g)


def reference(images: torch.Tensor, cfg: DataConfig, seed: int, low: float, high: float) -> torch.Tensor:
    """The same jitter one image at a time, from the same draws (one (B,) tensor per enabled op, in order)."""
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    flips = torch.rand(n, generator=g) if cfg.flip else None
    shifts = torch.rand(n, generator=g) if cfg.brightness else None
    factors = torch.rand(n, generator=g) if cfg.contrast else None
    out = []
    for i, image in enumerate(images):
        if flips is not None and flips[i] < 0.5:
            image = image.flip(-1)
        if shifts is not None:
            image = image + (-cfg.brightness + 2 * cfg.brightness * shifts[i]) * (high - low)
        if factors is not None:
            factor = 1 - cfg.contrast + 2 * cfg.contrast * factors[i]
            image = image.mean() + (image - image.mean()) * factor
        out.append(image.clamp(low, high))
    return torch.stack(out)


@pytest.mark.parametrize("cfg", [R5, DataConfig(flip=True), DataConfig(brightness=0.3), DataConfig(contrast=0.5)],
                         ids=["r5", "flip", "brightness", "contrast"])
@pytest.mark.parametrize("output_range, low, high", [("tanh", -1.0, 1.0), ("sigmoid", 0.0, 1.0)])
def test_matches_the_per_image_reference(cfg, output_range, low, high):
    images = batch(low=low + 0.2, high=high - 0.2)
    out = augment(images, cfg, torch.Generator().manual_seed(3), output_range=output_range)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.allclose(out, reference(images, cfg, 3, low, high), atol=1e-6)


def test_everything_off_returns_the_batch_untouched_without_drawing():
    images = batch()
    state = torch.get_rng_state()
    assert augment(images, DataConfig()) is images
    assert torch.equal(torch.get_rng_state(), state)  # runs without augmentation keep their RNG stream


def test_flip_mirrors_about_half_of_the_images():
    images = batch(256)
    out = augment(images, DataConfig(flip=True), torch.Generator().manual_seed(0))
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same ^ mirrored).all())  # each image is one or the other
    assert 96 < int(mirrored.sum()) < 160


def test_brightness_of_a_tenth_moves_at_most_a_fifth_in_tanh_range():
    images = batch(512)
    shift = (augment(images, DataConfig(brightness=0.1), torch.Generator().manual_seed(1)) - images).flatten(1)
    assert torch.allclose(shift.min(1).values, shift.max(1).values, atol=1e-6)  # one shift per image
    assert shift.abs().max() <= 0.2 + 1e-6 and shift.abs().max() > 0.18  # U(-0.1, 0.1) of the width 2


def test_contrast_keeps_each_mean_and_scales_the_spread():
    images = batch(512)
    out = augment(images, DataConfig(contrast=0.1), torch.Generator().manual_seed(2))
    assert torch.allclose(out.mean((1, 2, 3)), images.mean((1, 2, 3)), atol=1e-5)
    ratio = out.flatten(1).std(1) / images.flatten(1).std(1)
    assert ratio.min() >= 0.9 - 1e-5 and ratio.max() <= 1.1 + 1e-5
    assert ratio.min() < 0.92 and ratio.max() > 1.08


def test_output_stays_in_range_and_same_seed_same_result():
    images = torch.rand(32, 3, 8, 8) * 2 - 1
    cfg = DataConfig(flip=True, brightness=0.5, contrast=0.5)
    a = augment(images, cfg, torch.Generator().manual_seed(5))
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, augment(images, cfg, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, augment(images, cfg, torch.Generator().manual_seed(6)))


def test_global_rng_is_used_by_default():
    torch.manual_seed(11)
    a = augment(batch(), R5)
    torch.manual_seed(11)
    assert torch.equal(a, augment(batch(), R5))


@pytest.mark.parametrize("cfg, images, problem", [
    (DataConfig(contrast=1.5), batch(), "data.contrast in \\[0, 1\\)"),
    (DataConfig(brightness=-0.1), batch(), "data.brightness must be >= 0"),
    (DataConfig(flip=True), torch.rand(16, 2), "augment images .* shape \\(16, 2\\)"),
])
def test_bad_settings_are_one_line_errors(cfg, images, problem):
    with pytest.raises(GenforgeError, match=problem):
        augment(images, cfg)
