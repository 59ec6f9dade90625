"""Network blocks that several model families build from; no family imports another.

- memory layouts: :func:`relayout` and :class:`FlattenFrom` keep gradients in the layout of
  the activations they reach (CPU kernels on mixed layouts run up to 30x slower), and
  :func:`exact_grad_strides` gives gradients their weights' strides (as DDP's buckets want);
- DCGAN pieces (Radford et al. 2015, arXiv 1511.06434): stride-2 down and up blocks, the
  normalisations a discriminator may use, the N(0, 0.02) initialisation;
- convolutions whose bf16 CPU weight gradients are one matrix product (:class:`Conv2d`,
  :class:`ConvTranspose2d`; oneDNN's own run at a third of its forward rate);
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


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` (one shape) address their elements alike: their strides differ at most
    where a side has size 1, which no index uses."""
    return a.shape == b.shape and all(size == 1 or x == y for size, x, y in zip(a.shape, a.stride(), b.stride()))


def exact_grad_strides(module: nn.Module) -> int:
    """Hooks that hand each parameter laid out both ways at once (4-D with a side of size 1, e.g. a
    grey image layer's (C, 1, k, k) weight, channels-last and contiguous alike) its gradient with
    the parameter's own strides; returns how many were hooked.

    Autograd keeps a gradient whose strides differ from its parameter's only on a size-1 side (it
    addresses the same memory), but DistributedDataParallel compares all the strides with its
    bucket's and warns "Grad strides do not match bucket view strides" at every such gradient.
    The hook restrides a view in place of a copy, so the step is unchanged."""
    hooked = 0
    for param in module.parameters():
        if (param.requires_grad and param.dim() == 4 and param.is_contiguous()
                and param.is_contiguous(memory_format=torch.channels_last)):
            param.register_hook(lambda grad, param=param: _restrided(grad, param))
            hooked += 1
    return hooked


def _restrided(grad: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    if grad.stride() == param.stride():
        return grad
    if _same_layout(grad, param):  # the same addresses as the (dense) parameter: a view serves
        return grad.as_strided(param.shape, param.stride())
    return torch.empty_strided(param.shape, param.stride(), dtype=grad.dtype, device=grad.device).copy_(grad)


# --- convolutions with matrix-product gradients -----------------------------------------

_gemm_grads = [True]
# The narrowest im2col windows (kernel x kernel x channels) that take the matrix-product backward,
# for transposed and plain convolutions: below them oneDNN's own backward was as fast or faster
# (layer by layer on the Zen 5 bench CPU, bench/README.md: a transposed conv gains 1.2-2x at 2,048
# and 4,096 values and breaks even at 512; a plain conv gains 1.4x at 2,048 and loses 10-25% at
# 512 and 1,024).
MIN_GEMM_WINDOW = {True: 1024, False: 2048}


@contextmanager
def gemm_conv_grads(enabled: bool):
    """Inside the block, :class:`Conv2d`/:class:`ConvTranspose2d` use (``True``) or do not use
    (``False``) their matrix-product backward; for benches and tests that compare the two."""
    before = _gemm_grads[0]
    _gemm_grads[0] = enabled
    try:
        yield
    finally:
        _gemm_grads[0] = before


def _patches(t: torch.Tensor, padding: int, kernel: int, stride: int, rows: int, cols: int) -> torch.Tensor:
    """(N, C, H, W) -> (N*rows*cols, kernel*kernel*C): the zero-padded ``kernel`` x ``kernel``
    window at every stride-``stride`` position, (ky, kx, c) order: im2col, channels innermost."""
    t = F.pad(t.permute(0, 2, 3, 1), (0, 0, padding, padding, padding, padding)).contiguous()
    n, _, _, c = t.shape
    sn, sh, sw, sc = t.stride()
    windows = t.as_strided((n, rows, cols, kernel, kernel, c), (sn, stride * sh, stride * sw, sh, sw, sc))
    return windows.reshape(n * rows * cols, kernel * kernel * c)


def _pixels(t: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N*H*W, C), a view where ``t`` is channels-last."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


class _GemmGradConv(torch.autograd.Function):
    """A square stride-s convolution (or transposed convolution) whose weight gradient is one
    matrix product of the im2col windows with the pixels on the other side, and whose
    transposed convolution's input gradient reuses those windows. Measured on the Zen 5 bench
    CPU in bf16 (``bench/README.md``): the backward of the 32x32 DCGAN's wide layers 1.1-2x
    oneDNN's, whose bf16 weight gradients run at a third of its forward rate.
    The backward is built from differentiable operations: a gradient penalty (WGAN-GP, R1)
    backpropagates through it."""

    @staticmethod
    def forward(ctx, x, weight, bias, transposed: bool, stride: int, padding: int, output_padding: int):
        ctx.save_for_backward(x, weight)
        ctx.conf = (transposed, stride, padding, bias is not None)
        if transposed:
            return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        transposed, stride, padding, has_bias = ctx.conf
        kernel = weight.shape[-1]
        n, _, h, w = x.shape
        grad_bias = grad.sum((0, 2, 3)) if has_bias and ctx.needs_input_grad[2] else None
        grad_x = grad_w = None
        if transposed:  # out[o, s*i - p + k] += x[c, i] W[c, o, k]: the windows are grad's
            windows = _patches(grad, padding, kernel, stride, h, w)  # (N*H*W, k*k*Co)
            if ctx.needs_input_grad[1]:
                grad_w = (_pixels(x).t() @ windows).reshape(-1, kernel, kernel, weight.shape[1]).permute(0, 3, 1, 2)
            if ctx.needs_input_grad[0]:
                flat = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)  # (Ci, k*k*Co)
                grad_x = (windows @ flat.t()).reshape(n, h, w, -1).permute(0, 3, 1, 2)
        else:  # out[o, i] = sum x[c, s*i - p + k] W[o, c, k]: the windows are x's
            rows, cols = grad.shape[-2:]
            if ctx.needs_input_grad[1]:
                windows = _patches(x, padding, kernel, stride, rows, cols)  # (N*Ho*Wo, k*k*Ci)
                grad_w = (_pixels(grad).t() @ windows).reshape(-1, kernel, kernel, x.shape[1]).permute(0, 3, 1, 2)
            if ctx.needs_input_grad[0] and _narrow(weight.shape[1], kernel):
                grad_x = _overlap_add(_pixels(grad) @ weight.reshape(weight.shape[0], -1), n, rows, cols, (h, w),
                                      kernel, stride, padding)
            elif ctx.needs_input_grad[0]:
                extra = h - ((rows - 1) * stride - 2 * padding + kernel)
                grad_x = F.conv_transpose2d(grad, weight, None, stride, padding, extra)
        return grad_x, grad_w, grad_bias, None, None, None, None


