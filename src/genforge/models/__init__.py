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
    """The family's networks for a RunConfig, initialised from the global torch RNG."""
    return family_class(cfg.family)(cfg.model, image_shape, num_classes)
