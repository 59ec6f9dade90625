"""The model families, by name. A registry, not a string-to-class lookup across the code."""

from __future__ import annotations

from typing import Any

from genforge.errors import GenforgeError
from genforge.models.base import GenerativeModel
from genforge.models.discogan import DiscoGAN
from genforge.models.gan import GAN
from genforge.models.vae import VAE

FAMILIES: dict[str, type[GenerativeModel]] = {cls.family: cls for cls in (VAE, GAN, DiscoGAN)}


def family_class(name: str) -> type[GenerativeModel]:
    try:
        return FAMILIES[name]
    except KeyError:
        raise GenforgeError(f"unknown model family '{name}'; known: {', '.join(FAMILIES)}") from None


def family_config(name: str) -> type:
    return family_class(name).Config


def build_model(cfg: Any, image_shape: tuple[int, int, int], num_classes: int) -> GenerativeModel:
    """The family's networks for a RunConfig, initialised from the global torch RNG. Sizes too large
    for this machine's memory (model.latent_dim=99999999999) are refused in one line."""
    try:
        return family_class(cfg.family)(cfg.model, image_shape, num_classes)
    except (MemoryError, RuntimeError) as error:
        text = str(error)
        if not isinstance(error, MemoryError) and "allocate" not in text and "out of memory" not in text:
            raise
        from genforge.errors import GenforgeError

        first = text.strip().splitlines()[0][:160] if text.strip() else "out of memory"
        raise GenforgeError(f"the {cfg.family} model's networks do not fit in memory ({first}); make the model "
                            "smaller (model.* sizes such as latent_dim, width, hidden)") from None
