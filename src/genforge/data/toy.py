"""Two-domain 2-D Gaussian mixtures for DiscoGAN's toy experiment (Kim et al. 2017, sec. 4.1).

Points are float32 tensors (N, 2), labels the component index of each point (for colouring
and metrics, never for training). Every split is drawn from its own fixed seed, so the data
are the same in every process.

- ``gmm-discogan``: the taught toy, domain A (X) = 5 modes at (0,0), (2,2), (-1,-1), (1,-1),
  (-1,1); domain B (Z) = 2 modes at (-1,-1), (1,1); std 0.1 per axis.
- ``gmm-discogan-wide``: the same with std 0.316 (the original passed 0.1 as the covariance).
- ``gmm-ring``: the paper's variant, A = 5 modes on a circle of radius 2, B = 10 modes on a
  circle of radius 2, std 0.1, so that "each A mode lands on its own B mode" can be checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

POINTS_PER_DOMAIN = 512
SPLIT_SEEDS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class ToySpec:
    description: str
    means_a: tuple[tuple[float, float], ...]
    means_b: tuple[tuple[float, float], ...]
    std: float


def ring(count: int, radius: float = 2.0, phase: float = 0.0) -> tuple[tuple[float, float], ...]:
    """``count`` points evenly spaced on a circle, the first at angle ``phase``."""
    return tuple((radius * math.cos(phase + 2 * math.pi * k / count), radius * math.sin(phase + 2 * math.pi * k / count))
                 for k in range(count))


_X_MODES = ((0.0, 0.0), (2.0, 2.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0))
_Z_MODES = ((-1.0, -1.0), (1.0, 1.0))

TOYS: dict[str, ToySpec] = {
    "gmm-discogan": ToySpec("DiscoGAN toy: 5-mode X <-> 2-mode Z Gaussian mixtures, std 0.1, 512 points each",
                            _X_MODES, _Z_MODES, 0.1),
    "gmm-discogan-wide": ToySpec("the same toy with std 0.316 (the original's covariance 0.1)",
                                 _X_MODES, _Z_MODES, 0.1 ** 0.5),
    "gmm-ring": ToySpec("DiscoGAN paper toy: 5 modes on a ring <-> 10 modes on a ring, std 0.1, 512 points each",
                        ring(5, phase=math.pi / 2), ring(10), 0.1),
}


def mixture(means: torch.Tensor, std: float, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of an equal-weight Gaussian mixture: points (n, D) float32, labels (n,) int64."""
    labels = torch.randint(len(means), (n,), generator=generator)
    points = means[labels] + std * torch.randn(n, means.shape[1], generator=generator)
    return points.float(), labels


def toy_domains(name: str, split: str, n: int = POINTS_PER_DOMAIN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(points_a, labels_a, points_b, labels_b) of toy ``name``; train uses seed 0, test seed 1."""
    spec = TOYS[name]
    generator = torch.Generator().manual_seed(SPLIT_SEEDS[split])
    points_a, labels_a = mixture(torch.tensor(spec.means_a, dtype=torch.float64), spec.std, n, generator)
    points_b, labels_b = mixture(torch.tensor(spec.means_b, dtype=torch.float64), spec.std, n, generator)
    return points_a, labels_a, points_b, labels_b


# --- single-domain mixtures: the GAN theory bench (recipes R4) ---------------------------
# The standard toys as PacGAN (Lin et al. 2018, arXiv 1712.04086) and VEEGAN define them, so
# that modes captured / high-quality share / reverse KL sit beside the published numbers;
# and the lecture's "duck and cow" weights (1-D) and weights and sizes (2-D). Train splits are
# large (the papers sample the mixture afresh every batch; 100,000 points is close to that),
# test splits 2,500.

MIXTURE_SIZES = {"train": 100_000, "test": 2_500}


@dataclass(frozen=True)
class MixtureSpec:
    description: str
    means: tuple[tuple[float, ...], ...]  # (K, D): one mean per mode
    std: float  # per axis, the same for every mode
    names: tuple[str, ...] = ()  # mode names (default: m0, m1, ...)

    @property
    def mode_names(self) -> tuple[str, ...]:
        return self.names or tuple(f"m{k}" for k in range(len(self.means)))


MIXTURES: dict[str, MixtureSpec] = {
    "duck-cow": MixtureSpec("1-D 'duck and cow' weights: Gaussians at 0.25 and 0.75 on a 0..1 axis, std 0.06",
                            ((0.25,), (0.75,)), 0.06, ("duck", "cow")),
    # The lecture's 2-D picture: ducks are light and small, cows heavy and big (axis 0 = weight, 1 = size).
    "duck-cow-2d": MixtureSpec("2-D ducks and cows: Gaussians at (0.25, 0.3) and (0.75, 0.7) on 0..1 weight and "
                               "size axes, std 0.06", ((0.25, 0.3), (0.75, 0.7)), 0.06, ("duck", "cow")),
    "ring-8": MixtureSpec("PacGAN ring: 8 Gaussians evenly on the unit circle, std 0.01", ring(8, radius=1.0), 0.01),
    "grid-25": MixtureSpec("PacGAN grid: 25 Gaussians at {-4,-2,0,2,4}^2, std 0.05",
                           tuple((float(x), float(y)) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)), 0.05),
}


def mixture_points(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(points (N, D) float32, mode labels (N,) int64) of single-domain mixture ``name``."""
    spec = MIXTURES[name]
    generator = torch.Generator().manual_seed(100 + SPLIT_SEEDS[split])
    return mixture(torch.tensor(spec.means, dtype=torch.float64), spec.std, MIXTURE_SIZES[split], generator)
