"""Pixel space and nearest training images: what a generator may have copied.

For datasets without a trained feature extractor (image folders), images are compared
in pixel space: downscaled to at most 32x32 (antialiased bilinear; values in [0, 1]) and
flattened, with Euclidean distance. Frechet and kernel distances use a fixed random
projection of those pixels to 128 dimensions (Gaussian, seed 0, the same for every run
of the same channels and size, so scores are comparable). For MNIST and Fashion-MNIST,
:func:`embedding_for` uses the evaluation classifier's 128-d features instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from genforge.errors import GenforgeError

PIXEL_SIDE = 32  # pixel-space comparisons at most 32x32: cheap, and blind to sub-pixel detail
PROJECTION_DIM = 128
PROJECTION_SEED = 0  # fixed for good: every score ever computed used this matrix


def unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images -> float32 in [0, 1]."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def pixel_vectors(images: torch.Tensor, side: int = PIXEL_SIDE) -> torch.Tensor:
    """(N, C, H, W) uint8 or [0, 1] images -> (N, C * s * s) float32, s = min(side, H)."""
    x = unit(images)
    s = min(side, x.shape[-1])
    if x.shape[-1] != s or x.shape[-2] != s:
        x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
    return x.flatten(1)


def projection_matrix(dim_in: int, dim_out: int = PROJECTION_DIM) -> torch.Tensor:
    """The fixed (dim_in, dim_out) Gaussian projection, scaled by 1/sqrt(dim_in) (distances kept on average)."""
    generator = torch.Generator().manual_seed(PROJECTION_SEED)
    return torch.randn(dim_in, dim_out, generator=generator) / dim_in ** 0.5


def projection_id(dim_in: int) -> str:
    """SHA-256 of the projection matrix for ``dim_in`` pixels: names the feature space in eval.json."""
    return hashlib.sha256(projection_matrix(dim_in).numpy().tobytes()).hexdigest()


def project(pixels: torch.Tensor) -> torch.Tensor:
    """(N, D) pixel vectors -> (N, 128) random projections."""
    return pixels @ projection_matrix(pixels.shape[1])


@dataclass(frozen=True)
class Embedding:
    """A space to compare images in: ``name`` and ``embed`` ((N, C, H, W) uint8 or [0, 1] -> (N, D))."""

    name: str
    embed: Callable[[torch.Tensor], torch.Tensor]


def embedding_for(dataset: str, device: torch.device | str = "cpu") -> Embedding:
    """The evaluation classifier's features for MNIST / Fashion-MNIST, else 32x32 pixels."""
    from genforge.metrics.extractor import DOMAINS, extract, load_extractor

    if dataset in DOMAINS:
        extractor = load_extractor(DOMAINS[dataset], device=device)
        return Embedding(f"{DOMAINS[dataset]} classifier features", lambda images: extract(extractor, images))
    return Embedding(f"pixels at {PIXEL_SIDE}x{PIXEL_SIDE} or less", pixel_vectors)


def nearest(queries: torch.Tensor, references: torch.Tensor, exclude_self: bool = False,
            chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance (M,) and index (M,) of each query's nearest reference row.

    ``exclude_self``: queries are the references themselves (M == N); a row's own
    distance of 0 does not count, so the answer is its nearest *other* row.
    """
    if references.shape[0] < 1 + int(exclude_self):
        raise GenforgeError(f"nearest neighbours need at least {1 + int(exclude_self)} reference images, "
                            f"got {references.shape[0]}")
    # float64: cdist's matrix-product route loses ~1e-3 on identical 3,072-d float32 rows
    queries, references = queries.double(), references.double()
    distances, indices = [], []
    for start in range(0, queries.shape[0], chunk):
        dist = torch.cdist(queries[start:start + chunk], references)  # (chunk, N)
        if exclude_self:
            rows = torch.arange(dist.shape[0])
            dist[rows, rows + start] = float("inf")
        best = dist.min(dim=1)
        distances.append(best.values.float())
        indices.append(best.indices)
    return torch.cat(distances), torch.cat(indices)


@dataclass(frozen=True)
class Neighbours:
    """The nearest training image of each sample: ``images`` (M, C, H, W) in [0, 1], their
    ``distances`` and ``indices`` (M,), ``names`` (file names for folders) and the ``space``."""

    images: torch.Tensor
    distances: torch.Tensor
    indices: torch.Tensor
    names: list[str]
    space: str


def nearest_training(samples: torch.Tensor, data, root: str | None = None,
                     device: torch.device | str = "cpu") -> Neighbours:
    """Find each of ``samples`` ((M, C, H, W) in [0, 1]) among the training images that the data
    config ``data`` names (at the run's size), in :func:`embedding_for`'s space."""
    from genforge.data.datasets import load_data

    train = load_data(data, "train", root)
    if train.images.ndim != 4:
        raise GenforgeError(f"dataset '{data.dataset}' holds points, not images: there are no nearest images to show")
    if tuple(train.images.shape[1:]) != tuple(samples.shape[1:]):
        raise GenforgeError(f"the training images are {tuple(train.images.shape[1:])} but the samples "
                            f"{tuple(samples.shape[1:])}; was the run's data config changed?")
    space = embedding_for(data.dataset, device)
    distances, indices = nearest(space.embed(samples), space.embed(train.images))
    names = [train.files[i] if train.files else f"train image {i}" for i in indices.tolist()]
    return Neighbours(unit(train.images[indices]), distances, indices, names, space.name)
