"""Small pieces the training loop stands on: device, data order, RNG state, logs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

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


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))


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
        return {"epoch": self.epoch, "position": self.position}

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


class MetricsLog:
    """``metrics.jsonl`` (one object per logged step, always with "step") + TensorBoard."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None:
            # Rows past the checkpoint were written by the run that crashed: they are redone.
            kept = [line for line in _read_lines(self.path) if _row_step(line) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
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


def _read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def _row_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return float("inf")  # a torn line from a crash: drop it
