"""nets' convolutions with matrix-product gradients: the same numbers as PyTorch's own
convolution gradients (float64, to rounding; bf16, to bf16's rounding), through a gradient
penalty too, taken only where the rule says, and a model that trains on them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from genforge import nets
from genforge.nets import Conv2d, ConvTranspose2d, _GemmGradConv, gemm_conv_grads
from genforge.train import train
from tests.conftest import tiny_config

BF16 = torch.bfloat16


def _reference(x, w, b, transposed, stride, padding, extra):
    if transposed:
        return F.conv_transpose2d(x, w, b, stride, padding, extra)
    return F.conv2d(x, w, b, stride, padding)


@settings(max_examples=40, deadline=None)
@given(transposed=st.booleans(), kernel=st.integers(1, 5), stride=st.integers(1, 3), padding=st.integers(0, 2),
       size=st.integers(3, 9), c_in=st.integers(1, 4), c_out=st.integers(1, 4), bias=st.booleans(),
       last=st.booleans(), data=st.data())
def test_gradients_and_a_penalty_through_them_equal_pytorchs_own(transposed, kernel, stride, padding, size, c_in,
                                                                   c_out, bias, last, data):
    padding = min(padding, kernel - 1)
    extra = data.draw(st.integers(0, stride - 1)) if transposed and stride > 1 else 0
    if not transposed and size + 2 * padding < kernel:
        return
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, size, size, dtype=torch.float64, generator=gen)
    w = torch.randn(*((c_in, c_out) if transposed else (c_out, c_in)), kernel, kernel, dtype=torch.float64,
                    generator=gen)
    if last:  # the layout the DCGANs train in
        x, w = (t.contiguous(memory_format=torch.channels_last) for t in (x, w))
    x.requires_grad_(True)
    w.requires_grad_(True)
    b = torch.randn(c_out, dtype=torch.float64, generator=gen, requires_grad=True) if bias else None
    inputs = [t for t in (x, w, b) if t is not None]
    ref = _reference(x, w, b, transposed, stride, padding, extra)
    out = _GemmGradConv.apply(x, w, b, transposed, stride, padding, extra)
    assert torch.equal(out, ref)  # the forward is PyTorch's own
    grad = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    ours = torch.autograd.grad(out, inputs, grad, create_graph=True)
    theirs = torch.autograd.grad(ref, inputs, grad, create_graph=True)
    for a, e in zip(ours, theirs):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    # a gradient penalty (WGAN-GP, R1) differentiates the input gradient once more
    second = torch.autograd.grad(ours[0].square().sum(), [w], retain_graph=True)[0]
    expected = torch.autograd.grad(theirs[0].square().sum(), [w], retain_graph=True)[0]
    torch.testing.assert_close(second, expected, rtol=1e-9, atol=1e-9)


def _big(transposed: bool) -> nn.Module:
    """A layer wide enough for the rule (DCGAN's transposed conv to 64 maps, or a plain one from 128)."""
    layer = ConvTranspose2d(128, 64, 4, 2, 1, bias=False) if transposed else Conv2d(128, 16, 4, 2, 1)
    return layer.to(memory_format=torch.channels_last)


@pytest.mark.parametrize("transposed", [False, True])
def test_bf16_layer_takes_the_matrix_product_backward_with_oneDNNs_numbers(transposed):
    torch.manual_seed(0)
    layer = _big(transposed)
    x = torch.randn(8, 128, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    results = {}
    for gemm in (True, False):
        with gemm_conv_grads(gemm), torch.autocast("cpu", dtype=BF16):
            out = layer(x)
        assert out.dtype is BF16
        assert (type(out.grad_fn).__name__ == "_GemmGradConvBackward") is gemm
        grad = torch.ones_like(out)
        results[gemm] = (out.detach(), *torch.autograd.grad(out, [x, *layer.parameters()], grad))
    assert torch.equal(results[True][0], results[False][0])  # one forward kernel
    for ours, theirs in zip(results[True][1:], results[False][1:]):
        assert ours.dtype == theirs.dtype  # float32 master weights get float32 gradients, as under autocast
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=0.02, atol=0.02 * theirs.abs().max().item())


def test_the_rule_keeps_oneDNN_where_the_matrix_product_does_not_pay_or_does_not_apply():
    x = torch.randn(2, 128, 6, 6)
    big = _big(False)
    with torch.autocast("cpu", dtype=BF16):
        assert nets._gemm_conf(big, x) == (2, 1)
        assert nets._gemm_conf(Conv2d(1, 16, 4, 2, 1), x[:, :1]) is None  # a 16-value window: oneDNN's
        assert nets._gemm_conf(Conv2d(128, 16, 4, 2, 1, dilation=2), x) is None
        assert nets._gemm_conf(Conv2d(128, 16, 4, 2, 1, groups=2), x) is None
        assert nets._gemm_conf(Conv2d(128, 16, (4, 3), 2, 1), x) is None
        assert nets._gemm_conf(Conv2d(128, 16, 4, (2, 1), 1), x) is None
        assert nets._gemm_conf(Conv2d(128, 16, 4, 1, "same"), x) is None
        with torch.no_grad():  # sampling: no backward to speed up
            assert nets._gemm_conf(big, x) is None
        with nets.frozen(big):  # a frozen D in G's step passes gradients through, computes none of its own
            assert nets._gemm_conf(big, x) is None
        with gemm_conv_grads(False):
            assert nets._gemm_conf(big, x) is None
    assert nets._gemm_conf(big, x) is None  # float32: PyTorch's plain path, untouched
    assert nets._gemm_conf(big, x.to(BF16)) == (2, 1)  # bf16 tensors without autocast


def test_layers_keep_nn_state_and_take_pytorchs_path_in_float32():
    torch.manual_seed(0)
    ours, theirs = Conv2d(3, 4, 4, 2, 1), nn.Conv2d(3, 4, 4, 2, 1)
    theirs.load_state_dict(ours.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(ours(x), theirs(x))
    up = ConvTranspose2d(4, 3, 4, 2, 1)
    assert up(torch.randn(2, 4, 4, 4), output_size=[9, 9]).shape[-2:] == (9, 9)  # nn's output_size still works


@pytest.mark.parametrize("loss", ["nonsaturating", "wgan-gp"])
def test_a_dcgan_trains_on_them_to_the_losses_oneDNNs_gradients_give(tmp_path, monkeypatch, loss):
    """Every conv of a tiny DCGAN on the matrix-product backward (the rule's widths set to 0), bf16,
    60 steps: the logged losses within 5% of the same run on oneDNN's own gradients (both bf16;
    the rounding differs, so they are not equal). WGAN-GP's penalty differentiates through them."""
    from genforge import runtime

    monkeypatch.setattr(runtime, "bf16_supported", lambda device: True)
    monkeypatch.setattr(nets, "MIN_GEMM_WINDOW", {True: 0, False: 0})
    calls = []
    backward = _GemmGradConv.backward
    monkeypatch.setattr(_GemmGradConv, "backward", staticmethod(lambda ctx, g: calls.append(1) or backward(ctx, g)))
    losses = {}
    for gemm in (True, False):
        cfg = tiny_config("mnist-dcgan", "train.steps=60", "train.log_every=20", "train.precision=bf16",
                          "optim.lr=2e-4", f"model.loss={loss}")
        with gemm_conv_grads(gemm):
            train(cfg, tmp_path / str(gemm), progress=False)
        rows = (tmp_path / str(gemm) / "metrics.jsonl").read_text().splitlines()
        losses[gemm] = [r for r in map(json.loads, rows) if "images_per_s" in r][-1]
        if gemm:
            assert len(calls) > 0
            calls.clear()
    assert not calls  # switched off, it never ran
    keys = [k for k in losses[False] if k.endswith("/loss")]
    assert keys
    for key in keys:
        assert losses[True][key] == pytest.approx(losses[False][key], rel=0.05), key


@settings(max_examples=30, deadline=None)
@given(kernel=st.integers(1, 5), stride=st.integers(1, 3), padding=st.integers(0, 2), size=st.integers(1, 7),
       c_in=st.integers(1, 5), c_out=st.integers(1, 3), bias=st.booleans(), last=st.booleans(), data=st.data())
def test_a_transposed_conv_by_fold_equals_pytorchs_with_its_gradients_and_a_penalty(kernel, stride, padding, size, c_in,
                                                                                    c_out, bias, last, data):
    padding = min(padding, kernel - 1)
    extra = data.draw(st.integers(0, stride - 1)) if stride > 1 else 0
    if (size - 1) * stride - 2 * padding + kernel + extra < 1:
        return
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, size, size, dtype=torch.float64, generator=gen)
    if last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.randn(c_in, c_out, kernel, kernel, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, generator=gen, requires_grad=True) if bias else None
    inputs = [t for t in (x, w, b) if t is not None]
    ours = nets.up_by_fold(x, w, b, stride, padding, extra)
    theirs = F.conv_transpose2d(x, w, b, stride, padding, extra)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    grad = torch.randn(theirs.shape, dtype=torch.float64, generator=gen)
    mine = torch.autograd.grad(ours, inputs, grad, create_graph=True)
    expected = torch.autograd.grad(theirs, inputs, grad, create_graph=True)
    for a, e in zip(mine, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    second = torch.autograd.grad(mine[0].square().sum(), [w])[0]
    torch.testing.assert_close(second, torch.autograd.grad(expected[0].square().sum(), [w])[0], rtol=1e-9, atol=1e-9)


def test_grey_image_layers_take_the_fold_forms_in_bf16_with_oneDNNs_numbers():
    torch.manual_seed(0)
    up = ConvTranspose2d(32, 1, 4, 2, 1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(8, 32, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    results = {}
    for window in (nets.MAX_NARROW_WINDOW[0], 0):
        with patch_window(window), torch.autocast("cpu", dtype=BF16):
            out = up(x)
            with torch.no_grad():  # sampling takes it too: the gain is the forward's
                assert (up(x).dtype is BF16) and (type(up(x).grad_fn) is type(None))
        assert out.dtype is BF16 and out.shape == (8, 1, 16, 16)
        results[window] = (out.detach().float(), *torch.autograd.grad(out.float().square().sum(), [x, up.weight]))
    for ours, theirs in zip(results[nets.MAX_NARROW_WINDOW[0]], results[0]):
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=0.03, atol=0.03 * theirs.abs().max().item())
    with torch.autocast("cpu", dtype=BF16):
        assert nets._narrow_up(up, x, 0) is not None
        assert nets._narrow_up(ConvTranspose2d(32, 3, 4, 2, 1), x, 0) is None  # colour: oneDNN's (F.fold lost)
        assert nets._narrow_up(ConvTranspose2d(32, 1, 7, 2, 3), x, 1) is None  # a 49-value window
    assert nets._narrow_up(up, x, 0) is None  # float32: PyTorch's path
    down = Conv2d(1, 16, 4, 2, 1).to(memory_format=torch.channels_last)
    image = torch.randn(4, 1, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=BF16), nets.frozen(down):  # a frozen D passing G its gradient
        assert nets._gemm_conf(down, image.requires_grad_(True)) == (2, 1)
        assert nets._gemm_conf(down, image.detach()) is None  # no input gradient: oneDNN's
        assert nets._gemm_conf(Conv2d(3, 16, 4, 2, 1), torch.randn(4, 3, 16, 16, requires_grad=True)) is None


class patch_window:
    def __init__(self, window: int):
        self.window = window

    def __enter__(self):
        self.before = nets.MAX_NARROW_WINDOW[0]
        nets.MAX_NARROW_WINDOW[0] = self.window

    def __exit__(self, *_):
        nets.MAX_NARROW_WINDOW[0] = self.before


def test_split_batch_norm_equals_separate_passes_with_running_statistics():
    torch.manual_seed(0)
    joint, alone = nets.BatchNorm2d(4).double(), nn.BatchNorm2d(4).double()
    alone.load_state_dict(joint.state_dict())
    a = torch.randn(3, 4, 5, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    b = (torch.randn(5, 4, 5, 5, dtype=torch.float64) * 3 + 1).contiguous(memory_format=torch.channels_last)
    b.requires_grad_(True)
    with nets.split_batches([3, 5]):
        out = joint(torch.cat([a, b]))
    expected = torch.cat([alone(a), alone(b)])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad(out.sin().sum(), [a, b, joint.weight])
    wanted = torch.autograd.grad(expected.sin().sum(), [a, b, alone.weight])
    for got, want in zip(grads, wanted):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for key, value in alone.state_dict().items():  # running mean/var and the batch count, part by part
        torch.testing.assert_close(joint.state_dict()[key], value, rtol=1e-12, atol=1e-12)
    with nets.split_batches([3, 4]), pytest.raises(ValueError, match="does not add up"):
        joint(torch.cat([a, b]))
    torch.testing.assert_close(joint(a), alone(a))  # outside the block: one batch, as nn's
    joint.eval()
    with nets.split_batches([3, 5]):  # in eval mode running statistics serve, parts or not
        assert torch.equal(joint(torch.cat([a, b])), torch.cat([joint(a), joint(b)]))


def test_weights_laid_out_both_ways_get_gradients_with_their_own_strides():
    # A grey image layer's (C, 1, k, k) weight is channels-last and contiguous at once; the transposed
    # conv by fold reshapes it, and autograd hands back a gradient strided the other way (which
    # DistributedDataParallel warns about at every step).
    layer = ConvTranspose2d(8, 1, 4, 2, 1, bias=False).to(memory_format=torch.channels_last)
    wide = ConvTranspose2d(8, 4, 4, 2, 1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)

    def gradient():
        layer.weight.grad = None
        with torch.autocast("cpu", torch.bfloat16):
            layer(x).float().square().sum().backward()
        return layer.weight.grad

    before = gradient().clone()
    assert layer.weight.grad.stride() != layer.weight.stride()  # what the hook is for
    assert nets.exact_grad_strides(nn.ModuleList([layer, wide])) == 1  # only the weight laid out both ways
    after = gradient()
    assert after.stride() == layer.weight.stride()
    assert torch.equal(after, before)


def test_a_restrided_gradient_is_a_view_where_the_addresses_agree_and_a_copy_elsewhere():
    param = torch.zeros(8, 1, 4, 4).contiguous(memory_format=torch.channels_last)
    same = torch.arange(128.0).reshape(8, 1, 4, 4)  # strides (16, 16, 4, 1): the same addresses
    view = nets._restrided(same, param)
    assert view.stride() == param.stride() and view.data_ptr() == same.data_ptr() and torch.equal(view, same)
    other = torch.arange(128.0).reshape(8, 1, 4, 4).transpose(2, 3)  # strides (16, 16, 1, 4): other addresses
    copy = nets._restrided(other, param)
    assert copy.stride() == param.stride() and copy.data_ptr() != other.data_ptr() and torch.equal(copy, other)
