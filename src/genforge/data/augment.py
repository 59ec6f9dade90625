"""Augmentation of a training batch on its device, as tensors: no per-image Python.

The R5 recipe's jitter: a random horizontal flip, a brightness shift of up to
``data.brightness`` of the value range and a contrast factor in
``[1 - data.contrast, 1 + data.contrast]``, each drawn per image.
"""

from __future__ import annotations

import torch

from genforge.errors import GenforgeError

VALUE_RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}  # GenerativeModel.output_range -> (low, high)


def augment(images: torch.Tensor, cfg, generator: torch.Generator | None = None,
            output_range: str = "tanh") -> torch.Tensor:
    """Flip, brightness and contrast jitter of a float batch (B, C, H, W) in network range.

    Args:
        images: prepared images, in [-1, 1] (``output_range="tanh"``, the default) or [0, 1]
            (``"sigmoid"``).
        cfg: the data config (:class:`genforge.config.DataConfig`); reads ``flip`` (bool),
            ``brightness`` (b: shift by U(-b, b) times the range's width, i.e. +-0.1 of
            [0, 1] is +-0.2 in [-1, 1]) and ``contrast`` (c: scale about the image's mean
            by U(1 - c, 1 + c)).
        generator: the random source (default: torch's global one, which checkpoints save,
            so resumed runs draw the same jitter); it must live on the images' device.
        output_range: ``"tanh"`` or ``"sigmoid"``, the model's ``output_range``.

    Returns ``images`` itself, untouched and without drawing any random number, when every
    augmentation is off; otherwise a new tensor clamped to the range.
    """
    if not (cfg.flip or cfg.brightness or cfg.contrast):
        return images
    if cfg.brightness < 0 or cfg.contrast < 0 or cfg.contrast >= 1:
        raise GenforgeError(f"data.brightness must be >= 0 and data.contrast in [0, 1); got "
                            f"{cfg.brightness} and {cfg.contrast}")
    if images.ndim != 4:
        raise GenforgeError(f"data.flip/brightness/contrast augment images (B, C, H, W); this data has shape "
                            f"{tuple(images.shape)}: turn them off")
    low, high = VALUE_RANGES[output_range]
    batch = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:  # (B, 1, 1, 1): one value per image
        draw = torch.rand(batch, 1, 1, 1, generator=generator, device=images.device, dtype=images.dtype)
        return lo + (hi - lo) * draw

    out = images
    if cfg.flip:
        out = torch.where(uniform(0.0, 1.0) < 0.5, out.flip(-1), out)
    if cfg.brightness:
        out = out + uniform(-cfg.brightness, cfg.brightness) * (high - low)
    if cfg.contrast:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        out = mean + (out - mean) * uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast)
    return out.clamp(low, high)
