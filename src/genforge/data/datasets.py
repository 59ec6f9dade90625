"""Named image datasets, decoded once into uint8 tensors and batched by indexing.

``mnist-10k`` ships inside the package (10,000 real MNIST digits, CC BY-SA 3.0), so the
main job runs offline; it is split deterministically: the first 9,000 digits train, the
last 1,000 test (the files are already shuffled with seed 0). ``mnist`` and
``fashion-mnist`` are the canonical sets, found under the data roots or fetched by
``genforge data fetch NAME``.

Two-domain sets (for DiscoGAN) carry a second domain in ``images_b``/``labels_b``:
``fashion-bags-shoes`` (A = Fashion-MNIST bags, B = sandals, sneakers and ankle boots)
and the 2-D toys of :mod:`genforge.data.toy`, whose "images" are float points (N, 2).

Image folders (:mod:`genforge.data.folder`) are named ``folder:PATH`` (or ``folder`` with
``data.path``); ``pokemon`` is the folder ``<data root>/pokemon/artwork`` that
``genforge data fetch pokemon`` fills. They are decoded at the model's size with the
data config's background and channels, so :func:`load_data` (which takes the whole data
config) loads every kind of dataset; :func:`load_images` only the named tensor sets.
A folder has no held-out split: its "test" split is its training images.

Two folders make a two-domain set for DiscoGAN: ``data.dataset=folders`` with ``data.path=A``
and ``data.path_b=B`` (or any folder dataset with ``data.path_b``), or a named pair such as
``pokemon-art2sprite`` (A = ``<data root>/pokemon/artwork``, B = ``<data root>/pokemon/sprites``).
Each folder goes through the same safe decoder and on-disk cache as a single image folder.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from genforge.data.catalog import CATALOG, FOLDER_SETS, FOLDERS, MNIST
from genforge.data.idx import read_idx
from genforge.data.root import data_root, search_roots
from genforge.data.toy import MIXTURES, TOYS, mixture_points, toy_domains
from genforge.errors import GenforgeError

MNIST_10K_TRAIN = 9000  # first 9,000 of the bundled digits train, the last 1,000 test
SPLITS = ("train", "test")
BAG, SHOES = 8, (5, 7, 9)  # Fashion-MNIST classes of the two fashion-bags-shoes domains
TWO_DOMAIN = ("fashion-bags-shoes", *TOYS)
FOLDER_PREFIX = "folder:"  # data.dataset=folder:PATH


@dataclass(frozen=True)
class FolderPair:
    """A named two-domain set of two image folders under a data root (A = ``folder_a``, B = ``folder_b``)."""

    description: str
    folder_a: str
    folder_b: str


FOLDER_PAIRS: dict[str, FolderPair] = {
    "pokemon-art2sprite": FolderPair("Pokemon: A = the dream-world artworks, B = the in-game (Black/White) sprites",
                                     "pokemon/artwork", "pokemon/sprites"),
}


@dataclass(frozen=True)
class ImageData:
    """A split held in memory: ``images`` (N, C, H, W) uint8, ``labels`` (N,) int64.

    A two-domain set also holds domain B in ``images_b``/``labels_b`` (classes ``classes_b``);
    toy sets hold float points (N, 2) instead of images. An image folder names the file of
    each image in ``files`` (paths relative to the folder) and has no classes.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    images_b: torch.Tensor | None = None
    labels_b: torch.Tensor | None = None
    classes_b: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.images.shape[0]

    def resized(self, size: int) -> "ImageData":
        """The same split with every domain's images resized to ``size`` (points pass through)."""
        images_b = None if self.images_b is None else resize_images(self.images_b, size)
        return dataclasses.replace(self, images=resize_images(self.images, size), images_b=images_b)


def bundled_folder() -> Path:
    return Path(str(resources.files("genforge") / "data" / "bundled" / "mnist-10k"))


def known_datasets() -> list[str]:
    return ["mnist-10k", *CATALOG, *TWO_DOMAIN, *MIXTURES, *FOLDER_SETS, *FOLDER_PAIRS, FOLDERS, "folder:PATH"]


