"""The fast paths: how ``auto`` resolves, and that each trains to float32's losses.

Tolerances (stated in ``docs/speed.md``): after 60 seeded tiny steps, the last logged
window's losses match the plain float32 eager run to 2% (VAE) and 10% (DCGAN's game
losses at lr 2e-4, which oscillate). channels_last and fused kernels are expected to match
to 1e-3 on CPU (the same arithmetic, summed in another order by some layouts' kernels);
bf16 rounds every product; compile draws its noise from a different RNG stream.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from genforge import runtime
from genforge.config import OptimConfig
from genforge.errors import GenforgeError
from genforge.runtime import choose_fast_paths
from genforge.train import make_optimizer, train
from tests.conftest import tiny_config

PLAIN = ("train.precision=fp32", "train.channels_last=off", "train.compile=off", "optim.fused=false")
CPU = torch.device("cpu")


def _last_losses(run_dir) -> dict[str, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [row for row in rows if "images_per_s" in row][-1]
    return {k: v for k, v in last.items() if k.endswith("/loss")}


def _losses(tmp_path, name, recipe, *extra) -> dict[str, float]:
    train(tiny_config(recipe, "train.steps=60", "train.log_every=20", *PLAIN, *extra), tmp_path / name,
          progress=False)
    return _last_losses(tmp_path / name)


# The DCGAN at the published lr 2e-4: at the recipe's 1e-3, D's loss falls to ~0.06 within 60 tiny
# steps, where a relative tolerance says little.
@pytest.mark.parametrize("recipe, settings, tolerance", [("mnist-vae", (), 0.02),
                                                         ("mnist-dcgan", ("optim.lr=2e-4",), 0.10)])
@pytest.mark.parametrize("fast", ["train.precision=bf16", "train.channels_last=on", "optim.fused=true"])
def test_each_fast_path_trains_to_the_float32_loss(tmp_path, monkeypatch, recipe, settings, tolerance, fast):
    # The arithmetic is checked on every CPU: where bfloat16 is not native, PyTorch emulates it
    # (slowly; auto never picks it there, and an explicit request is refused), so the test lets it.
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: True)
    plain = _losses(tmp_path, "plain", recipe, *settings)
    quick = _losses(tmp_path, "fast", recipe, *settings, fast)
    assert plain.keys() == quick.keys() and plain
    for key in plain:
        assert quick[key] == pytest.approx(plain[key], rel=tolerance), key
    if "bf16" in fast:  # rounded products: close, but not float32's numbers (else bf16 never ran)
        assert quick != plain
    else:  # layout and kernel choice only: the same arithmetic, in another summation order
        for key in plain:
            assert quick[key] == pytest.approx(plain[key], rel=1e-3), key


def test_compiled_vae_trains_to_the_float32_loss(tmp_path):
    plain = _losses(tmp_path, "plain", "mnist-vae")
    compiled = _losses(tmp_path, "compiled", "mnist-vae", "train.compile=on")
    assert compiled["vae/loss"] == pytest.approx(plain["vae/loss"], rel=0.02)
    rows = [json.loads(line) for line in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()]
    assert [row["compile_s"] > 0 for row in rows if "compile_s" in row] == [True]  # reported once


def test_auto_picks_bf16_and_channels_last_for_images_where_the_cpu_has_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: True)
    fast = choose_fast_paths("auto", "auto", "auto", True, CPU, images=True, long_run=True)
    assert (fast.dtype, fast.channels_last, fast.compile, fast.fused) == (torch.bfloat16, True, False, True)
    assert fast.describe() == "precision=bf16 channels_last=on compile=off fused=on"
    points = choose_fast_paths("auto", "auto", "auto", True, CPU, images=False, long_run=True)
    assert (points.dtype, points.channels_last) == (None, False)  # toy points stay float32
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    fallback = choose_fast_paths("auto", "auto", "auto", True, CPU, images=True, long_run=True)
    assert fallback.dtype is None
    assert fallback.describe() == ("precision=fp32 channels_last=on compile=off fused=on "
                                   "(float32: this cpu has no native bfloat16)")  # says why, once per run
    assert not choose_fast_paths("fp32", "auto", "auto", True, CPU, images=True, long_run=True).note  # as asked


def test_auto_compiles_only_long_cuda_runs():
    cuda = torch.device("cuda")
    assert choose_fast_paths("fp32", "off", "auto", True, cuda, images=True, long_run=True).compile
    assert not choose_fast_paths("fp32", "off", "auto", True, cuda, images=True, long_run=False).compile
    assert not choose_fast_paths("fp32", "off", "auto", True, CPU, images=True, long_run=True).compile
    assert choose_fast_paths("fp32", "off", "on", True, CPU, images=True, long_run=False).compile


def test_auto_never_compiles_a_gradient_penalty_and_on_is_refused_in_one_line():
    from genforge.config import load_recipe, validate
    from genforge.models.gan import GAN

    cuda = torch.device("cuda")
    assert not choose_fast_paths("fp32", "off", "auto", True, cuda, images=True, long_run=True,
                                 compilable=False).compile
    for overrides, compilable in ((["model.loss=wgan-gp"], False), (["model.r1_gamma=1"], False), ([], True)):
        assert (not GAN.uncompilable(load_recipe("mnist-dcgan", overrides).model)) is compilable
    validate(load_recipe("mnist-dcgan", ["train.compile=on"]))
    with pytest.raises(GenforgeError, match="^train.compile=on: model.loss=wgan-gp backpropagates through a "
                                            "gradient") as refused:
        validate(load_recipe("pokemon-wgan-gp", ["train.compile=on"]))
    assert "\n" not in str(refused.value)


def test_a_compiled_gan_trains_with_the_fakes_its_d_step_keeps(tmp_path):
    """G's step reuses the fakes D's step judged (model.reuse_fakes); compiled, they once came out of
    D's compiled graph, whose backward D's update had already run: 'backward through the graph a
    second time' at the first G step."""
    result = train(tiny_config("mnist-dcgan", "train.compile=on", "train.precision=fp32"), tmp_path / "c",
                   progress=False)
    assert result.step == 4
    rows = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    losses = [row for row in rows if "g/loss" in row]
    assert losses and all(math.isfinite(row["g/loss"]) and math.isfinite(row["d/loss"]) for row in losses)


