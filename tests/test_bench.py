"""The toy bench and multi-seed training, on budgets of a few steps."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genforge.bench import PUBLISHED, format_bench, format_seeds, toy_bench, train_seeds
from genforge.config import load_recipe

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
    best, rows = train_seeds(cfg, tmp_path, 2, "hq", progress=False, log=lambda _: None)
    assert [r["seed"] for r in rows] == [0, 1] and sum(r["best"] for r in rows) == 1
    winner = max(rows, key=lambda r: r["hq"])
    assert winner["best"] and (best / "checkpoints" / "latest").exists()
    assert "<- best" in format_seeds(rows)
