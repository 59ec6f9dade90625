"""Training throughput of genforge beside a plain reference, measured in one process, interleaved.

    python bench/throughput.py                       # mnist-vae, mnist-dcgan, dcgan-32
    python bench/throughput.py --case dcgan-32 --rounds 5 --json
    python bench/throughput.py --recipe pokemon-dcgan --set data.image_size=64

For each case, every round trains, one after the other: genforge's loop with its default
fast paths; the same loop with every fast path off (float32 eager, per-parameter Adam:
what the fast paths alone buy); and the plain reference of ``bench/plain.py`` (float32
eager, per-item DataLoader: how most published code trains). Figures are medians over
rounds; the ratio is taken within each round. Also printed: FLOPs per training image
(torch.utils.flop_counter, forward + backward of every network in one step), achieved
GFLOP/s and its share of this machine's matrix-product peak measured in the same run,
sampling images/s, and per-step memory (weights, gradients, optimiser moments and the
activations autograd saves). Prints figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain import PlainTrainer, supports  # noqa: E402

from genforge import viz  # noqa: E402
from genforge.config import RunConfig, load_recipe  # noqa: E402
from genforge.data.datasets import load_data  # noqa: E402
from genforge.models import build_model  # noqa: E402
from genforge.models.base import Batch  # noqa: E402
from genforge.nets import gemm_conv_grads  # noqa: E402
from genforge.runtime import bf16_supported, choose_fast_paths, resolve_device, set_threads  # noqa: E402
from genforge.threads import busy_elsewhere, cores, cpu_sample  # noqa: E402
from genforge.train import train  # noqa: E402

# name -> (recipe, overrides). dcgan-32 is the speed issue's yardstick, the widely copied DCGAN at
# 32x32, batch 64: G 512-256-128 channels (g_width 128), D 64-128-256, 0.68 GFLOP per training image.
CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "mnist-vae": ("mnist-vae", ()),
    "mnist-dcgan": ("mnist-dcgan", ()),
    "dcgan-32": ("mnist-dcgan", ("data.image_size=32", "model.width=64", "model.g_width=128")),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PLAIN_SETTINGS = ("train.precision=fp32", "train.channels_last=off", "train.compile=off", "optim.fused=false")


def peak_gflops(dtype: torch.dtype, device: torch.device, n: int = 2048, seconds: float = 1.5) -> float:
    """Matrix-product rate of (n x n) @ (n x n) in ``dtype``: the machine's practical peak."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def _random_batch(cfg: RunConfig, model, channels: int, device: torch.device) -> Batch:
    size, n = cfg.data.image_size, cfg.train.batch_size
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, device=device)
    return Batch(model.prepare(images), torch.randint(10, (n,), device=device))


def step_profile(cfg: RunConfig, fast, device: torch.device, channels: int = 1) -> dict[str, float]:
    """FLOPs of one training step (every phase, float32 eager) and its memory under ``fast``:
    weights + gradients + optimiser moments (2 per weight for Adam), and the largest set of
    activations autograd saves in one phase."""
    model = build_model(cfg, (channels, cfg.data.image_size, cfg.data.image_size), 10).to(device)
    with FlopCounterMode(display=False) as counter:
        for phase in model.phases():
            for _ in range(phase.repeats):
                phase.step(_random_batch(cfg, model, channels, device))["loss"].backward()
    saved = []

    def pack(tensor):
        saved[-1] += tensor.numel() * tensor.element_size()
        return tensor

    layout = torch.channels_last if fast.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    for phase in model.phases():
        saved.append(0)
        batch = _random_batch(cfg, model, channels, device)
        batch.images = batch.images.contiguous(memory_format=layout)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), fast.autocast():
            loss = phase.step(batch)["loss"]
        loss.backward()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"gflop_per_image": counter.get_total_flops() / cfg.train.batch_size / 1e9,
            "memory_mb": (4 * weights + max(saved)) / 2**20, "activations_mb": max(saved) / 2**20}