def test_explicit_precisions_the_device_cannot_run_are_clear_errors(monkeypatch):
    with pytest.raises(GenforgeError, match="fp16 needs a CUDA device"):
        choose_fast_paths("fp16", "auto", "auto", True, CPU, images=True, long_run=False)
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    with pytest.raises(GenforgeError, match="no native bfloat16"):
        choose_fast_paths("bf16", "auto", "auto", True, CPU, images=True, long_run=False)


def test_fp32_autocast_is_a_no_op_context():
    fast = choose_fast_paths("fp32", "off", "off", False, CPU, images=True, long_run=False)
    with fast.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "sgd", "adadelta"])
def test_fused_switch_picks_the_optimiser_kernels(name):
    params = [torch.nn.Parameter(torch.zeros(3))]
    fused = make_optimizer(OptimConfig(name=name, fused=True), params).defaults
    plain = make_optimizer(OptimConfig(name=name, fused=False), params).defaults
    if name in ("adam", "adamw"):
        assert fused["fused"] is True and not plain.get("fused")
    else:
        assert fused["foreach"] is True
    assert plain["foreach"] is False


def test_channels_last_run_resumes_bit_for_bit(tmp_path):
    from safetensors.torch import load_file

    from genforge.checkpoint import latest_checkpoint
    from genforge.api import resume_config

    settings = ("train.precision=fp32", "train.channels_last=on", "optim.fused=true")
    train(tiny_config("mnist-dcgan", "train.steps=8", *settings), tmp_path / "straight", progress=False)
    train(tiny_config("mnist-dcgan", "train.steps=4", *settings), tmp_path / "halves", progress=False)
    train(resume_config(tmp_path / "halves", steps=8), tmp_path / "halves", resume=True, progress=False)
    a = load_file(latest_checkpoint(tmp_path / "straight") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "halves") / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
