"""Named datasets: the bundled split, the data roots, missing data, resizing."""

from __future__ import annotations

import pytest
import torch

from genforge.data import datasets
from genforge.data.datasets import dataset_status, load_images, resize_images
from genforge.data.idx import write_idx
from genforge.data.root import data_root, search_roots
from genforge.errors import GenforgeError

from ..conftest import SHARED_DATASETS


def test_mnist_10k_splits_9000_1000():
    train, test = load_images("mnist-10k", "train"), load_images("mnist-10k", "test")
    assert train.images.shape == (9000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and test.images.dtype == torch.uint8
    assert train.labels.shape == (9000,) and test.labels.shape == (1000,)
    assert train.labels.dtype == torch.int64 and test.labels.dtype == torch.int64
    assert len(train) == 9000 and train.classes == tuple("0123456789")
    assert set(train.labels.tolist()) == set(range(10))
    assert not torch.equal(train.images[-1000:], test.images)  # disjoint halves, not the same slice


def test_mnist_10k_split_is_the_bundled_file_order():
    from genforge.data.idx import read_idx

    every = read_idx(datasets.bundled_folder() / "images-idx3-ubyte.gz")
    assert torch.equal(load_images("mnist-10k", "train").images[:, 0], every[:9000])
    assert torch.equal(load_images("mnist-10k", "test").images[:, 0], every[9000:])


def test_unknown_dataset_and_split():
    with pytest.raises(GenforgeError, match="unknown dataset 'cifar'.*mnist-10k"):
        load_images("cifar")
    with pytest.raises(GenforgeError, match="unknown split 'val'"):
        load_images("mnist-10k", "val")


def test_missing_mnist_says_how_to_fetch(isolated_data):
    with pytest.raises(GenforgeError) as info:
        load_images("mnist", "train")
    message = str(info.value)
    assert "genforge data fetch mnist" in message
    assert str(isolated_data / "mnist") in message
    assert "mnist-10k" in message


def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "flag") == tmp_path / "flag"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("GENFORGE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "genforge"
    assert search_roots()[0] == tmp_path / "cache" / "genforge"


def test_dataset_found_in_data_root_gz_or_unzipped(isolated_data):
    """A hand-made tiny 'mnist' in the root is found, also when its files were unzipped."""
    folder = isolated_data / "mnist"
    folder.mkdir()
    for prefix, n in (("train", 6), ("t10k", 3)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", torch.full((n, 28, 28), 7, dtype=torch.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", torch.arange(n, dtype=torch.uint8))  # unzipped twin
    train = load_images("mnist", "train")
    assert train.images.shape == (6, 1, 28, 28) and train.labels.tolist() == list(range(6))
    assert load_images("mnist", "test").images.shape == (3, 1, 28, 28)
    rows = {row["name"]: row["where"] for row in dataset_status()}
    assert rows["mnist"] == str(folder)
    assert rows["fashion-mnist"] == "missing: genforge data fetch fashion-mnist"
    assert rows["mnist-10k"].startswith("bundled")


def test_images_and_labels_that_disagree(isolated_data):
    folder = isolated_data / "mnist"
    folder.mkdir()
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", torch.zeros(5, 28, 28, dtype=torch.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", torch.zeros(4, dtype=torch.uint8))
    with pytest.raises(GenforgeError, match=r"\(5, 28, 28\).*\(4,\) do not match"):
        load_images("mnist", "train")


@pytest.mark.skipif(not (SHARED_DATASETS / "fashion-mnist").is_dir(), reason="../shared/datasets not present")
def test_fashion_mnist_found_via_genforge_data(monkeypatch):
    from genforge.data import root

    monkeypatch.setenv("GENFORGE_DATA", str(SHARED_DATASETS))
    monkeypatch.setattr(root, "SYSTEM_ROOTS", ())
    datasets._load_cached.cache_clear()
    try:
        test = load_images("fashion-mnist", "test")
        assert test.images.shape == (10_000, 1, 28, 28) and test.images.dtype == torch.uint8
        assert test.labels.dtype == torch.int64 and test.classes[9] == "Ankle boot"
        assert datasets.locate("fashion-mnist") == SHARED_DATASETS / "fashion-mnist"
    finally:
        datasets._load_cached.cache_clear()


def test_resize_28_to_32_pads_with_zeros():
    images = torch.randint(1, 256, (3, 1, 28, 28), dtype=torch.uint8)
    out = resize_images(images, 32)
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.uint8
    assert torch.equal(out[:, :, 2:30, 2:30], images)
    border = out.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.sum()) == 0


def test_resize_same_size_is_identity_and_other_sizes_interpolate():
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert resize_images(images, 28) is images
    small = resize_images(torch.full((2, 1, 28, 28), 200, dtype=torch.uint8), 14)
    assert small.shape == (2, 1, 14, 14) and small.dtype == torch.uint8
    assert torch.all(small == 200)  # a constant image stays constant
    assert resize_images(images, 64).shape == (2, 1, 64, 64)
