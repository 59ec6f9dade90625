"""The datasets genforge knows by name: their files, checksums, mirrors and licences."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """One gzipped IDX file of a dataset, as its public mirrors serve it.

    ``sha256`` is the digest of the *decompressed* payload: mirrors (and Debian's
    package) recompress the same bytes differently, so the payload is what we check.
    """

    name: str  # e.g. "train-images-idx3-ubyte.gz"
    sha256: str


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: where its files live under a data root and where to fetch them."""

    name: str
    description: str
    folder: str  # sub-folder of a data root holding the files
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]  # base URLs, tried in order; file URL = mirror + file name
    licence: str
    classes: tuple[str, ...] = ()


IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")


def idx_files(*sha256: str) -> tuple[RemoteFile, ...]:
    """The four IDX files of an MNIST-style set, with their SHA-256 digests in IDX_FILES' order."""
    return tuple(RemoteFile(name, digest) for name, digest in zip(IDX_FILES, sha256, strict=True))


MNIST = DatasetSpec(
    name="mnist",
    description="canonical MNIST: 60,000 train + 10,000 test handwritten digits, 28x28 grey",
    folder="mnist",
    files=idx_files(
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    licence="MNIST by Y. LeCun, C. Cortes, C. Burges, CC BY-SA 3.0",
    classes=tuple(str(d) for d in range(10)),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    description="Fashion-MNIST: 60,000 train + 10,000 test clothing images, 28x28 grey, 10 classes",
    folder="fashion-mnist",
    files=idx_files(
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    licence="Fashion-MNIST by Zalando Research, MIT licence",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)

CATALOG: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


@dataclass(frozen=True)
class FolderSpec:
    """A named image-folder dataset: ``count`` numbered PNGs (1.png ... count.png) under
    ``folder`` of a data root, fetched from ``mirrors`` (file URL = mirror + file name).

    There is no published checksum list for these files, so a download is accepted when it
    decodes completely as an image; its SHA-256 is then recorded in ``manifest`` beside it.
    """

    name: str
    description: str
    folder: str
    count: int
    mirrors: tuple[str, ...]
    licence: str
    manifest: str = "SHA256SUMS"

    def file_names(self, count: int | None = None) -> list[str]:
        return [f"{number}.png" for number in range(1, (count or self.count) + 1)]


POKEMON = FolderSpec(
    name="pokemon",
    description="Pokemon artwork: a folder of RGBA PNGs, one per Pokedex number (the R5 recipes' data)",
    folder="pokemon/artwork",
    count=1025,  # national Pokedex numbers 1 to 1025 (generations 1 to 9)
    mirrors=("https://raw.githubusercontent.com/PokeAPI/sprites/master/sprites/pokemon/other/official-artwork/",),
    licence="artwork (c) The Pokemon Company; collection by the PokeAPI sprites project (CC0 for the collection)",
)

FOLDER_SETS: dict[str, FolderSpec] = {POKEMON.name: POKEMON}
FOLDERS = "folders"  # data.dataset=folders data.path=A data.path_b=B: any two image folders