# Layers on the image side of a grey DCGAN (one channel; kernel x kernel at most this many values) run
# as matrix products and an overlap-add (F.fold): a transposed conv to the image (its forward, where
# oneDNN's bf16 kernel for one output channel ran at 6% of the peak) and a plain conv from it (its input
# gradient). Measured on a Zen 4 (bench/README.md): 0.77 against 3.4 ms and 0.65 against 2.4 ms for
# dcgan-32's; with three channels (RGB) F.fold lost, 0.3-0.8x, so colour layers keep oneDNN's. 0 = off.
MAX_NARROW_WINDOW = [25]


def _narrow(image_channels: int, kernel: int) -> bool:
    return image_channels == 1 and kernel * kernel <= MAX_NARROW_WINDOW[0]


def _overlap_add(cols: torch.Tensor, n: int, rows: int, width: int, size: tuple[int, int], kernel: int, stride: int,
                 padding: int) -> torch.Tensor:
    """col2im: (N*rows*width, C*k*k) patch values in (c, ky, kx) order, one row per stride position ->
    (N, C, *size), each patch added at its place (the adjoint of :func:`_patches`, laid out as F.fold's)."""
    cols = cols.reshape(n, rows * width, -1).transpose(1, 2)
    return F.fold(cols, size, kernel, padding=padding, stride=stride)