def is_folder_dataset(name: str) -> bool:
    """Whether ``name`` is an image folder (folder:PATH, folder, pokemon) or two of them (folders,
    pokemon-art2sprite) rather than a tensor set."""
    return (name.startswith(FOLDER_PREFIX) or name in ("folder", FOLDERS) or name in FOLDER_SETS
            or name in FOLDER_PAIRS)


def _locate_under_roots(relative: str, root: str | Path | None) -> Path | None:
    """The first ``<data root>/<relative>`` folder holding at least one file, or None."""
    for base in search_roots(root):
        folder = base / relative
        if folder.is_dir() and any(folder.iterdir()):
            return folder
    return None


def locate_folder_set(name: str, root: str | Path | None = None) -> Path | None:
    """The first ``<root>/<folder>`` of named folder set ``name`` holding at least one file, or None."""
    return _locate_under_roots(FOLDER_SETS[name].folder, root)


def _named_folder(name: str, relative: str, key: str, root: str | Path | None) -> Path:
    """Folder ``relative`` of named set ``name`` under the data roots, or one line saying where it was looked for."""
    folder = _locate_under_roots(relative, root)
    if folder is None:
        where = ", ".join(str(r / relative) for r in search_roots(root))
        fetch = f"run `genforge data fetch {name}` or " if name in FOLDER_SETS else ""
        raise GenforgeError(f"dataset '{name}' not found in {where}; {fetch}set {key}=FOLDER to a folder of images")
    return folder


def image_folder(data, root: str | Path | None = None) -> Path | None:
    """The image folder a data config (:class:`genforge.config.DataConfig`) names, or None when
    its dataset is a named tensor set. ``data.path`` wins over the default folder of ``pokemon``."""
    name, path = data.dataset, data.path
    if name.startswith(FOLDER_PREFIX):
        named = name[len(FOLDER_PREFIX):]
        if not named:
            raise GenforgeError("data.dataset=folder: needs a path, e.g. folder:/data/pokemon (or set data.path)")
        if path and Path(path).expanduser() != Path(named).expanduser():
            raise GenforgeError(f"data.dataset={name} and data.path={path} name different folders; set one of them")
        return Path(named).expanduser()
    if name in ("folder", FOLDERS) or name in FOLDER_SETS or name in FOLDER_PAIRS:
        if path:
            return Path(path).expanduser()
        if name in ("folder", FOLDERS):
            raise GenforgeError(f"data.dataset={name} needs data.path=FOLDER (or use data.dataset=folder:FOLDER)")
        relative = FOLDER_SETS[name].folder if name in FOLDER_SETS else FOLDER_PAIRS[name].folder_a
        return _named_folder(name, relative, "data.path", root)
    if path:
        raise GenforgeError(f"data.path is for image folders (folder:PATH, folder, {', '.join(FOLDER_SETS)}); "
                            f"dataset '{name}' is not one: leave data.path empty")
    return None


def image_folder_b(data, root: str | Path | None = None) -> Path | None:
    """Domain B's image folder of a two-folder data config, or None for every other dataset:
    ``data.path_b``, else the named pair's second folder. ``folders`` needs ``data.path_b``."""
    name, path_b = data.dataset, getattr(data, "path_b", "")
    if name in FOLDER_PAIRS:
        return Path(path_b).expanduser() if path_b else _named_folder(name, FOLDER_PAIRS[name].folder_b,
                                                                      "data.path_b", root)
    if name == FOLDERS and not path_b:
        raise GenforgeError("data.dataset=folders needs two folders: data.path=A data.path_b=B")
    if path_b and not is_folder_dataset(name):
        raise GenforgeError(f"data.path_b is a second image folder (data.dataset=folders data.path=A data.path_b=B); "
                            f"dataset '{name}' is not a folder: leave data.path_b empty")
    return Path(path_b).expanduser() if path_b else None


