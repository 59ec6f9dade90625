"""Pictures: image grids (Pillow) and plots (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile (B, C, H, W) images in [0, 1] into one (C, H', W') image, ``nrow`` per row."""
    count, channels, height, width = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / nrow)
    grid = torch.full((channels, rows * (height + padding) + padding, nrow * (width + padding) + padding), pad_value)
    for index in range(count):
        r, c = divmod(index, nrow)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[:, top:top + height, left:left + width] = images[index]
    return grid


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """(C, H, W) in [0, 1] -> a PIL image (grey for one channel), enlarged ``scale`` times."""
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    if array.shape[0] == 1:
        pil = Image.fromarray(array[0].numpy(), mode="L")
    else:
        pil = Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return pil


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    """Save (B, C, H, W) images in [0, 1] as one PNG grid; returns the path."""
    pad_value = 1.0 if images.shape[1] == 1 else 0.0
    return save_grid_image(make_grid(images, nrow, pad_value=pad_value), path, scale)


def save_grid_image(grid: torch.Tensor, path: str | Path, scale: int = 2) -> Path:
    """Save an already tiled (C, H, W) grid as PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(grid, scale).save(path)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl; a torn last line (after a crash) is ignored."""
    rows = []
    path = Path(path)
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def plot_curves(rows: Sequence[dict], keys: Iterable[str], path: str | Path, title: str = "",
                ylabel: str = "loss", hline: tuple[float, str] | None = None) -> Path | None:
    """Line plot of ``keys`` against step from metrics rows; None when no key has data."""
    keys = [k for k in keys if any(k in row for row in rows)]
    if not keys:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for key in keys:
        points = [(row["step"], row[key]) for row in rows if key in row]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=key, linewidth=1.5)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_scatter(points: np.ndarray, labels: np.ndarray, path: str | Path, title: str = "",
                 class_names: Sequence[str] | None = None) -> Path:
    """2-D scatter coloured by integer label, with a legend of class names."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    cmap = plt.get_cmap("tab10")
    for label in np.unique(labels):
        mask = labels == label
        name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        ax.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.7, color=cmap(int(label) % 10), label=name)
    ax.set_title(title)
    ax.legend(markerscale=3, frameon=False, fontsize=8, loc="best")
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
