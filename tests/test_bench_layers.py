"""bench/layers.py: every leaf layer of a real step, with the gradients that step computes, and a table."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from genforge.config import load_recipe
from genforge.train import prepare_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import layers  # noqa: E402


def _run(tmp_path):
    cfg = load_recipe("mnist-dcgan", ["model.width=8", "model.latent_dim=8", "train.batch_size=8", "train.threads=1",
                                      "train.precision=fp32"])
    return prepare_run(cfg, tmp_path / "run", False, None)


def test_layer_inputs_are_the_steps_calls_with_the_gradients_it_wants(tmp_path):
    run = _run(tmp_path)
    calls = {(name, x.requires_grad, weights): count for name, _, x, weights, count in layers.layer_inputs(run)}
    # D's first layer: on reals and on fakes in D's step (weights, no input gradient), then on fakes in
    # G's step (frozen weights, an input gradient back to G)
    assert calls[("discriminator.main.0", False, True)] == 2
    assert calls[("discriminator.main.0", True, False)] == 1
    assert ("generator.project.0", False, True) in calls  # z needs no gradient
    assert all(p.requires_grad for p in run.model.parameters())  # the hooks are gone, nothing left frozen


def test_a_layer_row_times_and_counts_it_and_restores_its_gradient_flags(tmp_path):
    run = _run(tmp_path)
    name, layer, x, _, count = next(c for c in layers.layer_inputs(run) if c[0] == "discriminator.main.0" and c[2].requires_grad)
    row = layers.layer_row(name, layer, x, False, count, lambda: torch.autocast("cpu", enabled=False), 2)
    assert row["grads"] == "input" and row["kind"] == "Conv2d" and row["calls"] == 1
    assert row["forward_ms"] > 0 and row["flops"] > 0
    assert row["dtype"] == "float32"
    assert all(p.requires_grad for p in layer.parameters()) and all(p.grad is None for p in layer.parameters())


def test_the_table_puts_the_layers_sum_beside_the_step(capsys):
    rows = [{"layer": "g.0", "kind": "Conv2d", "input": [8, 4, 4, 4], "grads": "input+weights", "calls": 1,
             "dtype": "bfloat16", "forward_ms": 1.0, "backward_ms": 3.0, "flops": 4e9}]
    layers.print_table(rows, step_seconds=0.008, step_flops=int(4e9), peak=2000.0, batch=8, markdown=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| layer | kind |") and "| g.0 | Conv2d | 8x4x4x4 | input+weights | 1 | bfloat16 |" in out[2]
    assert "| 50% | 1000 | 50% |" in out[2]  # 4 of the step's 8 ms; 4 GFLOP in 4 ms of a 2,000 GFLOP/s peak
    assert out[-1].endswith("| 8.0 ms | 500 | 25% |")
