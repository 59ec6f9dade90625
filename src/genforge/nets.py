"""Network blocks that several model families build from; no family imports another.

- memory layouts: :func:`relayout` and :class:`FlattenFrom` keep gradients in the layout of
  the activations they reach (CPU kernels on mixed layouts run up to 30x slower);
- DCGAN pieces (Radford et al. 2015, arXiv 1511.06434): stride-2 down and up blocks, the
  normalisations a discriminator may use, the N(0, 0.02) initialisation;
- an MLP that also returns its hidden activations (feature matching), maxout units;
- :func:`frozen`, for a generator step through a discriminator that must not be updated.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

# --- memory layouts ---------------------------------------------------------------------

def memory_format_of(tensor: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D tensor laid out NHWC (and not also NCHW), else contiguous."""
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class _Relayout(torch.autograd.Function):
    """``x`` copied into ``layout``; its gradient is copied back into ``x``'s own layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
        ctx.source = memory_format_of(x)
        return x.contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # differentiable: WGAN-GP and R1 backpropagate through it
        return grad.contiguous(memory_format=ctx.source), None


def relayout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """``x`` in memory layout ``layout``, with gradients that come back in ``x``'s layout.

    Where a network changes layout (a channels-last feature map flattened for a linear layer,
    or a linear layer's output unflattened for channels-last convolutions), autograd would
    hand the activation functions gradients in the other layout than their saved outputs,
    and CPU kernels on mixed layouts run up to 30x slower than on matching ones."""
    if memory_format_of(x) == layout or not x.requires_grad:
        return x.contiguous(memory_format=layout)
    return _Relayout.apply(x, layout)


class FlattenFrom(nn.Flatten):
    """``nn.Flatten`` whose gradient keeps the layout of its (possibly channels-last) input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(relayout(x, torch.contiguous_format))


# --- DCGAN blocks -----------------------------------------------------------------------

KERNELS = range(3, 8)  # the kernel sizes a stride-2 block takes


def stride2_padding(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) with which a stride-2 conv of ``kernel`` halves an even side
    exactly and the transposed conv doubles it: 4 -> (1, 0), 5 -> (2, 1), like TF's 'SAME'."""
    padding = (kernel - 1) // 2
    return padding, 2 + 2 * padding - kernel


def conv_norm(kind: str, channels: int) -> nn.Module:
    """A discriminator's normalisation after a hidden conv: batch (DCGAN), layer or instance
    (GroupNorm with one group or one group per channel: no batch statistics, so WGAN-GP's
    per-sample gradient is clean); anything else is none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels)
    return nn.Identity()


def down_block(c_in: int, c_out: int, kernel: int = 4, norm: str | None = None) -> list[nn.Module]:
    """Conv ``kernel``/2 -> [norm] -> LeakyReLU 0.2: halves the side. ``norm=None`` is a first
    layer (a bias, no normalisation module); a kind (see :func:`conv_norm`) follows the conv
    with it, the conv then having a bias only when the kind is ``none``."""
    padding, _ = stride2_padding(kernel)
    if norm is None:
        return [nn.Conv2d(c_in, c_out, kernel, 2, padding), nn.LeakyReLU(0.2, True)]
    return [nn.Conv2d(c_in, c_out, kernel, 2, padding, bias=norm == "none"), conv_norm(norm, c_out),
            nn.LeakyReLU(0.2, True)]


def up_block(c_in: int, c_out: int, kernel: int = 4) -> list[nn.Module]:
    """Transposed conv ``kernel``/2 (no bias) -> BN -> ReLU: doubles the side."""
    padding, extra = stride2_padding(kernel)
    return [nn.ConvTranspose2d(c_in, c_out, kernel, 2, padding, extra, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(True)]


def up_to_image(c_in: int, channels: int, kernel: int = 4) -> list[nn.Module]:
    """The last up block: transposed conv ``kernel``/2 (with bias) to the image's channels, tanh."""
    padding, extra = stride2_padding(kernel)
    return [nn.ConvTranspose2d(c_in, channels, kernel, 2, padding, extra), nn.Tanh()]


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: every conv/linear weight from N(0, 0.02); BN scale from N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


# --- MLP blocks -------------------------------------------------------------------------

class MLP(nn.Module):
    """in -> hidden (ReLU) -> hidden (ReLU) -> out, linear output; ``features`` also returns the
    hidden activations (what feature matching compares)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim_in, hidden), nn.Linear(hidden, hidden)])
        self.out = nn.Linear(hidden, dim_out)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for layer in self.layers:
            x = F.relu(layer(x))
            feats.append(x)
        return self.out(x), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]


class Maxout(nn.Module):
    """The largest of ``pieces`` linear maps of the input, per unit (Goodfellow et al. 2013)."""

    def __init__(self, width_in: int, width_out: int, pieces: int):
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(width_in, width_out * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).unflatten(-1, (-1, self.pieces)).amax(-1)


@contextmanager
def frozen(module: nn.Module):
    """No parameter gradients for ``module`` inside the block; gradients still flow through it."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
