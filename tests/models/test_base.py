"""Shared layers of the families (genforge.nets): the layout change whose gradient keeps its source layout,
the blocks the families build from, and no family importing another."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genforge.nets import FlattenFrom, memory_format_of, relayout

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


def test_no_family_imports_another():
    """A family file holds its own networks, phases and sampling; what families share is in genforge.nets."""
    import ast
    from pathlib import Path

    import genforge.models as models

    folder = Path(models.__file__).parent
    families = {path.stem for path in folder.glob("*.py")} - {"__init__", "base"}
    for family in families:
        tree = ast.parse((folder / f"{family}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not {f"genforge.models.{other}" for other in families} & imported, family


def test_blocks_keep_the_networks_parameter_names():
    """The DCGAN and DiscoGAN networks built from nets' blocks keep their state_dict keys (old checkpoints load)."""
    from genforge.models.discogan import ConvCritic, ConvTranslator
    from genforge.models.gan import DCGANDiscriminator, DCGANGenerator

    g = DCGANGenerator(8, 1, 28, 4)
    assert [k for k in g.state_dict() if k.endswith("weight")][:4] == ["project.0.weight", "project.2.weight",
                                                                      "main.0.weight", "main.1.weight"]
    d = DCGANDiscriminator(1, 32, 4, norm="none")
    assert isinstance(d.main[2], nn.Conv2d) and d.main[2].bias is not None and isinstance(d.main[3], nn.Identity)
    assert d.main[0].bias is not None and isinstance(d.main[1], nn.LeakyReLU)  # the first layer: no norm module
    translator = ConvTranslator(1, 4)
    assert [type(m).__name__ for m in translator.encoder[:5]] == ["Conv2d", "LeakyReLU", "Conv2d", "BatchNorm2d",
                                                                  "LeakyReLU"]
    assert translator.encoder[2].bias is None and translator.decoder[-2].bias is not None
    critic = ConvCritic(1, 4, 32)
    assert [len(block) for block in critic.blocks] == [2, 3, 3, 3]