def sampling_rate(cfg: RunConfig, fast, device: torch.device, n: int = 2000, channels: int = 1) -> float:
    model = build_model(cfg, (channels, cfg.data.image_size, cfg.data.image_size), 10).to(device)
    if fast.channels_last:
        model = model.to(memory_format=torch.channels_last)
    with fast.autocast():
        model.sample(200)
        start = time.perf_counter()
        model.sample(n)
    return n / (time.perf_counter() - start)


class Stopped(Exception):
    """SIGTERM or Ctrl-C arrived while the loop trained: the loop stopped its run, and the benchmark stops too."""


def genforge_rate(recipe: str, overrides: list[str], steps: int, extra: tuple[str, ...] = ()) -> float:
    """Median images/s of the real loop's logged windows after the first (warm-up) one."""
    every = max(1, steps // 5)
    cfg = load_recipe(recipe, [*overrides, f"train.steps={steps}", f"train.log_every={every}",
                               f"train.sample_every={10 * steps}", f"train.checkpoint_every={10 * steps}",
                               "train.eval_samples=1", *extra])
    with tempfile.TemporaryDirectory() as run_dir:
        if train(cfg, run_dir, progress=False).interrupted:  # train() took the signal to end its run cleanly
            raise Stopped
        rates = [row["images_per_s"] for row in viz.read_metrics(os.path.join(run_dir, "metrics.jsonl"))
                 if "images_per_s" in row]
    return statistics.median(rates[1:] or rates)


def measure(name: str, recipe: str, overrides: list[str], steps: int, rounds: int, threads: int,
            device: torch.device, peaks: dict[str, float]) -> dict:
    overrides = [*overrides, f"train.threads={threads}", f"train.device={device}"]
    cfg = load_recipe(recipe, overrides)
    set_threads(threads)
    fast = choose_fast_paths(cfg.train.precision, cfg.train.channels_last, cfg.train.compile, cfg.optim.fused,
                             device, images=True, long_run=False)
    plain_fast = choose_fast_paths("fp32", "off", "off", False, device, images=True, long_run=False)
    plain = PlainTrainer(cfg, device=str(device)) if supports(cfg) else None
    if plain:
        plain.run(3)  # warm-up
    rows: dict[str, list[float]] = {"genforge": [], "genforge_fp32_eager": [], "plain": []}
    gemm = fast.dtype is torch.bfloat16 and device.type == "cpu"  # nets' matrix-product conv gradients apply
    if gemm:
        rows["genforge_onednn_grads"] = []
    for _ in range(rounds):
        for dtype in peaks:  # the peak too is taken every round (the best of them counts)
            peaks[dtype] = max(peaks[dtype], peak_gflops(DTYPES[dtype], device))
        rows["genforge"].append(genforge_rate(recipe, overrides, steps))
        rows["genforge_fp32_eager"].append(genforge_rate(recipe, overrides, steps, PLAIN_SETTINGS))
        if gemm:
            with gemm_conv_grads(False):
                rows["genforge_onednn_grads"].append(genforge_rate(recipe, overrides, steps))
        if plain:
            rows["plain"].append(plain.run(max(10, steps // 2)))
    channels = load_data(cfg.data, "train").images.shape[1]  # grey or RGB, as the loop sees the data
    profile = step_profile(cfg, fast, device, channels)
    plain_profile = step_profile(cfg, plain_fast, device, channels)
    result = {"case": name, "recipe": recipe, "overrides": overrides, "batch_size": cfg.train.batch_size,
              "fast_paths": fast.describe(), "rounds": rounds, "steps_per_round": steps,
              **{f"{k}_images_per_s": statistics.median(v) for k, v in rows.items() if v},
              "gflop_per_image": profile["gflop_per_image"],
              "memory_mb": profile["memory_mb"], "memory_mb_fp32_eager": plain_profile["memory_mb"],
              "sampling_images_per_s": sampling_rate(cfg, fast, device, channels=channels),
              "sampling_images_per_s_fp32": sampling_rate(cfg, plain_fast, device, channels=channels)}
    if rows["plain"]:
        result["ratio_vs_plain"] = statistics.median(a / b for a, b in zip(rows["genforge"], rows["plain"]))
    result["ratio_vs_fp32_eager"] = statistics.median(
        a / b for a, b in zip(rows["genforge"], rows["genforge_fp32_eager"]))
    if gemm:
        result["ratio_vs_onednn_grads"] = statistics.median(
            a / b for a, b in zip(rows["genforge"], rows["genforge_onednn_grads"]))
    achieved = result["genforge_images_per_s"] * result["gflop_per_image"]
    result["achieved_gflops"] = achieved
    for dtype, peak in peaks.items():
        result[f"share_of_{dtype}_peak"] = achieved / peak
    return result


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's model name with its family and model numbers (Linux's /proc/cpuinfo; virtual
    machines often show only 'AMD EPYC', and family 23 is Zen 1-2, 25 Zen 3-4), else what ``platform``
    knows: figures depend on it."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in fields:  # the first processor's
                fields[key] = value.strip()
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = f" (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields else ""
    return fields["model name"] + numbers


def matrix_engine(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's bf16 matrix hardware, from the first processor's flags: 'amx' (AMX-BF16 tiles),
    'avx512_bf16' (AVX512-BF16 without AMX), 'none' (no native bf16) or 'unknown' (no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown"
    flags = next((line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "none"


# Issue 21's targets per kind of CPU: (case, result key, threshold, what it says).
TARGETS = {
    "amx": [("dcgan-32", "ratio_vs_plain", 2.5, ">= 2.5x plain"),
            ("dcgan-32", "share_of_bf16_peak", 0.35, ">= 35% of the bf16 peak"),
            ("mnist-dcgan", "ratio_vs_plain", 2.0, ">= 2x plain")],
    "avx512_bf16": [("dcgan-32", "ratio_vs_plain", 2.0, ">= 2x plain"),
                    ("dcgan-32", "share_of_bf16_peak", 0.60, ">= 60% of the bf16 peak")],
    "none": [("dcgan-32", "share_of_fp32_peak", 0.90, ">= 90% of the fp32 peak")],
}
ENGINE_NAMES = {"amx": "AMX-BF16", "avx512_bf16": "AVX512-BF16, no AMX", "none": "no native bf16"}


BUSY_CORES = 0.25  # other work above this many cores on average: the figures make no verdict


def busy_warning(others: float) -> str | None:
    """The line to print where other work kept more than BUSY_CORES cores busy during a benchmark."""
    if others <= BUSY_CORES:
        return None
    return (f"# other work kept {others:.1f} cores busy on average while this ran: the figures are not to be "
            "trusted; run it again on a quiet machine (see `uptime`)")


def target_lines(engine: str, results: list[dict], device: torch.device, others: float = 0.0) -> list[str]:
    """One line per speed target this kind of CPU has (issue 21): the figure and met / not met, or
    which case to run where the figure was not measured; where other work kept ``others`` >
    BUSY_CORES cores busy meanwhile, no verdict. None on a GPU or an unknown CPU."""
    if device.type != "cpu" or engine not in TARGETS:
        return []
    by_case = {r["case"]: r for r in results}
    lines = []
    for case, key, threshold, what in TARGETS[engine]:
        value = by_case.get(case, {}).get(key)
        if value is None:
            lines.append(f"target ({ENGINE_NAMES[engine]}): {case} {what}: not measured (run --case {case})")
            continue
        figure = f"{100 * value:.0f}%" if key.startswith("share") else f"{value:.2f}x"
        verdict = ("met" if value >= threshold else "not met") if others <= BUSY_CORES else \
            f"no verdict (other work kept {others:.1f} cores busy)"
        lines.append(f"target ({ENGINE_NAMES[engine]}): {case} {what}: {figure}, {verdict}")
    return lines


def machine_info(device: torch.device) -> dict:
    """What the figures belong to: processor and its vector instructions, native bf16, threads, torch, GPU."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": bf16_supported(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def percent(share: float | None) -> str:
    """A share as a table cell: '52%', or '-' where it was not measured (no such peak on this device)."""
    return "-" if share is None else f"{100 * share:.0f}%"


def main() -> None:
    """Measure and print; a SIGTERM or Ctrl-C stops the whole benchmark (exit 130), not just the run it hit."""
    try:
        run(sys.argv[1:])
    except (Stopped, KeyboardInterrupt):
        print("# stopped by a signal: no figures", file=sys.stderr)
        sys.exit(130)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="a named case (repeatable)")
    parser.add_argument("--recipe", action="append", default=[], help="any recipe, with --set overrides")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every case")
    parser.add_argument("--steps", type=int, default=0, help="steps per round (default 1000 VAE, 150 others)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for every side (default 0: every "
                        "core this process may run on; a figure needs a fixed count, not genforge's thread policy)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    args.threads = args.threads or cores()
    set_threads(args.threads)
    cases = [(c, *CASES[c]) for c in (args.case or ([] if args.recipe else CASES))]
    cases += [(r, r, ()) for r in args.recipe]
    machine = machine_info(device)
    peaks = {"fp32": 0.0, **({"bf16": 0.0} if machine["native_bf16"] else {})}  # filled in by every round
    machine["peak_gflops"] = peaks
    results = []
    before = cpu_sample()  # the other work that ran beside the benchmark, to say whether to trust it
    for name, recipe, overrides in cases:
        steps = args.steps or (1000 if "vae" in recipe else 150)
        results.append(measure(name, recipe, [*overrides, *args.set], steps, args.rounds, args.threads, device,
                               peaks))
        if not args.json:
            print(f"# {name} done", file=sys.stderr)
    after = cpu_sample()
    others = busy_elsewhere(before, after) if before and after else 0.0
    engine = matrix_engine()
    machine["matrix_engine"], machine["other_work_cores"] = engine, round(others, 2)
    targets = target_lines(engine, results, device, others)
    if args.json:
        print(json.dumps({"machine": machine, "results": results, "targets": targets}, indent=2))
        return
    print(f"# {machine}")
    warning = busy_warning(others)
    if warning:
        print(warning)
    if not machine["native_bf16"]:
        print(f"# no native bfloat16 on this {device.type}: everything trains in float32, and %bf16pk is not measured")
    print(f"{'case':12s} {'batch':>5s} {'genforge':>9s} {'fp32-eager':>10s} {'plain':>8s} {'x plain':>7s} "
          f"{'GFLOP/img':>9s} {'GFLOP/s':>8s} {'%fp32pk':>7s} {'%bf16pk':>7s} {'sample/s':>9s} {'MB':>6s}")
    for r in results:
        plain = r.get("plain_images_per_s")
        print(f"{r['case']:12s} {r['batch_size']:5d} {r['genforge_images_per_s']:9.0f} "
              f"{r['genforge_fp32_eager_images_per_s']:10.0f} {plain or float('nan'):8.0f} "
              f"{r.get('ratio_vs_plain', float('nan')):7.2f} {r['gflop_per_image']:9.3f} {r['achieved_gflops']:8.1f} "
              f"{percent(r['share_of_fp32_peak']):>7s} {percent(r.get('share_of_bf16_peak')):>7s} "
              f"{r['sampling_images_per_s']:9.0f} {r['memory_mb']:6.1f}")
        print(f"{'':12s} fast paths: {r['fast_paths']}; x fp32-eager {r['ratio_vs_fp32_eager']:.2f}; "
              f"sampling fp32 {r['sampling_images_per_s_fp32']:.0f}/s; memory fp32 eager {r['memory_mb_fp32_eager']:.1f} MB")
        if "ratio_vs_onednn_grads" in r:
            print(f"{'':12s} with oneDNN's own conv gradients {r['genforge_onednn_grads_images_per_s']:.0f}/s: "
                  f"genforge's matrix-product gradients x {r['ratio_vs_onednn_grads']:.2f}")
    for line in targets:
        print(f"# {line}")


if __name__ == "__main__":
    main()
