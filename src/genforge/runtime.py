"""Small pieces the training loop stands on: device, data order, RNG state, logs."""

from __future__ import annotations

import json
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from genforge.atomic import write_atomic
from genforge.errors import GenforgeError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if present, else cpu; a cuda request without CUDA is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GenforgeError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenforgeError(f"device '{name}' asked for, but this torch build sees no CUDA GPU; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise GenforgeError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    return device


def set_threads(threads: int, processes: int = 1) -> None:
    """``threads`` torch threads; 0 = the cores other work leaves free, shared evenly by ``processes``
    on this machine, measured again every 2 s as the run goes (:mod:`genforge.threads`)."""
    from genforge.threads import apply_threads

    apply_threads(threads, processes)


# --- fast paths -------------------------------------------------------------------------

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def bf16_supported(device: torch.device) -> bool:
    """Native bfloat16 arithmetic: AVX512-BF16 / AMX on a CPU (oneDNN's own check), or a CUDA GPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class FastPaths:
    """The speed switches the loop applies, resolved from ``train.precision``/``channels_last``/
    ``compile`` and ``optim.fused`` for one device. Every one has the plain float32 eager path
    beside it (``precision=fp32 channels_last=off compile=off optim.fused=false``)."""

    device: torch.device
    dtype: torch.dtype | None  # autocast dtype of the training phases; None = float32
    channels_last: bool
    compile: bool
    fused: bool
    note: str = ""  # why auto chose what it did, where a user may wonder (shown by describe)

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        return (f"precision={self.precision} channels_last={'on' if self.channels_last else 'off'} "
                f"compile={'on' if self.compile else 'off'} fused={'on' if self.fused else 'off'}"
                + (f" ({self.note})" if self.note else ""))


def choose_fast_paths(precision: str, channels_last: str, compile: str, fused: bool, device: torch.device,
                      images: bool, long_run: bool, compilable: bool = True) -> FastPaths:
    """Resolve the ``auto`` settings by what was measured (``bench/README.md``).

    On a CPU with native bfloat16 and on CUDA, image models train under bf16 autocast
    (1.3-2.2x float32 on the 2-core Zen 4 bench machine, same losses); toy points stay in
    float32 (bf16 steps of 1/64 near 2.0 blur modes of std 0.02). channels_last helps every
    conv net measured on CPU and CUDA. ``torch.compile`` did not repay its compile time on
    the CPU (1.0x at best), so ``auto`` compiles only on CUDA and only for long runs, and never
    a model that is not ``compilable`` (a gradient penalty: see ``GenerativeModel.uncompilable``).
    """
    note = ""
    if precision == "auto":
        dtype = torch.bfloat16 if images and bf16_supported(device) else None
        if images and dtype is None:
            note = f"float32: this {device.type} has no native bfloat16"
    else:
        dtype = PRECISIONS[precision]
        if dtype is torch.float16 and device.type != "cuda":
            raise GenforgeError("train.precision=fp16 needs a CUDA device (float16 training on a CPU is slower "
                                "than float32); use bf16 or fp32")
        if dtype is torch.bfloat16 and not bf16_supported(device):
            raise GenforgeError(f"train.precision=bf16: this {device.type} has no native bfloat16 "
                                "(it would be slower than float32); use fp32 or auto")
    if channels_last == "auto":
        last = images
    else:
        last = channels_last == "on" and images
    if compile == "auto":
        compiled = device.type == "cuda" and long_run and compilable
    else:
        compiled = compile == "on"
    return FastPaths(device, dtype, last, compiled, fused, note)


# --- several processes (torchrun) ---------------------------------------------------------

@dataclass(frozen=True)
class Distributed:
    """This process's place among the ranks torchrun started (one process, rank 0 of 1, without it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (same shape on all) concatenated along dim 0, on every rank."""
        if not self.active:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if ``flag`` is true on any (agreeing on when to stop)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


def init_distributed(device_name: str) -> tuple[Distributed, str]:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on CUDA).

    Returns the ranks and the device name this rank uses (``cuda:LOCAL_RANK`` on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device_name
    ranks = Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                        int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise GenforgeError(f"device '{device_name}' asked for, but this torch build sees no CUDA GPU")
        torch.cuda.set_device(ranks.local_rank)
        device_name = f"cuda:{ranks.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", store=_attempt_store(), rank=ranks.rank,
                                world_size=world)
    return ranks, device_name


