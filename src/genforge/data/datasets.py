"""Named image datasets, decoded once into uint8 tensors and batched by indexing.

``mnist-10k`` ships inside the package (10,000 real MNIST digits, CC BY-SA 3.0), so the
main job runs offline; it is split deterministically: the first 9,000 digits train, the
last 1,000 test (the files are already shuffled with seed 0). ``mnist`` and
``fashion-mnist`` are the canonical sets, found under the data roots or fetched by
``genforge data fetch NAME``.

Two-domain sets (for DiscoGAN) carry a second domain in ``images_b``/``labels_b``:
``fashion-bags-shoes`` (A = Fashion-MNIST bags, B = sandals, sneakers and ankle boots)
and the 2-D toys of :mod:`genforge.data.toy`, whose "images" are float points (N, 2).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from genforge.data.catalog import CATALOG, MNIST
from genforge.data.idx import read_idx
from genforge.data.root import data_root, search_roots
from genforge.data.toy import MIXTURES, TOYS, mixture_points, toy_domains
from genforge.errors import GenforgeError

MNIST_10K_TRAIN = 9000  # first 9,000 of the bundled digits train, the last 1,000 test
SPLITS = ("train", "test")
BAG, SHOES = 8, (5, 7, 9)  # Fashion-MNIST classes of the two fashion-bags-shoes domains
TWO_DOMAIN = ("fashion-bags-shoes", *TOYS)


@dataclass(frozen=True)
class ImageData:
    """A split held in memory: ``images`` (N, C, H, W) uint8, ``labels`` (N,) int64.

    A two-domain set also holds domain B in ``images_b``/``labels_b`` (classes ``classes_b``);
    toy sets hold float points (N, 2) instead of images.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    images_b: torch.Tensor | None = None
    labels_b: torch.Tensor | None = None
    classes_b: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.images.shape[0]

    def resized(self, size: int) -> "ImageData":
        """The same split with every domain's images resized to ``size`` (points pass through)."""
        images_b = None if self.images_b is None else resize_images(self.images_b, size)
        return dataclasses.replace(self, images=resize_images(self.images, size), images_b=images_b)


def bundled_folder() -> Path:
    return Path(str(resources.files("genforge") / "data" / "bundled" / "mnist-10k"))


def known_datasets() -> list[str]:
    return ["mnist-10k", *CATALOG, *TWO_DOMAIN, *MIXTURES]


def locate(name: str, root: str | Path | None = None) -> Path | None:
    """The first folder holding every file of catalogued dataset ``name``, or None."""
    spec = CATALOG[name]
    for base in search_roots(root):
        folder = base / spec.folder
        if all(_find(folder, f.name) for f in spec.files):
            return folder
    return None


def _find(folder: Path, gz_name: str) -> Path | None:
    """A file by its .gz name, or its decompressed twin (some mirrors and users unzip)."""
    for candidate in (folder / gz_name, folder / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, root: str) -> ImageData:
    if name in MIXTURES:  # single-domain toy points (N, D) for the GAN theory bench
        points, labels = mixture_points(name, split)
        return ImageData(name, split, points, labels, MIXTURES[name].mode_names)
    if name in TOYS:
        points_a, labels_a, points_b, labels_b = toy_domains(name, split)
        spec = TOYS[name]
        return ImageData(name, split, points_a, labels_a, tuple(f"A{k}" for k in range(len(spec.means_a))),
                         points_b, labels_b, tuple(f"B{k}" for k in range(len(spec.means_b))))
    if name == "fashion-bags-shoes":
        fashion = _load_cached("fashion-mnist", split, root)
        bags = fashion.labels == BAG
        shoes = torch.isin(fashion.labels, torch.tensor(SHOES))
        return ImageData(name, split, fashion.images[bags], fashion.labels[bags], fashion.classes,
                         fashion.images[shoes], fashion.labels[shoes], fashion.classes)
    if name == "mnist-10k":
        folder = bundled_folder()
        images = read_idx(folder / "images-idx3-ubyte.gz")
        labels = read_idx(folder / "labels-idx1-ubyte.gz")
        part = slice(0, MNIST_10K_TRAIN) if split == "train" else slice(MNIST_10K_TRAIN, None)
        images, labels, classes = images[part], labels[part], MNIST.classes
    else:
        spec = CATALOG[name]
        folder = locate(name, root or None)
        if folder is None:
            where = ", ".join(str(r / spec.folder) for r in search_roots(root or None))
            hint = " (or use the bundled 'mnist-10k')" if name == "mnist" else ""
            raise GenforgeError(
                f"dataset '{name}' not found in {where}; run `genforge data fetch {name}`{hint}")
        prefix = "train" if split == "train" else "t10k"
        images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte.gz"))
        labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte.gz"))
        classes = spec.classes
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise GenforgeError(
            f"dataset '{name}' {split}: images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match")
    return ImageData(name, split, images.unsqueeze(1), labels.long(), classes)  # (N, 1, 28, 28)


def load_images(name: str, split: str = "train", root: str | Path | None = None) -> ImageData:
    """Load split ``train`` or ``test`` of dataset ``name`` as uint8 tensors (cached per process)."""
    if name not in known_datasets():
        raise GenforgeError(f"unknown dataset '{name}'; known datasets: {', '.join(known_datasets())}")
    if split not in SPLITS:
        raise GenforgeError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    # Keyed by the resolved root, so a changed $GENFORGE_DATA is never answered from the cache.
    return _load_cached(name, split, str(data_root(root)))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) images to ``size`` x ``size``; 28 -> 32 pads by 2 as DCGAN ports do.
    Anything that is not a batch of images (toy points (N, 2)) passes through unchanged."""
    if images.ndim != 4:
        return images
    height = images.shape[-1]
    if height == size:
        return images
    if size > height and (size - height) % 2 == 0:
        pad = (size - height) // 2
        return torch.nn.functional.pad(images, (pad, pad, pad, pad))
    resized = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                              antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def dataset_status(root: str | Path | None = None) -> list[dict[str, str]]:
    """One row per known dataset: name, description, where it is (or how to get it)."""
    rows = [{"name": "mnist-10k", "description": "10,000 real MNIST digits bundled with genforge (9,000 train / 1,000 test)",
             "where": f"bundled ({bundled_folder()})"}]
    for name, spec in CATALOG.items():
        folder = locate(name, root)
        rows.append({"name": name, "description": spec.description,
                     "where": str(folder) if folder else f"missing: genforge data fetch {name}"})
    fashion = locate("fashion-mnist", root)
    rows.append({"name": "fashion-bags-shoes",
                 "description": "two domains from Fashion-MNIST: A = bags, B = sandals, sneakers, ankle boots",
                 "where": str(fashion) if fashion else "missing: genforge data fetch fashion-mnist"})
    for name, toy in TOYS.items():
        rows.append({"name": name, "description": toy.description, "where": "generated (genforge.data.toy)"})
    for name, mix in MIXTURES.items():
        rows.append({"name": name, "description": mix.description, "where": "generated (genforge.data.toy)"})
    return rows