def computes_bf16_on_cpu(x: torch.Tensor) -> bool:
    """Whether an operation on ``x`` computes in bf16 on the CPU: a bf16 tensor, or CPU autocast to bf16."""
    return x.device.type == "cpu" and (x.dtype is torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") is torch.bfloat16))


def _structural(conv: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor) -> tuple[int, int] | None:
    """(stride, padding) where ``conv`` on ``x`` may take a matrix-product form: a bf16 computation on the
    CPU, a square kernel, one stride and one padding for both sides, no groups or dilation; else None."""
    if not (_gemm_grads[0] and x.dim() == 4 and computes_bf16_on_cpu(x)):
        return None
    (ky, kx), (sy, sx), padding = conv.kernel_size, conv.stride, conv.padding
    if not (ky == kx and sy == sx and not isinstance(padding, str) and padding[0] == padding[1]
            and conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros"):
        return None
    return sy, padding[0]


def up_by_fold(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int,
               output_padding: int = 0) -> torch.Tensor:
    """``F.conv_transpose2d`` with a square kernel, as one matrix product of the pixels with the weights
    (Ci, Co, k, k) and an overlap-add; differentiable as it stands (autograd's own backward)."""
    n, c_in, h, w = x.shape
    kernel = weight.shape[-1]
    size = tuple((d - 1) * stride - 2 * padding + kernel + output_padding for d in (h, w))
    out = _overlap_add(_pixels(x) @ weight.reshape(c_in, -1), n, h, w, size, kernel, stride, padding)
    return out if bias is None else out + bias[:, None, None]


def _narrow_up(conv: nn.ConvTranspose2d, x: torch.Tensor, output_padding: int) -> torch.Tensor | None:
    """A transposed conv to a grey image by :func:`up_by_fold` in bf16 (training and sampling alike), or
    None where the rule keeps oneDNN's."""
    conf = _structural(conv, x)
    if conf is None or not _narrow(conv.out_channels, conv.kernel_size[0]):
        return None
    bf16 = torch.bfloat16
    bias = None if conv.bias is None else conv.bias.to(bf16)
    with torch.autocast("cpu", enabled=False):
        out = up_by_fold(x.to(bf16), conv.weight.to(bf16), bias, *conf, output_padding)
    return out.contiguous(memory_format=memory_format_of(x))


def _gemm_conf(conv: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor) -> tuple[int, int] | None:
    """(stride, padding) where ``conv`` on ``x`` takes the matrix-product backward (:func:`_structural`'s
    conditions, under autograd): a conv from a grey image that passes its input a gradient (its input
    gradient by overlap-add), or a layer that trains its weights with windows of at least
    ``MIN_GEMM_WINDOW`` values; None where oneDNN's own backward serves."""
    conf = _structural(conv, x)
    if conf is None or not torch.is_grad_enabled():
        return None
    transposed, kernel = isinstance(conv, nn.ConvTranspose2d), conv.kernel_size[0]
    if not transposed and x.requires_grad and _narrow(conv.in_channels, kernel):
        return conf  # a conv from an image that passes a gradient back (G's fakes): its input gradient by fold
    if not conv.weight.requires_grad:
        return None
    if kernel * kernel * (conv.out_channels if transposed else conv.in_channels) < MIN_GEMM_WINDOW[transposed]:
        return None
    return conf


def _gemm_conv(conv: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor, output_padding: int | None) -> torch.Tensor | None:
    """``conv(x)`` through :class:`_GemmGradConv` (``output_padding`` None for a plain convolution),
    or None where :func:`_gemm_conf` says no."""
    conf = _gemm_conf(conv, x)
    if conf is None:
        return None
    bf16 = torch.bfloat16
    bias = None if conv.bias is None else conv.bias.to(bf16)
    with torch.autocast("cpu", enabled=False):
        return _GemmGradConv.apply(x.to(bf16), conv.weight.to(bf16), bias, output_padding is not None, *conf,
                                   output_padding or 0)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state) with the matrix-product backward of
    :class:`_GemmGradConv` where :func:`_gemm_conf` allows it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _gemm_conv(self, x, None)
        return super().forward(x) if out is None else out


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same parameters and state) with the matrix-product backward of
    :class:`_GemmGradConv` where :func:`_gemm_conf` allows it."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        square = output_size is None and self.output_padding[0] == self.output_padding[1]
        out = None
        if square:
            out = _narrow_up(self, x, self.output_padding[0])
            out = _gemm_conv(self, x, self.output_padding[0]) if out is None else out
        return super().forward(x, output_size) if out is None else out


# --- DCGAN blocks -----------------------------------------------------------------------

KERNELS = range(3, 8)  # the kernel sizes a stride-2 block takes


def stride2_padding(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) with which a stride-2 conv of ``kernel`` halves an even side
    exactly and the transposed conv doubles it: 4 -> (1, 0), 5 -> (2, 1), like TF's 'SAME'."""
    padding = (kernel - 1) // 2
    return padding, 2 + 2 * padding - kernel


_splits: list[list[int] | None] = [None]


@contextmanager
def split_batches(sizes: list[int]):
    """Inside the block, :class:`BatchNorm2d` in training normalises each consecutive part of the batch
    of these ``sizes`` by its own statistics (and updates its running statistics part by part, in
    order): one pass of a network over several batches stacked computes what separate passes would,
    in larger matrix products (D's real and fake batches)."""
    before = _splits[0]
    _splits[0] = list(sizes)
    try:
        yield
    finally:
        _splits[0] = before


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters and state) that honours :func:`split_batches`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = _splits[0]
        if sizes is None or not self.training or len(sizes) < 2:
            return super().forward(x)
        if sum(sizes) != x.shape[0]:
            raise ValueError(f"split_batches({sizes}) does not add up to the batch of {x.shape[0]}")
        return torch.cat([super(BatchNorm2d, self).forward(part) for part in x.split(sizes)])


def conv_norm(kind: str, channels: int) -> nn.Module:
    """A discriminator's normalisation after a hidden conv: batch (DCGAN), layer or instance
    (GroupNorm with one group or one group per channel: no batch statistics, so WGAN-GP's
    per-sample gradient is clean); anything else is none."""
    if kind == "batch":
        return BatchNorm2d(channels)
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
        return [Conv2d(c_in, c_out, kernel, 2, padding), nn.LeakyReLU(0.2, True)]
    return [Conv2d(c_in, c_out, kernel, 2, padding, bias=norm == "none"), conv_norm(norm, c_out),
            nn.LeakyReLU(0.2, True)]


def up_block(c_in: int, c_out: int, kernel: int = 4) -> list[nn.Module]:
    """Transposed conv ``kernel``/2 (no bias) -> BN -> ReLU: doubles the side."""
    padding, extra = stride2_padding(kernel)
    return [ConvTranspose2d(c_in, c_out, kernel, 2, padding, extra, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(True)]


def up_to_image(c_in: int, channels: int, kernel: int = 4) -> list[nn.Module]:
    """The last up block: transposed conv ``kernel``/2 (with bias) to the image's channels, tanh."""
    padding, extra = stride2_padding(kernel)
    return [ConvTranspose2d(c_in, channels, kernel, 2, padding, extra), nn.Tanh()]


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
