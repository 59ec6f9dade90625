"""What every model family gives the training loop: networks, phases, sampling.

A family describes its optimisation as data, the way StyleGAN2's loop does: a list of
phases, each naming the optimiser it steps and a function that returns its losses.
The one loop in ``genforge.train`` runs the phases; no family has its own trainer.
"""

from __future__ import annotations

from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from genforge.errors import GenforgeError
from genforge.nets import FlattenFrom, memory_format_of, relayout  # noqa: F401 (their home was here)


@dataclass
class Batch:
    """One training batch on the model's device: ``images`` already prepared by the family.
    Two-domain data (DiscoGAN) add a batch of domain B, drawn in its own order."""

    images: torch.Tensor  # (B, C, H, W) float
    labels: torch.Tensor  # (B,) int64
    images_b: torch.Tensor | None = None  # (B, C, H, W) float, domain B
    labels_b: torch.Tensor | None = None  # (B,) int64


@dataclass
class Phase:
    """One optimisation step of a family.

    ``step(batch)`` returns a dict of scalar tensors: ``"loss"`` is minimised by the
    optimiser ``optimizer``; the other entries are logged. An optional ``"gate"`` bool
    tensor skips the update when false (costs one host sync; only gated schedules use it).
    ``repeats`` runs the phase that many times per training step, each on a fresh batch
    (e.g. 5 critic steps per generator step). ``after``, if given, runs after each of the
    phase's optimiser steps (e.g. WGAN's weight clipping).
    """

    name: str
    optimizer: str
    step: Callable[[Batch], dict[str, torch.Tensor]]
    repeats: int = 1
    after: Callable[[], None] | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a family can do, declared as data: callers (the application layer, the CLI, the
    studio) read this instead of probing the model with ``hasattr``."""

    data: str = "images"  # "images" (B, C, H, W) or "points" (B, D): toy data
    classes: int = 0  # a conditional generator's class count (it can be asked for a class); 0 = unconditional
    latent: bool = True  # noise -> samples (sample_noise / generate): sampling, interpolation, arithmetic
    translator: bool = False  # two domains: ``translate(x, direction)`` with directions a2b and b2a
    rejection: bool = False  # discriminator rejection sampling when sampling (``reject``)
    encoder: bool = False  # images -> latent codes (``encode``, ``decode``) and reconstructions: a VAE
    likelihood: bool = False  # a test ELBO and an importance-weighted NLL (``test_elbo``, ``importance_nll``)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Context:
    """What training's end gives the metrics and pictures registered for a model
    (:func:`genforge.metrics.evaluate.final_metrics`, :func:`genforge.metrics.evaluate.write_report`):
    the run folder, both splits, the device and the VAE's importance samples per test image."""

    run_dir: Path
    train_data: Any  # genforge.data.datasets.ImageData
    test_data: Any
    device: torch.device
    num_importance: int
    progress: bool = True


class GenerativeModel(nn.Module):
    """Base class of the families: an ``nn.Module`` whose children are its networks.

    ``state_dict`` keys are ``<network>.<param>`` (e.g. ``generator.main.0.weight``).
    """

    family: ClassVar[str]
    ema_networks: ClassVar[tuple[str, ...]] = ()  # networks averaged when train.ema_decay > 0
    output_range: ClassVar[str] = "tanh"  # "tanh": images in [-1, 1]; "sigmoid": in [0, 1]
    two_domains: ClassVar[bool] = False  # trains on two domains (data.path_b / data.dataset=folders): translators
    progress: float = 0.0  # share of train.steps done before the current step (the loop sets it; 0 without steps)

    def __init__(self, cfg: Any, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.image_shape = image_shape
        self.num_classes = num_classes

    @classmethod
    def uncompilable(cls, cfg: Any) -> str:
        """Why ``torch.compile`` cannot train the model section ``cfg`` (one phrase naming the key),
        or "" where it can. Families override: its aot_autograd has no double backward, so a
        gradient penalty cannot be compiled. ``validate`` refuses ``train.compile=on`` with the
        reason; ``auto`` does not compile."""
        return ""

    @property
    def capabilities(self) -> Capabilities:
        """What this model can do (families override); callers read it, never ``hasattr``."""
        return Capabilities()

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser name -> the parameters it updates."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> the float input the networks expect ([-1, 1] or [0, 1])."""
        scaled = images.float() / 255.0
        return scaled * 2.0 - 1.0 if self.output_range == "tanh" else scaled

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """Network-space images -> [0, 1] for saving."""
        unit = (images + 1.0) / 2.0 if self.output_range == "tanh" else images
        return unit.clamp(0.0, 1.0)

    def sample_noise(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | None = None) -> torch.Tensor:
        raise NotImplementedError

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        """Noise (B, latent) -> images in [0, 1], (B, C, H, W)."""
        raise NotImplementedError

    def fixed_inputs(self, data: Any, n: int, generator: torch.Generator) -> torch.Tensor:
        """The CPU batch the loop's progress grids are generated from (``generate(fixed)``):
        ``n`` noise vectors here; a translation model picks fixed source images from ``data``."""
        return self.sample_noise(n, generator, torch.device("cpu"))

    def progress_image(self, fixed: torch.Tensor, data: Any) -> torch.Tensor:
        """The loop's progress picture from the fixed inputs, (C, H, W) in [0, 1]: by default the
        grid of ``generate(fixed)``; toy families draw data vs generated points (``data``: train split)."""
        from genforge.viz import make_grid

        return make_grid(self.generate(fixed).float().cpu())

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, batch_size: int = 500,
               reject: float | None = None) -> torch.Tensor:
        """``n`` images in [0, 1] on the CPU, generated in eval mode in chunks. ``reject``: the
        quantile of discriminator rejection sampling, for families that declare ``rejection``."""
        if reject:
            raise GenforgeError(f"rejection sampling needs a GAN with a BCE loss; a {self.family} model has no "
                                "discriminator to reject with")
        device = next(self.parameters()).device
        chunks = []
        with self.eval_mode():
            for start in range(0, n, batch_size):
                noise = self.sample_noise(min(batch_size, n - start), generator, device)
                chunks.append(self.generate(noise).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, *self.image_shape)

    @contextmanager
    def eval_mode(self):
        """Eval mode (batch norm's running statistics) inside the block; the previous mode after."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    @contextmanager
    def inference(self):
        """Eval mode, no gradients and the EMA weights inside the block; the previous mode after."""
        with self.eval_mode(), torch.no_grad(), self.ema_weights():
            yield self

    @contextmanager
    def ema_weights(self):
        """Within this block the sampling networks are their EMA copies (if training kept any)."""
        averages = getattr(self, "ema", None)
        if not averages:
            yield self
            return
        live = {name: self._modules[name] for name in averages}
        try:
            for name, average in averages.items():
                self._modules[name] = average
            yield self
        finally:
            self._modules.update(live)
