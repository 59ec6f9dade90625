"""Shared layers of the families: the layout change whose gradient keeps its source layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genforge.models.base import FlattenFrom, memory_format_of, relayout

CL, NCHW = torch.channels_last, torch.contiguous_format


def test_memory_format_of():
    x = torch.randn(2, 3, 4, 5)
    assert memory_format_of(x) is NCHW
    assert memory_format_of(x.contiguous(memory_format=CL)) is CL
    assert memory_format_of(torch.randn(2, 1, 4, 5).contiguous(memory_format=CL)) is NCHW  # both at once
    assert memory_format_of(torch.randn(3, 4)) is NCHW


@pytest.mark.parametrize("source, target", [(CL, NCHW), (NCHW, CL)])
def test_relayout_moves_values_and_sends_gradients_back_in_the_source_layout(source, target):
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=source).requires_grad_()
    y = relayout(x, target)
    assert memory_format_of(y) is target and torch.equal(y, x)
    grad = torch.randn(2, 3, 4, 5).contiguous(memory_format=target)
    (dx,) = torch.autograd.grad(y, x, grad)
    assert memory_format_of(dx) is source and torch.equal(dx, grad)


def test_relayout_is_twice_differentiable():  # WGAN-GP and R1 differentiate D's input gradient
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: relayout(t, NCHW) ** 2, (x,))
    assert torch.autograd.gradgradcheck(lambda t: relayout(t, NCHW) ** 2, (x,))


def test_relayout_without_change_or_graph_is_plain():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=CL)
    assert relayout(x, CL) is x
    assert memory_format_of(relayout(x, NCHW)) is NCHW and relayout(x, NCHW).grad_fn is None


def test_flatten_from_matches_flatten_in_values_and_keeps_the_gradient_layout():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=CL).requires_grad_()
    flat = FlattenFrom()(x)
    assert torch.equal(flat, nn.Flatten()(x))
    (dx,) = torch.autograd.grad(flat.sum() * 2, x)
    assert memory_format_of(dx) is CL and torch.equal(dx, torch.full_like(x, 2.0))
