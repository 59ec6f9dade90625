"""`genforge eval` end to end on tiny runs, and the training-time FID check."""

from __future__ import annotations

import json

import torch

from genforge.checkpoint import load_checkpoint
from genforge.cli import main
from genforge.config import load_recipe
from genforge.metrics.evaluate import TrainingEval
from genforge.train import train

FEATURE_KEYS = {"fid", "kid", "kid_std", "precision", "recall", "class_histogram", "class_entropy",
                "classes_covered", "confident_share"}
INFO_KEYS = {"extractor", "extractor_sha256", "samples", "seed", "floor"}


def test_eval_gan_run_writes_eval_json(tiny_gan_run, capsys):
    assert main(["eval", str(tiny_gan_run), "--n", "300", "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tiny_gan_run / "eval.json").read_text())
    assert printed == written
    assert FEATURE_KEYS | INFO_KEYS <= set(written)
    assert written["samples"] == 300 and written["seed"] == 0 and written["extractor"] == "mnist"
    assert written["floor"]["fid"] < written["fid"]  # 3 training steps are far from real digits
    assert main(["eval", str(tiny_gan_run), "--n", "300"]) == 0  # the table, floor beside each value
    table = capsys.readouterr().out
    assert "real floor" in table and "fid" in table and "recall" in table


def test_eval_vae_run_adds_elbo_and_nll(tiny_vae_run, capsys):
    assert main(["eval", str(tiny_vae_run), "--n", "200", "--json", "--nll-samples", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert FEATURE_KEYS | INFO_KEYS | {"test_neg_elbo", "test_nll"} <= set(result)
    assert result["test_nll"] <= result["test_neg_elbo"] + 1.0  # the IW bound is the tighter one


def test_real_floor(capsys):
    assert main(["eval", "--real", "mnist-10k", "--json"]) == 0
    floor = json.loads(capsys.readouterr().out)
    assert floor["samples"] == 1000 and floor["classes_covered"] == 10
    assert floor["fid"] < 5 and floor["precision"] > 0.6 and floor["recall"] > 0.6


def test_training_eval_logs_fid_keeps_best_and_leaves_training_unchanged(tmp_path):
    overrides = ["train.steps=4", "train.batch_size=16", "train.log_every=2", "train.sample_every=100",
                 "train.checkpoint_every=100", "model.width=8"]
    plain = train(load_recipe("mnist-dcgan", overrides), tmp_path / "plain", progress=False)
    watched = train(load_recipe("mnist-dcgan", overrides + ["train.eval_every=2", "train.eval_n=64"]),
                    tmp_path / "watched", progress=False)
    assert plain.step == watched.step == 4
    rows = [json.loads(line) for line in (tmp_path / "watched" / "metrics.jsonl").read_text().splitlines()]
    fids = [row["eval/fid"] for row in rows if "eval/fid" in row]
    assert len(fids) == 2
    best = json.loads((tmp_path / "watched" / "checkpoints" / "best" / "state.json").read_text())
    assert best["eval_fid"] == min(fids)
    a = load_checkpoint(tmp_path / "plain" / "checkpoints" / "latest", weights_only=True).model
    b = load_checkpoint(tmp_path / "watched" / "checkpoints" / "latest", weights_only=True).model
    assert all(torch.equal(a[k], b[k]) for k in a)  # sampling for FID drew nothing from the training RNG


class OneDigitModel:
    """Stands in for a collapsed generator: always returns real 1s."""

    def __init__(self, images):
        self.images = images

    def ema_weights(self):
        import contextlib

        return contextlib.nullcontext(self)

    def sample(self, n, generator=None):
        return self.images[:n].float() / 255


def test_mode_collapse_warns_once(digits):
    train_split, _ = digits
    monitor = TrainingEval("mnist-10k", 28, 100, 0, torch.device("cpu"))
    collapsed = OneDigitModel(train_split.images[train_split.labels == 1])
    values, warning = monitor(collapsed, 50)
    assert warning.startswith("step 50: possible mode collapse") and values["eval/classes_covered"] == 1
    assert monitor(collapsed, 100)[1] is None  # once
    healthy = TrainingEval("mnist-10k", 28, 200, 0, torch.device("cpu"))
    assert healthy(OneDigitModel(train_split.images), 50)[1] is None
