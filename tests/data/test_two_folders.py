"""Two image folders as the two domains of a translator (data.path=A data.path_b=B, pokemon-art2sprite):
each folder through the safe decoder, bad files skipped with a warning each, one-line refusals."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from genforge.config import DataConfig, load_recipe
from genforge.data.datasets import dataset_status, image_folder_b, load_data
from genforge.errors import GenforgeError

from ..conftest import synthetic_folder
from .test_folder import noise_png, png_header_only

pytestmark = pytest.mark.usefixtures("private_cache")


def folders_config(a, b, **extra) -> DataConfig:
    return DataConfig(dataset="folders", path=str(a), path_b=str(b), image_size=16, **extra)


def test_two_folders_load_as_domains_a_and_b(tmp_path):
    a, b = synthetic_folder(tmp_path / "a", count=5), synthetic_folder(tmp_path / "b", count=3, seed=1)
    data = load_data(folders_config(a, b))
    assert data.images.shape == (5, 3, 16, 16) and data.images_b.shape == (3, 3, 16, 16)
    assert data.images.dtype == data.images_b.dtype == torch.uint8
    assert data.labels.tolist() == [0] * 5 and data.labels_b.tolist() == [0] * 3
    assert data.files == tuple(f"{k}.png" for k in range(1, 6))
    assert not torch.equal(data.images[:3], data.images_b)  # B is its own folder, not A again
    test = load_data(folders_config(a, b), "test")  # a folder has no held-out split
    assert torch.equal(test.images_b, data.images_b)
    resized = data.resized(8)
    assert resized.images.shape[-1] == resized.images_b.shape[-1] == 8


def test_any_folder_dataset_with_path_b_is_two_domain(tmp_path):
    a, b = synthetic_folder(tmp_path / "a", count=2), synthetic_folder(tmp_path / "b", count=4)
    data = load_data(DataConfig(dataset=f"folder:{a}", path_b=str(b), image_size=8))
    assert len(data.images) == 2 and len(data.images_b) == 4


def test_bad_files_in_domain_b_are_skipped_with_one_warning_each(tmp_path, capsys):
    a, b = synthetic_folder(tmp_path / "a", count=3), synthetic_folder(tmp_path / "b", count=2)
    (b / "empty.png").write_bytes(b"")
    (b / "corrupt.png").write_bytes(noise_png()[:300])
    (b / "huge.png").write_bytes(png_header_only(100_000, 100_000))
    data = load_data(folders_config(a, b))
    assert len(data.images_b) == 2
    err = capsys.readouterr().err.splitlines()
    for name, problem in (("empty.png", "empty file"), ("corrupt.png", "corrupt or truncated"),
                          ("huge.png", "decompression bomb")):
        assert sum(f"{b / name}:" in line for line in err) == 1, err
        assert any(f"{b / name}:" in line and problem in line and line.endswith("skipped") for line in err), err
    assert any("skipped 3 of 5 image files; 2 usable" in line for line in err)


@pytest.mark.parametrize("contents", ["nothing", "only_bad"])
def test_an_empty_folder_b_is_refused(tmp_path, contents):
    a, b = synthetic_folder(tmp_path / "a", count=2), tmp_path / "b"
    b.mkdir()
    if contents == "only_bad":
        (b / "empty.png").write_bytes(b"")
    with pytest.raises(GenforgeError, match=f"no usable image in {b}"):
        load_data(folders_config(a, b))


@pytest.mark.parametrize("data, key", [
    (DataConfig(dataset="folders", path="A"), "data.path_b"),  # folders needs both
    (DataConfig(dataset="folders", path_b="B"), "data.path"),
    (DataConfig(dataset="mnist-10k", path_b="B"), "data.path_b"),  # a tensor set has no second folder
])
def test_bad_combinations_are_refused_in_one_line_naming_the_key(data, key):
    with pytest.raises(GenforgeError, match=key) as caught:
        load_data(data)
    assert "\n" not in str(caught.value)


def test_the_same_folder_twice_is_refused(tmp_path):
    a = synthetic_folder(tmp_path / "a", count=2)
    with pytest.raises(GenforgeError, match="data.path and data.path_b both name"):
        load_data(folders_config(a, tmp_path / "a" / "."))


def test_pokemon_art2sprite_finds_both_folders_under_the_data_root(tmp_path, monkeypatch, isolated_data):
    synthetic_folder(isolated_data / "pokemon" / "artwork", count=3)
    data_cfg = load_recipe("pokemon-art2sprite", ["data.image_size=16"]).data
    with pytest.raises(GenforgeError, match=r"pokemon/sprites.*data.path_b=FOLDER"):
        load_data(data_cfg)
    sprites = isolated_data / "pokemon" / "sprites"
    sprites.mkdir()
    Image.new("RGBA", (40, 30), (10, 200, 30, 255)).save(sprites / "1.png")
    data = load_data(data_cfg)
    assert len(data.images) == 3 and len(data.images_b) == 1
    assert data.images.shape[1:] == (3, 16, 16)
    own = synthetic_folder(tmp_path / "mine", count=2)  # data.path_b overrides the pair's second folder
    assert image_folder_b(dataclasses.replace(data_cfg, path_b=str(own))) == own
    row = next(r for r in dataset_status() if r["name"] == "pokemon-art2sprite")
    assert str(sprites) in row["where"]
