"""The toy bench and multi-seed training, on budgets of a few steps."""

from __future__ import annotations

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


def test_train_seeds_keeps_the_best(tmp_path):
    cfg = load_recipe("ring-8", [*TINY, "train.steps=2", "train.threads=1", "train.sample_every=1000",
                                 "train.checkpoint_every=1000"])
    best, rows = train_seeds(cfg, tmp_path, 2, "hq", progress=False, log=lambda _: None)
    assert [r["seed"] for r in rows] == [0, 1] and sum(r["best"] for r in rows) == 1
    winner = max(rows, key=lambda r: r["hq"])
    assert winner["best"] and (best / "checkpoints" / "latest").exists()
    assert "<- best" in format_seeds(rows)