def _attempt_store() -> dist.Store:
    """torchrun's rendezvous store, with the keys of this attempt under their own prefix: after a
    ``--max-restarts`` restart the agent's store still holds the dead attempt's addresses, and a
    restarted rank that read one waited for a peer that is gone (the group hung in connectFullMesh
    or timed out, in 2 of 4 tries)."""
    from torch.distributed.rendezvous import rendezvous

    store, _, _ = next(rendezvous("env://"))
    return dist.PrefixStore(f"genforge/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


class BatchOrder:
    """Shuffled index batches, epoch after epoch, reproducible from (seed, epoch, position).

    Each epoch's permutation comes from its own seeded generator, so the state to save
    is two integers, and a resumed run draws exactly the batches the straight one would.
    The last incomplete batch of an epoch is dropped (constant shapes, no recompiles).
    """

    def __init__(self, size: int, batch_size: int, seed: int, device: torch.device):
        if size < batch_size:
            raise GenforgeError(f"the dataset has {size} images, fewer than train.batch_size={batch_size}")
        self.size, self.batch_size, self.seed, self.device = size, batch_size, seed, device
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.size, generator=generator).to(self.device)
        return self._perm

    def next(self) -> torch.Tensor:
        """The next batch of indices, (batch_size,) int64 on the data's device."""
        if self.position + self.batch_size > self.size:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        indices = self._permutation()[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return indices

    def state(self) -> dict[str, int]:
        """Where the order is, and the size of the dataset it orders (a resume on other data is refused)."""
        return {"epoch": self.epoch, "position": self.position, "size": self.size}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._perm = int(state["epoch"]), int(state["position"]), None


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{index}"] = cuda_state
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = [state[k] for k in sorted(state) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# Marks the row of training's final metrics (logged at its last step, beside that step's checkpoint
# metrics): curves leave it out, the run's final figures read it, and a resume drops it.
FINAL_ROW = {"stage": "final"}


class MetricsLog:
    """``metrics.jsonl`` (one object per logged step, always with "step") + TensorBoard."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None:
            # Rows past the checkpoint were written by the run that crashed: they are redone. An earlier
            # training's final metrics (FINAL_ROW) go too: that end is no longer the run's end.
            kept = [line for line in _read_lines(self.path) if _row_step(line) <= resume_step]
            write_atomic(self.path, "".join(line + "\n" for line in kept))
        self._file = open(self.path, "a", buffering=1)
        from torch.utils.tensorboard import SummaryWriter  # slow import, only when training

        self.writer = SummaryWriter(str(run_dir), purge_step=resume_step)

    def log(self, step: int, values: dict[str, Any]) -> None:
        row = {"step": step, **values}
        self._file.write(json.dumps(row) + "\n")
        for key, value in values.items():
            if isinstance(value, (int, float)) and key != "time":
                self.writer.add_scalar(key, value, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, image, step)

    def close(self) -> None:
        self._file.close()
        self.writer.close()


class NullLog:
    """What ranks other than 0 log to: nothing (rank 0 alone writes the run directory)."""

    def log(self, step: int, values: dict[str, Any]) -> None:
        pass

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def _read_lines(path: Path) -> list[str]:
    """The lines of a metrics.jsonl; bytes that are not UTF-8 (a damaged file) make their line unreadable
    JSON, which the resume then drops like a torn line."""
    return path.read_text(errors="replace").splitlines() if path.is_file() else []


def _row_step(line: str) -> float:
    try:
        row = json.loads(line)
        return float("inf") if row.get("stage") == FINAL_ROW["stage"] else float(row["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return float("inf")  # a torn line from a crash: drop it
