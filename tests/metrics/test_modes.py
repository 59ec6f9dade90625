"""Mode metrics of the GAN toys on constructed cases."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.data.toy import MIXTURES
from genforge.metrics.modes import mode_histogram, mode_metrics

RING = torch.tensor(MIXTURES["ring-8"].means)


def test_all_modes_covered():
    points = RING.repeat(10, 1) + 0.005 * torch.randn(80, 2)
    result = mode_metrics(points, RING, 0.01)
    assert result == {"modes": 8.0, "hq": 100.0, "reverse_kl": pytest.approx(0.0, abs=1e-12), "modes_total": 8.0}


def test_one_mode():
    result = mode_metrics(RING[:1].repeat(50, 1), RING, 0.01)
    assert result["modes"] == 1.0 and result["hq"] == 100.0
    assert result["reverse_kl"] == pytest.approx(math.log(8))


def test_low_quality_samples_capture_nothing():
    # half the points between two modes (far beyond 3 std), half on mode 0 and 1
    between = (RING[0] + RING[1]) / 2
    points = torch.cat([between.repeat(10, 1), RING[0].repeat(5, 1), RING[1].repeat(5, 1)])
    result = mode_metrics(points, RING, 0.01)
    assert result["modes"] == 2.0 and result["hq"] == pytest.approx(50.0)
    assert result["reverse_kl"] == pytest.approx(math.log(4))  # two equal modes of 8: log(8/2)
    assert mode_metrics(between.repeat(3, 1), RING, 0.01)["reverse_kl"] == pytest.approx(math.log(8))


def test_three_std_boundary_and_histogram():
    point = RING[2] + torch.tensor([0.0299, 0.0])
    assert mode_metrics(point[None], RING, 0.01)["hq"] == 100.0
    assert mode_metrics((RING[2] + torch.tensor([0.031, 0.0]))[None], RING, 0.01)["hq"] == 0.0
    assert mode_histogram(RING.repeat(2, 1), RING).tolist() == [1 / 8] * 8


def test_toy_datasets_are_the_papers():
    grid = MIXTURES["grid-25"]
    assert len(grid.means) == 25 and grid.std == 0.05 and {m[0] for m in grid.means} == {-4, -2, 0, 2, 4}
    ring = MIXTURES["ring-8"]
    assert ring.std == 0.01 and all(abs(math.hypot(*m) - 1) < 1e-12 for m in ring.means)
    assert MIXTURES["duck-cow"].means == ((0.25,), (0.75,))
