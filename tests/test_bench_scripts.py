"""The benchmark scripts of bench/ run (tiny budgets): the plain reference trains, the
profile counts FLOPs and memory, and the bf16 path saves activation memory (on any CPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import plain  # noqa: E402
import throughput  # noqa: E402
import time_to_quality  # noqa: E402

from genforge import runtime  # noqa: E402
from genforge.config import load_recipe  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize("recipe", ["mnist-vae", "mnist-dcgan"])
def test_plain_reference_trains_the_recipes_networks(recipe):
    cfg = tiny_config(recipe)
    trainer = plain.PlainTrainer(cfg)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    assert trainer.run(3) > 0
    assert all(l == l for l in trainer.last_losses) and trainer.last_losses  # finite, read back
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_per_item_dataset_matches_the_torchvision_pipeline():
    images = torch.arange(4 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(4, 1, 28, 28)
    data = plain.PerItemImages(images, torch.arange(4), 28, tanh_range=True)
    x, label = data[2]
    assert label == 2 and x.shape == (1, 28, 28)
    assert torch.allclose(x, images[2].float() / 127.5 - 1.0)
    assert plain.PerItemImages(images, torch.arange(4), 32, tanh_range=False)[0][0].shape == (1, 32, 32)


def test_plain_reference_covers_only_what_it_implements():
    assert plain.supports(tiny_config("mnist-dcgan")) and plain.supports(tiny_config("mnist-vae"))
    assert not plain.supports(tiny_config("mnist-dcgan", "model.loss=wgan-gp"))


def test_step_profile_counts_the_same_flops_in_any_layout():
    cfg = tiny_config("mnist-dcgan")
    fp32 = runtime.choose_fast_paths("fp32", "off", "off", False, CPU, images=True, long_run=False)
    last = runtime.choose_fast_paths("fp32", "on", "off", True, CPU, images=True, long_run=False)
    a, b = throughput.step_profile(cfg, fp32, CPU), throughput.step_profile(cfg, last, CPU)
    assert a["gflop_per_image"] == b["gflop_per_image"] > 0
    assert a["activations_mb"] == pytest.approx(b["activations_mb"]) and a["memory_mb"] > a["activations_mb"] > 0
    assert throughput.peak_gflops(torch.float32, CPU, n=128, seconds=0.05) > 0


def test_step_profile_sees_bf16_save_activation_memory():
    # Memory, not speed: bf16 autocast runs (emulated, slowly) on CPUs without native bfloat16 too,
    # so this is built directly rather than through choose_fast_paths, which refuses it there.
    cfg = tiny_config("mnist-dcgan")
    fp32 = runtime.FastPaths(CPU, None, True, False, True)
    bf16 = runtime.FastPaths(CPU, torch.bfloat16, True, False, True)
    a, b = throughput.step_profile(cfg, fp32, CPU), throughput.step_profile(cfg, bf16, CPU)
    assert a["gflop_per_image"] == b["gflop_per_image"] > 0
    assert b["activations_mb"] < a["activations_mb"]


def test_table_cells_say_what_was_not_measured():
    assert throughput.percent(0.523) == "52%" and throughput.percent(None) == "-"


def test_cpu_name_keeps_the_family_and_model_a_virtual_machine_leaves(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu family\t: 23\nmodel\t\t: 49\nmodel name\t: AMD EPYC\n\n"
                    "processor\t: 1\ncpu family\t: 23\nmodel\t\t: 49\nmodel name\t: AMD EPYC\n")
    assert throughput.cpu_name(info) == "AMD EPYC (family 23, model 49)"
    info.write_text("model name : Some CPU\n")
    assert throughput.cpu_name(info) == "Some CPU"
    assert throughput.cpu_name(tmp_path / "missing")  # no /proc: what platform knows


def test_matrix_engine_reads_the_bf16_hardware_from_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    for flags, engine in (("fpu avx512f avx512_bf16 amx_bf16 amx_tile", "amx"), ("fpu avx512f avx512_bf16", "avx512_bf16"),
                          ("fpu avx2 fma", "none")):
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        assert throughput.matrix_engine(info) == engine
    assert throughput.matrix_engine(tmp_path / "missing") == "unknown"


def test_target_lines_judge_each_figure_against_its_cpus_threshold():
    results = [{"case": "dcgan-32", "ratio_vs_plain": 2.15, "share_of_bf16_peak": 0.53, "share_of_fp32_peak": 0.95}]
    assert throughput.target_lines("avx512_bf16", results, CPU) == [
        "target (AVX512-BF16, no AMX): dcgan-32 >= 2x plain: 2.15x, met",
        "target (AVX512-BF16, no AMX): dcgan-32 >= 60% of the bf16 peak: 53%, not met"]
    amx = throughput.target_lines("amx", results, CPU)
    assert amx[0].endswith("2.15x, not met") and amx[1].endswith("53%, met")
    assert amx[2] == "target (AMX-BF16): mnist-dcgan >= 2x plain: not measured (run --case mnist-dcgan)"
    assert throughput.target_lines("none", results, CPU) == [
        "target (no native bf16): dcgan-32 >= 90% of the fp32 peak: 95%, met"]
    busy = throughput.target_lines("avx512_bf16", results, CPU, others=1.0)  # a competitor beside the bench
    assert busy == ["target (AVX512-BF16, no AMX): dcgan-32 >= 2x plain: 2.15x, no verdict (other work kept 1.0 "
                    "cores busy)", "target (AVX512-BF16, no AMX): dcgan-32 >= 60% of the bf16 peak: 53%, no verdict "
                    "(other work kept 1.0 cores busy)"]
    assert throughput.target_lines("avx512_bf16", results, CPU, others=0.2)[0].endswith("met")  # noise
    assert throughput.target_lines("unknown", results, CPU) == []
    assert throughput.busy_warning(0.2) is None and "0.8 cores busy" in throughput.busy_warning(0.8)
    assert throughput.target_lines("amx", results, torch.device("meta")) == []  # not a CPU: no CPU targets


def test_machine_info_names_what_the_figures_depend_on():
    machine = throughput.machine_info(CPU)
    assert machine["cpu_capability"] and machine["native_bf16"] == runtime.bf16_supported(CPU)
    assert machine["threads"] == torch.get_num_threads() and machine["gpu"] is None


def test_per_item_dataset_keeps_rgb_channels_in_order():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    x, _ = plain.PerItemImages(images, torch.zeros(2, dtype=torch.long), 8, tanh_range=False)[1]
    assert x.shape == (3, 8, 8) and torch.allclose(x, images[1].float() / 255.0)


def test_time_to_quality_trains_the_plain_reference_with_the_published_optimiser():
    ours, theirs = time_to_quality.configs("mnist-dcgan", ["model.width=8"], time_to_quality.PUBLISHED)
    assert (theirs.optim.lr, theirs.optim.beta1, theirs.optim.beta2) == (2e-4, 0.5, 0.999)  # Radford et al.
    assert ours.optim == load_recipe("mnist-dcgan").optim  # genforge: the recipe's own settings
    assert ours.model == theirs.model and ours.model.width == 8  # the same networks
    assert ours.train.batch_size == theirs.train.batch_size == 64


def test_the_allocator_bench_prints_both_settings_and_their_ratio(capsys):
    import allocator

    allocator.main(["--recipe", "ring-8", "--steps", "2", "--rounds", "1", "--override", "model.hidden=8",
                    "--override", "train.threads=1"])
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[0])["cpu"]  # the CPU named first
    assert [line.split()[1:3] for line in lines[1:3]] == [["glibc", "default"], ["kept", "(genforge)"]]
    assert "minor faults" in lines[1] and "x faster" in lines[3]


def test_the_allocator_bench_says_which_training_failed():
    import allocator

    with pytest.raises(SystemExit, match="ring-8 --steps 2 .* failed \\(2\\): genforge: error: .*nope"):
        allocator.main(["--recipe", "ring-8", "--steps", "2", "--rounds", "1", "--override", "model.loss=nope"])
