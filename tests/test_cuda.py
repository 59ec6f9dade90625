"""The CUDA path (skipped where there is no GPU; run on a GPU machine whenever one is lent)."""

from __future__ import annotations

import json

import pytest
import torch

from genforge.api import resume_config
from genforge.train import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
CUDA = ("train.device=cuda",)


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16"])
@pytest.mark.parametrize("recipe", ["mnist-vae", "mnist-dcgan"])
def test_trains_on_cuda_with_every_precision(tmp_path, recipe, precision):
    result = train(tiny_config(recipe, *CUDA, f"train.precision={precision}", "train.steps=20", "train.log_every=10"),
                   tmp_path, progress=False)
    assert result.step == 20
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [v for row in rows for k, v in row.items() if k.endswith("/loss")]
    assert losses and all(v == v and abs(v) < 1e6 for v in losses)  # finite


def test_cuda_run_resumes_with_its_grad_scaler(tmp_path):
    settings = (*CUDA, "train.precision=fp16", "train.log_every=4")
    train(tiny_config("mnist-dcgan", "train.steps=8", *settings), tmp_path / "straight", progress=False)
    train(tiny_config("mnist-dcgan", "train.steps=4", *settings), tmp_path / "halves", progress=False)
    train(resume_config(tmp_path / "halves", steps=8), tmp_path / "halves", resume=True, progress=False)
    from safetensors.torch import load_file

    from genforge.checkpoint import latest_checkpoint

    a = load_file(latest_checkpoint(tmp_path / "straight") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "halves") / "model.safetensors")
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-3  # cuDNN picks kernels per run: close, not always bit for bit


def test_compiled_dcgan_on_cuda(tmp_path):
    result = train(tiny_config("mnist-dcgan", *CUDA, "train.compile=on", "train.steps=10"), tmp_path,
                   progress=False)
    assert result.step == 10
