"""Nearest training images (`genforge sample --nearest`) and the pixel-space evaluation of folder runs."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from genforge import viz
from genforge.cli import main
from genforge.config import DataConfig, load_recipe
from genforge.data.datasets import load_data
from genforge.errors import GenforgeError
from genforge.metrics import evaluate
from genforge.metrics.evaluate import EvalInputs, feature_metrics, pixel_set
from genforge.metrics.nearest import (embedding_for, nearest, nearest_training, pixel_vectors, projection_id,
                                      projection_matrix)

from ..conftest import synthetic_folder, train_on_folder

pytestmark = [pytest.mark.usefixtures("private_cache"), pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def images_folder(tmp_path_factory):
    return synthetic_folder(tmp_path_factory.mktemp("images") / "shapes", count=24)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, images_folder):
    """A 2-step tiny pokemon-dcgan run on the synthetic folder at 32x32."""
    run_dir = tmp_path_factory.mktemp("folder-run") / "run"
    cfg = load_recipe("pokemon-dcgan", [f"data.dataset=folder:{images_folder}", "data.image_size=32", "model.width=4",
                                        "model.latent_dim=8", "train.steps=2", "train.batch_size=8", "train.threads=1",
                                        "train.device=cpu", "train.sample_every=100", "train.checkpoint_every=100"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENFORGE_CACHE", str(run_dir.parent / "cache"))
        train_on_folder(cfg, run_dir)
    return run_dir


# --- the pieces --------------------------------------------------------------------------

def test_nearest_matches_brute_force_across_chunks():
    g = torch.Generator().manual_seed(0)
    queries, references = torch.randn(37, 5, generator=g), torch.randn(23, 5, generator=g)
    brute = torch.cdist(queries, references)
    distances, indices = nearest(queries, references, chunk=8)
    assert torch.equal(indices, brute.argmin(1))
    assert torch.allclose(distances, brute.min(1).values)


def test_nearest_other_row_excludes_itself():
    points = torch.tensor([[0.0], [1.0], [3.0], [3.5]])
    distances, indices = nearest(points, points, exclude_self=True, chunk=3)
    assert indices.tolist() == [1, 0, 3, 2]
    assert distances.tolist() == [1.0, 1.0, 0.5, 0.5]
    with pytest.raises(GenforgeError, match="at least 2 reference images"):
        nearest(points[:1], points[:1], exclude_self=True)


def test_pixel_space_and_projection():
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    vectors = pixel_vectors(images)
    assert vectors.shape == (4, 3 * 32 * 32) and 0 <= vectors.min() and vectors.max() <= 1
    assert torch.allclose(vectors, pixel_vectors(images.float() / 255), atol=1e-6)  # uint8 or [0, 1] alike
    assert pixel_vectors(images[:, :, :16, :16]).shape == (4, 3 * 16 * 16)  # small images are not enlarged
    assert torch.equal(projection_matrix(3072), projection_matrix(3072))  # fixed for good
    assert projection_id(3072) == projection_id(3072) != projection_id(1024)
    assert pixel_set([images[:2], images[2:]]).features.shape == (4, 128)


def test_pair_grid_puts_each_sample_beside_its_neighbour():
    left, right = torch.zeros(3, 3, 4, 4), torch.ones(3, 3, 4, 4)
    grid = viz.pair_grid(left, right, nrow=3)
    assert grid.shape == (3, 4 + 8, 3 * (9 + 4) + 4)  # pairs 2 * 4 + 1 wide, padding 4
    pair = grid[:, 4:8, 4:13]
    assert (pair[:, :, :4] == 0).all() and (pair[:, :, 4] == 0.5).all() and (pair[:, :, 5:] == 1).all()


def test_training_images_find_themselves(images_folder):
    data = DataConfig(dataset=f"folder:{images_folder}", image_size=16)
    train = load_data(data)
    picked = torch.tensor([5, 0, 17])
    found = nearest_training(train.images[picked].float() / 255, data)
    assert found.indices.tolist() == picked.tolist()
    assert found.distances.abs().max() < 1e-5
    assert found.names == [train.files[i] for i in picked.tolist()]
    assert found.space.startswith("pixels")
    with pytest.raises(GenforgeError, match="training images are"):
        nearest_training(torch.zeros(2, 1, 16, 16), data)


def test_mnist_uses_the_classifier_features():
    data = DataConfig(dataset="mnist-10k", image_size=28)
    assert embedding_for("mnist-10k").name == "mnist classifier features"
    train = load_data(data)
    found = nearest_training(train.images[:4].float() / 255, data)
    assert found.indices.tolist() == [0, 1, 2, 3] or found.distances.max() < 1e-4  # duplicates may tie


# --- the copy detector and the pixel-space metrics -----------------------------------------

def _pixel_inputs(real: torch.Tensor, fake: torch.Tensor) -> EvalInputs:
    return EvalInputs(pixel_set([real]), pixel_set([fake]), seed=0, channels=real.shape[1])


def test_copies_are_caught_and_new_images_are_not(images_folder, monkeypatch):
    monkeypatch.setattr(evaluate, "KID_SUBSETS", 5)
    train = load_data(DataConfig(dataset=f"folder:{images_folder}", image_size=32)).images
    copies = feature_metrics(_pixel_inputs(train, train[torch.arange(64) % len(train)]), "image-folder")
    assert copies["near_copies"] == 1.0 and copies["nn_sample_to_train"] < 1e-5 and copies["nn_ratio"] < 1e-5
    assert copies["pixel_fid"] < 1.0 and copies["colour_mean_diff"] < 0.01
    noise = torch.rand(64, 3, 32, 32)
    fresh = feature_metrics(_pixel_inputs(train, noise), "image-folder")
    assert fresh["near_copies"] == 0.0 and fresh["nn_ratio"] > 1.0
    assert fresh["pixel_fid"] > 10 * copies["pixel_fid"] + 1 and fresh["pixel_kid"] > copies["pixel_kid"]
    assert fresh["colour_mean_diff"] > 0.1


def test_colour_statistics_per_channel():
    red = torch.zeros(6, 3, 8, 8)
    red[:, 0] = 1.0
    half = torch.full((6, 3, 8, 8), 0.5)
    values = feature_metrics(_pixel_inputs(red, half), "image-folder")
    assert values["colour_mean_train"] == [1.0, 0.0, 0.0] and values["colour_mean"] == [0.5, 0.5, 0.5]
    assert values["colour_mean_diff"] == pytest.approx(0.5) and values["colour_std_diff"] == pytest.approx(0.0)


# --- the commands ----------------------------------------------------------------------------

def test_sample_nearest_writes_a_grid_of_pairs(folder_run, tmp_path, capsys):
    out = tmp_path / "pairs.png"
    assert main(["sample", str(folder_run), "--n", "6", "--nearest", "--out", str(out), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "nearest training image (pixels" in err and ".png)" in err.split("~")[-1]
    width, height = Image.open(out).size
    assert (width, height) == (2 * (3 * (2 * 32 + 1 + 4) + 4), 2 * (2 * (32 + 4) + 4))  # 3 pairs a row, scale 2


def test_sample_nearest_on_mnist_run(gan_run, tmp_path, capsys):
    out = tmp_path / "pairs.png"
    assert main(["sample", str(gan_run), "--n", "4", "--nearest", "--out", str(out), "--device", "cpu"]) == 0
    assert "mnist classifier features" in capsys.readouterr().err and out.is_file()


def test_eval_of_a_folder_run_reports_pixel_metrics_and_what_is_missing(folder_run, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "KID_SUBSETS", 5)
    assert main(["eval", str(folder_run), "--n", "40", "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((folder_run / "eval.json").read_text())
    assert result["feature_space"] == "pixel"
    assert set(result["metrics_available"]) == {"pixel_fid", "pixel_kid", "colour", "nearest"}
    missing = result["metrics_unavailable"]
    assert {"fid", "kid", "precision_recall", "coverage", "likelihood"} <= set(missing)
    assert "feature extractor" in missing["fid"] and "vae" in missing["likelihood"]
    for key in ("pixel_fid", "pixel_kid", "colour_mean_diff", "nn_sample_to_train", "nn_train_to_train", "nn_ratio",
                "near_copies"):
        assert isinstance(result[key], float) and isinstance(result["floor"][key], float), key
    assert result["floor"]["samples"] == 12 and "no held-out split" in result["reference"]
    assert result["pixel_fid"] > result["floor"]["pixel_fid"]  # two steps of training are not the data
    assert main(["eval", str(folder_run), "--n", "40", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "pixel_fid" in captured.out and "near_copies" in captured.out and "random projection" in captured.err


def test_eval_of_an_mnist_run_says_why_pixel_metrics_are_absent(gan_run):
    from genforge import api

    loaded = api.load(gan_run)
    result = evaluate.evaluate_loaded(loaded.cfg, loaded.model, loaded.step, None, n=200)
    assert result["feature_space"] == "classifier" and "fid" in result["metrics_available"]
    assert "has one" in result["metrics_unavailable"]["pixel_fid"]


def test_real_floor_of_a_folder_is_a_clear_error(capsys):
    assert main(["eval", "--real", "pokemon"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "image folder 'pokemon'" in line and "genforge eval RUN_DIR" in line
