"""The one registry: which metrics apply to which data and model, why the others do not, the
small-data notes, the table's units, and the progress callback the studio draws."""

from __future__ import annotations

import json

import pytest
import torch

from genforge.config import load_recipe
from genforge.errors import GenforgeError
from genforge.metrics import evaluate
from genforge.metrics.evaluate import KINDS, METRICS, STAGES, data_kind, evaluate_loaded, format_table, why_not
from genforge.models import build_model
from genforge.models.base import Capabilities


def test_data_kind_follows_the_declared_capabilities():
    assert data_kind(Capabilities(data="points"), "ring-8") == "points"
    assert data_kind(Capabilities(data="points", latent=False, translator=True), "gmm-ring") == "two-domain-points"
    assert data_kind(Capabilities(latent=False, translator=True), "fashion-bags-shoes") == "two-domain-images"
    assert data_kind(Capabilities(), "mnist-10k") == "named-images"
    assert data_kind(Capabilities(), "pokemon") == "image-folder"
    assert data_kind(Capabilities(), "folder:/somewhere") == "image-folder"


def test_every_kind_has_eval_metrics_and_every_metric_its_units():
    for kind in KINDS:
        assert any(kind in m.kinds and "eval" in m.stages for m in METRICS.values()), kind
    for metric in METRICS.values():
        assert metric.units and metric.help and set(metric.stages) <= set(STAGES), metric.name
        assert set(metric.kinds) <= set(KINDS), metric.name


def _toy_gan(*extra: str):
    cfg = load_recipe("ring-8", ["model.hidden=8", "train.threads=1", *extra])
    torch.manual_seed(0)
    return cfg, build_model(cfg, (2,), 8)


def test_why_not_names_what_is_missing():
    _, gan = _toy_gan()
    assert "feature extractor" in why_not(METRICS["fid"], gan, "image-folder", "pokemon")
    assert "pokemon" in why_not(METRICS["fid"], gan, "image-folder", "pokemon")
    assert "has one" in why_not(METRICS["pixel_fid"], gan, "named-images", "mnist")
    assert "vae family" in why_not(METRICS["likelihood"], gan, "named-images", "mnist")
    assert "conditional" in why_not(METRICS["class_accuracy"], gan, "named-images", "mnist")
    assert "two domains of toy points" in why_not(METRICS["translation_points"], gan, "points", "ring-8")
    assert why_not(METRICS["modes"], gan, "points", "ring-8") is None


def test_evaluate_loaded_reports_progress_and_writes_eval_json(tmp_path):
    cfg, model = _toy_gan()
    calls = []
    result = evaluate_loaded(cfg, model, 7, tmp_path, n=10, progress=lambda *call: calls.append(call))
    assert calls == [("modes", 0, 1), ("done", 1, 1)]
    assert json.loads((tmp_path / "eval.json").read_text()) == result
    assert result["data_kind"] == "points" and result["step"] == 7 and result["samples"] == 2500
    assert result["metrics_available"] == ["modes"] and "fid" in result["metrics_unavailable"]
    assert result["modes_total"] == 8.0 and "nats" in result["units"]["reverse_kl"]
    again = evaluate_loaded(cfg, model, 7, None, n=10)  # seeded: the same figures, and nothing written
    assert again["modes"] == result["modes"] and again["hq"] == result["hq"]


def test_small_folders_say_fid_is_biased_and_which_figure_to_trust():
    result = {"pixel_fid": 7.40, "pixel_kid": 0.012, "pixel_kid_std": 0.004, "samples": 10_000,
              "reference_images": 20, "floor": {"pixel_fid": 9.56, "samples": 10}}
    notes = evaluate.small_data_notes(result, "image-folder")
    assert notes["trust"] == "pixel_kid"
    assert "biased upward with 20 images" in notes["notes"][0] and "0.012 +- 0.004" in notes["notes"][0]
    assert "two halves of 10 images" in notes["notes"][1] and "not a model better than its data" in notes["notes"][1]
    large = {"fid": 20.0, "kid": 0.01, "kid_std": 0.001, "samples": 10_000, "reference_images": 10_000,
             "floor": {"fid": 1.0, "samples": 10_000}}
    assert evaluate.small_data_notes(large, "named-images") == {"notes": [], "trust": "fid"}
    assert evaluate.small_data_notes({"modes": 8.0}, "points") == {}


def test_table_prints_units_beside_each_figure_and_the_notes():
    result = {"pixel_fid": 7.4, "pixel_kid": 0.012, "pixel_kid_std": 0.004, "a2b_high_quality": 0.5, "recon_a": 0.1,
              "samples": 40, "floor": {"pixel_fid": 9.56}, "notes": ["pixel_fid is biased"], "trust": "pixel_kid",
              "units": {**METRICS["pixel_fid"].units, **METRICS["pixel_kid"].units,
                        **METRICS["translation_points"].units}}
    lines = format_table(result).splitlines()
    assert lines[0].split() == ["metric", "value", "real", "floor", "unit"]
    fid_line = next(line for line in lines if line.startswith("pixel_fid "))
    assert "9.5600" in fid_line and "biased up below 2,000" in fid_line
    assert "share of translations" in next(line for line in lines if line.startswith("a2b_high_quality"))
    assert "MSE" in next(line for line in lines if line.startswith("recon_a"))
    assert lines[-2:] == ["note: pixel_fid is biased", "trust: pixel_kid"]
    assert not any(line.startswith("samples") for line in lines)


def test_eval_needs_two_samples():
    cfg, model = _toy_gan()
    with pytest.raises(GenforgeError, match="at least 2"):
        evaluate_loaded(cfg, model, 0, None, n=1)
