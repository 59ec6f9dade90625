"""Where a training step's time goes, layer by layer: time, GFLOP/s and share of the matrix peak.

    python bench/layers.py                         # dcgan-32, the speed issue's yardstick, at auto's fast paths
    python bench/layers.py --case mnist-dcgan --precision fp32
    python bench/layers.py --case dcgan-32 --precision bf16 --channels-last off --markdown

One training step of the case's networks (``bench/throughput.py``'s CASES) runs once with a forward
hook on every leaf layer (convolution, transposed convolution, batch norm, activation, linear), which
keeps the layer's input. Each layer is then timed alone, on that input, in the step's precision
(autocast) and layout: its forward, and its backward (the gradient of its input and of its weights),
medians of ``--reps`` repetitions. FLOPs come from ``torch.utils.flop_counter`` over the same calls.
The table's last rows put the layers' sum beside the whole step (timed the same way, every phase and
its optimiser update): the remainder is what runs between the layers (losses, casts and layout
copies between layers, Adam, autograd's bookkeeping). Shares are of the bf16 peak for bf16 steps and
of the fp32 peak for fp32 ones, both measured in the same run (2048^3 matrix products). Layers run
alone see warm caches, so their sum can be below the step's time even with nothing between them.
Prints figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import CASES, busy_warning, machine_info, peak_gflops  # noqa: E402

from genforge.config import load_recipe  # noqa: E402
from genforge.runtime import resolve_device, set_threads  # noqa: E402
from genforge.threads import busy_elsewhere, cores, cpu_sample  # noqa: E402
from genforge.train import prepare_run  # noqa: E402

LEAVES = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)


def timed(fn, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls, after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def layer_inputs(run) -> list[tuple[str, nn.Module, torch.Tensor, bool, int]]:
    """(name, layer, input, weight gradients?, calls) of every leaf layer in one training step, in call
    order: a layer called alike several times (D on reals, then on fakes) is one row of ``calls``."""
    calls: list[tuple[str, nn.Module, torch.Tensor, bool]] = []
    handles = []
    for name, module in run.model.named_modules():
        if isinstance(module, LEAVES):
            def keep(layer, args, name=name):  # and whether the step wants the input's and weights' gradients
                weights = any(p.requires_grad for p in layer.parameters())
                calls.append((name, layer, args[0].detach().requires_grad_(args[0].requires_grad), weights))
            handles.append(module.register_forward_pre_hook(keep))
    run.step()
    for handle in handles:
        handle.remove()
    counts: dict[tuple, int] = {}
    first: dict[tuple, tuple[str, nn.Module, torch.Tensor, bool]] = {}
    for name, layer, x, weights in calls:
        key = (name, tuple(x.shape), x.requires_grad, weights)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, (name, layer, x, weights))
    return [(*first[key], counts[key]) for key in first]


def layer_row(name: str, layer: nn.Module, x: torch.Tensor, weights: bool, calls: int, autocast, reps: int) -> dict:
    """One layer alone: forward and backward milliseconds and FLOPs, each times its ``calls`` per step;
    the backward computes the gradients the step computes (the input's, the weights')."""
    x = x.detach().clone().requires_grad_(x.requires_grad)
    flags = [p.requires_grad for p in layer.parameters()]
    layer.requires_grad_(weights)
    try:
        return _layer_row(name, layer, x, calls, autocast, reps)
    finally:
        for p, flag in zip(layer.parameters(), flags):
            p.requires_grad_(flag)


def _layer_row(name: str, layer: nn.Module, x: torch.Tensor, calls: int, autocast, reps: int) -> dict:
    if getattr(layer, "inplace", False):  # alone, on a leaf input: out of place (the step's in-place saves a copy)
        layer.inplace = False
    with autocast():
        out = layer(x)
    grad = torch.randn_like(out)

    def forward():
        with autocast():
            layer(x)

    def both():
        with autocast():
            y = layer(x)
        if y.requires_grad:
            y.backward(grad)

    t_forward, t_both = timed(forward, reps), timed(both, reps)
    layer.zero_grad(set_to_none=True)
    grads = "+".join(part for part, wanted in (("input", x.requires_grad), ("weights", any(
        p.requires_grad for p in layer.parameters()))) if wanted) or "none"
    return {"layer": name, "grads": grads, "kind": type(layer).__name__,
            "input": list(x.shape), "dtype": str(out.dtype).split(".")[-1],
            "calls": calls, "forward_ms": calls * t_forward * 1e3, "backward_ms": calls * max(0.0, t_both - t_forward) * 1e3,
            "flops": calls * flops(both)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="dcgan-32", choices=sorted(CASES))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--threads", type=int, default=0, help="threads (default: every core)")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions per layer (default 30)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()

    recipe, overrides = CASES[args.case]
    device = resolve_device("cpu")
    threads = args.threads or cores()
    cfg = load_recipe(recipe, [*overrides, f"train.precision={args.precision}", f"train.threads={threads}",
                               f"train.channels_last={args.channels_last}", "train.compile=off"])
    before = cpu_sample()  # the other work beside the measurement, to say whether to trust it
    with tempfile.TemporaryDirectory() as run_dir:
        run = prepare_run(cfg, Path(run_dir), False, None)
        set_threads(threads)
        fast = run.fast
        dtype = fast.dtype or torch.float32
        peak = peak_gflops(dtype, device)
        print(json.dumps({**machine_info(device), "case": args.case, "precision": str(dtype).split(".")[-1],
                          "channels_last": fast.channels_last, "batch": cfg.train.batch_size,
                          f"peak_gflops_{str(dtype).split('.')[-1]}": round(peak, 1)}))
        for _ in range(3):
            run.step()
        step_seconds = timed(lambda: float(next(iter(run.step().values()))), max(5, args.reps // 3))
        step_flops = flops(run.step)
        rows = [layer_row(*call, fast.autocast, args.reps) for call in layer_inputs(run)]
    print_table(rows, step_seconds, step_flops, peak, cfg.train.batch_size, args.markdown)
    after = cpu_sample()
    warning = busy_warning(busy_elsewhere(before, after)) if before and after else None
    if warning:
        print(warning)


def print_table(rows: list[dict], step_seconds: float, step_flops: int, peak: float, batch: int, markdown: bool) -> None:
    total_ms = sum(r["forward_ms"] + r["backward_ms"] for r in rows)
    step_ms = step_seconds * 1e3
    header = ["layer", "kind", "input", "gradients", "calls", "out dtype", "forward ms", "backward ms", "share of step", "GFLOP/s",
              "share of peak"]
    lines = []
    for r in rows:
        ms = r["forward_ms"] + r["backward_ms"]
        rate = r["flops"] / (ms / 1e3) / 1e9 if ms > 0 else 0.0
        lines.append([r["layer"], r["kind"], "x".join(map(str, r["input"])), r["grads"], str(r["calls"]), r["dtype"],
                      f"{r['forward_ms']:.3f}",
                      f"{r['backward_ms']:.3f}", f"{ms / step_ms:.0%}", f"{rate:.0f}" if r["flops"] else "-",
                      f"{rate / peak:.0%}" if r["flops"] else "-"])
    layer_flops = sum(r["flops"] for r in rows)
    lines.append(["every layer alone", "", "", "", "", "", f"{sum(r['forward_ms'] for r in rows):.3f}",
                  f"{sum(r['backward_ms'] for r in rows):.3f}", f"{total_ms / step_ms:.0%}",
                  f"{layer_flops / (total_ms / 1e3) / 1e9:.0f}", f"{layer_flops / (total_ms / 1e3) / 1e9 / peak:.0%}"])
    lines.append(["the whole step", "", f"batch {batch}", "", "", "", "", "", f"{step_ms:.1f} ms",
                  f"{step_flops / step_seconds / 1e9:.0f}", f"{step_flops / step_seconds / 1e9 / peak:.0%}"])
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines:
            print("| " + " | ".join(line) + " |")
        return
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    for line in [header, *lines]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))


if __name__ == "__main__":
    main()
