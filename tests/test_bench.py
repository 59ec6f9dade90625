"""The toy bench and multi-seed training, on budgets of a few steps."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genforge.bench import PUBLISHED, format_bench, format_seeds, toy_bench, train_seeds
from genforge.config import load_recipe
from genforge.errors import GenforgeError
from genforge.runs import read_status

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = ("model.hidden=16", "model.layers=1", "model.latent_dim=4", "train.batch_size=16", "train.device=cpu")


def test_toy_bench_table_beside_the_published_numbers(tmp_path):
    rows = toy_bench(tmp_path, seeds=2, steps=2, toys=["ring-8"], configs=["wgan-gp"], extra=TINY, log=lambda _: None)
    assert len(rows) == 1 and len(rows[0].values["modes"]) == 2
    assert all(0 <= m <= 8 for m in rows[0].values["modes"])
    table = format_bench(rows)
    assert "wgan-gp" in table and "GAN (PacGAN paper)" in table and "±" in table
    assert PUBLISHED["grid-25"]["PacGAN4 (PacGAN paper)"] == (24.8, 93.6, 0.04)


def test_toy_bench_workers_give_the_same_numbers(tmp_path):
    kwargs = dict(seeds=2, steps=3, toys=["ring-8"], configs=["gan-nonsaturating"], extra=TINY, log=lambda _: None)
    serial = toy_bench(tmp_path / "serial", **kwargs)
    lines = []
    side_by_side = toy_bench(tmp_path / "parallel", workers=2, **{**kwargs, "log": lines.append})
    assert serial[0].values == side_by_side[0].values
    assert [line.split(":")[0].split()[-1] for line in lines] == ["0", "1"]  # seeds reported in order
    assert (tmp_path / "parallel" / "ring-8" / "gan-nonsaturating" / "seed-1" / "metrics.jsonl").is_file()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads worker PIDs from Linux's /proc")
def test_stopping_the_bench_stops_its_workers(tmp_path):
    script = ("from genforge.bench import toy_bench\n"
              f"toy_bench({str(tmp_path)!r}, seeds=2, steps=10**7, toys=['ring-8'], "
              "configs=['gan-minimax', 'gan-nonsaturating'], "
              f"extra={list(TINY)!r}, workers=2, log=print)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ring-8/*/seed-*/config.json"))) < 4:  # both workers training 2 seeds each
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.2)
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
        workers = [pid for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) == 2
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) != 0
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
                 and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
        assert alive == []
    finally:
        parent.kill()


def test_train_seeds_keeps_the_best(tmp_path):
    cfg = load_recipe("ring-8", [*TINY, "train.steps=2", "train.threads=1", "train.sample_every=1000",
                                 "train.checkpoint_every=1000"])
    best, rows = train_seeds(cfg, tmp_path, 2, "eval/hq", progress=False, log=lambda _: None)  # as logged, or bare
    assert [r["seed"] for r in rows] == [0, 1] and sum(r["best"] for r in rows) == 1
    winner = max(rows, key=lambda r: r["hq"])
    assert winner["best"] and (best / "checkpoints" / "latest").exists()
    assert "<- best" in format_seeds(rows)
    # the copy is a run every command reads: its latest checkpoint is a link, as genforge wrote it
    assert (best / "checkpoints" / "latest").is_symlink()
    import genforge

    assert genforge.load(best).step == 2


def _seeds_config():
    return load_recipe("ring-8", [*TINY, "train.steps=2", "train.threads=1", "train.sample_every=1000",
                                  "train.checkpoint_every=1000"])


def test_train_seeds_refuses_a_folder_that_holds_earlier_seeds_and_trains_nothing(tmp_path):
    from genforge.errors import GenforgeError

    (tmp_path / "seed-1").mkdir()
    (tmp_path / "seed-1" / "config.json").write_text("{}")
    with pytest.raises(GenforgeError, match="seed-1 already exists: train the seeds into another --run-dir"):
        train_seeds(_seeds_config(), tmp_path, 2, progress=False, log=lambda _: None)
    assert not (tmp_path / "seed-0").exists() and (tmp_path / "seed-1" / "config.json").read_text() == "{}"


def test_train_seeds_refuses_an_unknown_metric_before_training_naming_the_ones_there_are(tmp_path):
    from genforge.errors import GenforgeError

    with pytest.raises(GenforgeError, match=r"--metric nope is not among ring-8's final metrics "
                                            r"\(modes, hq, reverse_kl, modes_total\)$"):
        train_seeds(_seeds_config(), tmp_path, 2, "nope", progress=False, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []  # nothing trained, no folder made


def test_a_metric_the_finished_runs_lack_is_refused_and_their_runs_kept(tmp_path, monkeypatch):
    from genforge import bench
    from genforge.errors import GenforgeError

    monkeypatch.setattr(bench, "final_figures", lambda cfg, root: ["modes", "ghost"])  # promised, never given
    with pytest.raises(GenforgeError, match=r"--metric ghost is not among the runs' final metrics \(.*hq.*kept under"):
        train_seeds(_seeds_config(), tmp_path, 2, "ghost", progress=False, log=lambda _: None)
    assert (tmp_path / "seed-0" / "config.json").is_file() and not (tmp_path / "best").exists()


def test_seeds_with_no_final_metric_choose_no_best(tmp_path, monkeypatch):
    from genforge import batched, bench
    from genforge.train import RunResult

    monkeypatch.setattr(bench, "final_figures", lambda cfg, root: [])
    monkeypatch.setattr(batched, "train_batched", lambda cfgs, folders, *_: [RunResult(f, 2, False) for f in folders])
    best, rows = train_seeds(_seeds_config(), tmp_path, 3, progress=False, log=lambda _: None)
    assert best is None and [r["best"] for r in rows] == [False] * 3 and not (tmp_path / "best").exists()
    assert "<- best" not in format_seeds(rows)


@pytest.mark.parametrize("recipe, wanted, unwanted", [
    ("ring-8", ["modes", "hq", "reverse_kl", "modes_total"], []),
    ("mnist-vae", ["test_neg_elbo", "test_nll"], ["test_bits_per_dim"]),
    ("mnist-cgan", ["class_accuracy"], ["test_nll"]),
    ("mnist-dcgan", [], ["class_accuracy", "modes", "fid"]),
    ("gmm-discogan", ["a2b_modes_covered", "b2a_mapping_purity", "recon_a"], ["modes_covered", "a2b_pixel_fid"]),
])
def test_final_figures_name_what_training_s_end_gives(recipe, wanted, unwanted):
    from genforge.bench import final_figures

    figures = final_figures(load_recipe(recipe))
    assert set(wanted) <= set(figures) and not set(unwanted) & set(figures)
    if recipe == "mnist-dcgan":
        assert figures == []


def test_ctrl_c_in_one_seed_stops_the_seeds_after_it_and_chooses_no_best(tmp_path, monkeypatch):
    from genforge import api, batched, bench
    from genforge.train import RunResult

    started = []

    def interrupted_run(cfg, run_dir, **_):
        started.append(cfg.train.seed)
        return RunResult(run_dir, step=1, interrupted=True)

    monkeypatch.setattr(api, "train_run", interrupted_run)
    monkeypatch.setattr(batched, "why_not_batched", lambda cfgs: "one by one in this test")
    with pytest.raises(bench.SeedsInterrupted) as stop:
        train_seeds(_seeds_config(), tmp_path, 3, progress=False, log=lambda _: None)
    assert started == [0] and stop.value.folder == tmp_path / "seed-0" and (stop.value.started, stop.value.total) == (1, 3)
    assert not (tmp_path / "best").exists()



def test_the_toy_bench_checks_its_out_folder_and_configs_before_it_writes(tmp_path):
    lines = []
    kwargs = dict(seeds=1, toys=["ring-8"], configs=["gan-minimax"], extra=TINY, log=lines.append)
    with pytest.raises(GenforgeError, match="--steps must be positive, not 0"):
        toy_bench(tmp_path / "zero", steps=0, **kwargs)
    assert not (tmp_path / "zero").exists() and not lines  # nothing printed, no folder left behind
    run = tmp_path / "a-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(GenforgeError, match="is inside the run"):
        toy_bench(run, steps=2, **kwargs)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json"]
    toy_bench(tmp_path / "bench", steps=2, **kwargs)
    seed_dir = tmp_path / "bench" / "ring-8" / "gan-minimax" / "seed-0"
    (seed_dir / "lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": 0}))
    with pytest.raises(GenforgeError, match="is being trained now"):
        toy_bench(tmp_path / "bench", steps=2, **kwargs)  # a live holder: not deleted under it
    assert (seed_dir / "config.json").is_file()
    (seed_dir / "lock").unlink()
    lines.clear()
    toy_bench(tmp_path / "bench", steps=2, **kwargs)
    assert lines[0] == f"genforge: replacing 1 run(s) of an earlier bench under {tmp_path / 'bench'}"
    # a configuration with its own budget (train.steps=20000) takes --steps: it was refused as a budget given twice
    rows = toy_bench(tmp_path / "best", steps=2, **{**kwargs, "configs": ["gan-ns-z2-bn-topk-drs"]})
    assert rows and read_status(tmp_path / "best" / "ring-8" / "gan-ns-z2-bn-topk-drs" / "seed-0") == "finished"
