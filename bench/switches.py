"""Each of genforge's own step-level fast paths on and off, timed step against step in one process.

    python bench/switches.py                          # dcgan-32, every switch, 20 blocks
    python bench/switches.py --case mnist-dcgan --blocks 40
    python bench/switches.py --case dcgan-32 --switch joint-d --precision fp32

A shared VM's speed drifts by tens of percent between runs minutes apart, so a switch's gain is not
read from two runs: one training run of the case (``bench/throughput.py``'s CASES, at ``auto``'s fast
paths unless told) is prepared once, and its step alternates between the switch on and off in blocks
of 3 timed steps (after one untimed step at each change), the order of the pair flipping every
block. It prints the median step time of each side and their ratio (off / on: above 1, the switch
pays). The switches:

- ``joint-d``: a conv discriminator's real and fake batches as one pass, its batch norm split
  (``genforge.models.gan``; taken where a CPU computes in bf16);
- ``narrow``: the grey image layers by matrix product and overlap-add (``genforge.nets``, bf16 CPU);
- ``gemm-grads``: genforge's matrix-product conv backward, the narrow layers included (bf16 CPU).

Prints figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import CASES, busy_warning, machine_info  # noqa: E402

from genforge import nets  # noqa: E402
from genforge.config import load_recipe  # noqa: E402
from genforge.models import gan  # noqa: E402
from genforge.runtime import resolve_device, set_threads  # noqa: E402
from genforge.threads import busy_elsewhere, cores, cpu_sample  # noqa: E402
from genforge.train import prepare_run  # noqa: E402


@contextmanager
def _setting(holder: list, value):
    before = holder[0]
    holder[0] = value
    try:
        yield
    finally:
        holder[0] = before


SWITCHES = {
    "joint-d": lambda on: _setting(gan.JOINT_PASSES, on),
    "narrow": lambda on: _setting(nets.MAX_NARROW_WINDOW, nets.MAX_NARROW_WINDOW[0] if on else 0),
    "gemm-grads": lambda on: nets.gemm_conv_grads(on),
}


def compare(step, switch, blocks: int) -> tuple[float, float]:
    """Median seconds of ``step()`` with ``switch(True)`` and with ``switch(False)``, interleaved."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for block in range(blocks):
        for on in ((True, False) if block % 2 == 0 else (False, True)):
            with switch(on):
                step()
                for _ in range(3):
                    start = time.perf_counter()
                    step()
                    times[on].append(time.perf_counter() - start)
    return statistics.median(times[True]), statistics.median(times[False])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="dcgan-32", choices=sorted(CASES))
    parser.add_argument("--switch", action="append", choices=sorted(SWITCHES),
                        help="a switch to compare (repeatable; default: every one)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--blocks", type=int, default=20, help="pairs of 3-step blocks per switch (default 20)")
    parser.add_argument("--threads", type=int, default=0, help="threads (default: every core)")
    args = parser.parse_args(argv)
    if args.blocks < 1:
        parser.error(f"--blocks must be positive, not {args.blocks}")

    recipe, overrides = CASES[args.case]
    threads = args.threads or cores()
    cfg = load_recipe(recipe, [*overrides, f"train.precision={args.precision}", f"train.threads={threads}",
                               "train.compile=off"])
    before = cpu_sample()
    with tempfile.TemporaryDirectory() as run_dir:
        run = prepare_run(cfg, Path(run_dir), False, None)
        set_threads(threads)
        print(json.dumps({**machine_info(resolve_device("cpu")), "case": args.case,
                          "fast_paths": run.fast.describe(), "blocks": args.blocks}))

        def step():
            float(next(iter(run.step().values())))  # the host sync: the step is done

        for _ in range(3):
            step()
        print(f"{'switch':12s} {'on ms':>9s} {'off ms':>9s} {'off/on':>7s}")
        for name in args.switch or list(SWITCHES):
            on, off = compare(step, SWITCHES[name], args.blocks)
            print(f"{name:12s} {on * 1e3:9.1f} {off * 1e3:9.1f} {off / on:7.3f}", flush=True)
    after = cpu_sample()
    warning = busy_warning(busy_elsewhere(before, after)) if before and after else None
    if warning:
        print(warning)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