def load_data(data, split: str = "train", root: str | Path | None = None) -> ImageData:
    """Split ``split`` of the dataset a data config names, at ``data.image_size``: what a run trains on.

    Named sets come from :func:`load_images` and are resized; image folders are decoded by
    :func:`genforge.data.folder.load_folder` with ``data.background`` and ``data.channels``
    (and cached on disk), two folders each alike (domain B in ``images_b``). ``root`` is used
    when ``data.root`` is empty.
    """
    from genforge.data.folder import DecodeSettings, load_folder, warn_stderr

    root = data.root or root
    folder = image_folder(data, root)
    if folder is None:
        if getattr(data, "path_b", ""):
            image_folder_b(data, root)  # refuses data.path_b beside a tensor set
        return load_images(data.dataset, split, root).resized(data.image_size)
    if split not in SPLITS:
        raise GenforgeError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    folder_b = image_folder_b(data, root)
    if folder_b is not None and folder_b.resolve() == folder.resolve():
        raise GenforgeError(f"data.path and data.path_b both name {folder}: a translator needs two different folders")
    # The test split of a folder is its training images again; their problems were reported
    # when the train split was loaded, so they are not repeated.
    settings = DecodeSettings(data.image_size, data.channels, data.background)
    warn = warn_stderr if split == "train" else _quiet
    loaded = load_folder(folder, settings, warn=warn)
    loaded = hold_out(loaded, split, data.test_share)
    if folder_b is None:
        return ImageData(data.dataset, split, loaded.images, _unlabelled(loaded.images), (), files=loaded.files)
    loaded_b = hold_out(load_folder(folder_b, settings, warn=warn), split, data.test_share)
    return ImageData(data.dataset, split, loaded.images, _unlabelled(loaded.images), (), loaded_b.images,
                     _unlabelled(loaded_b.images), (), files=loaded.files)


def _unlabelled(images: torch.Tensor) -> torch.Tensor:
    """Class 0 for every image of a folder (folders have no classes)."""
    return torch.zeros(len(images), dtype=torch.long)


def _quiet(line: str) -> None:
    pass


def held_out_files(files: tuple[str, ...], share: float) -> set[str]:
    """The files of a folder held out as its test split: those whose name hashes (SHA-256) below
    ``share``, so the choice depends on nothing but each name (not on the order or the other files);
    at least one when ``share`` > 0 (the lowest hash), and never every file."""
    if share <= 0 or len(files) < 2:
        return set()
    scores = {name: int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:8], "big") / 2.0**64
              for name in files}
    chosen = {name for name, score in scores.items() if score < share} or {min(scores, key=scores.get)}
    if len(chosen) == len(files):
        chosen.discard(max(scores, key=scores.get))
    return chosen


def hold_out(loaded, split: str, share: float):
    """A decoded folder (:class:`genforge.data.folder.FolderImages`) cut to ``split``: with
    ``data.test_share`` > 0 the test split is the held-out files and the train split the rest."""
    test = held_out_files(loaded.files, share)
    if not test:
        return loaded
    keep = [i for i, name in enumerate(loaded.files) if (name in test) == (split == "test")]
    return dataclasses.replace(loaded, images=loaded.images[keep], files=tuple(loaded.files[i] for i in keep))


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
    """Load split ``train`` or ``test`` of dataset ``name`` as uint8 tensors (cached per process).

    Image folders need the decode settings of a data config: load them with :func:`load_data`.
    """
    if is_folder_dataset(name):
        raise GenforgeError(f"dataset '{name}' is an image folder, decoded at the model's size with "
                            "data.background and data.channels: load it with genforge.data.datasets.load_data(cfg.data)")
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
    for name, spec in FOLDER_SETS.items():
        folder = locate_folder_set(name, root)
        rows.append({"name": name, "description": spec.description,
                     "where": str(folder) if folder else f"missing: genforge data fetch {name}"})
    for name, pair in FOLDER_PAIRS.items():
        found = {relative: _locate_under_roots(relative, root) for relative in (pair.folder_a, pair.folder_b)}
        missing = [relative for relative, folder in found.items() if folder is None]
        rows.append({"name": name, "description": pair.description,
                     "where": f"missing: {' and '.join(missing)} under the data root" if missing
                     else " + ".join(str(folder) for folder in found.values())})
    rows.append({"name": FOLDERS, "description": "two image folders, the two domains of a translator: "
                 "data.dataset=folders data.path=A data.path_b=B", "where": "your folders"})
    rows.append({"name": "folder:PATH", "description": "any folder of PNG, JPEG, GIF, WebP or BMP images "
                 "(sub-folders too): data.dataset=folder:PATH", "where": "your folder"})
    return rows
