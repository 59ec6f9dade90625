"""Pictures: image grids (Pillow) and plots (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from genforge.atomic import atomic_output


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


def pair_grid(left: torch.Tensor, right: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """Tile pairs of (B, C, H, W) images in [0, 1], ``left[i]`` beside ``right[i]`` (a 1-pixel grey line
    between them), ``nrow`` pairs per row (default: a square-ish grid), into one (C, H', W') image."""
    count, channels, height, _ = left.shape
    line = torch.full((count, channels, height, 1), 0.5)
    pairs = torch.cat([left.float().cpu(), line, right.float().cpu()], dim=-1)  # (B, C, H, 2W + 1)
    return make_grid(pairs, nrow or max(1, math.ceil(math.sqrt(count))), padding=4,
                     pad_value=1.0 if channels == 1 else 0.0)


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
    with atomic_output(path) as tmp:
        to_pil(grid, scale).save(tmp)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (PNG, or PDF by suffix) and close a matplotlib figure."""
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp)
    _pyplot().close(fig)
    return path


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
    return _save_figure(fig, path)


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
    return _save_figure(fig, path)


# --- the GAN toys: data vs generated pictures, and their animation ----------------------

def _figure_tensor(fig) -> torch.Tensor:
    """A drawn matplotlib figure -> (3, H, W) float tensor in [0, 1]."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4) uint8
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255.0


def render_points(data: torch.Tensor, generated: torch.Tensor, title: str = "",
                  critic: tuple[np.ndarray, np.ndarray, str] | None = None,
                  limits: tuple[float, float] | None = None) -> torch.Tensor:
    """Data vs generated points as one (3, H, W) picture in [0, 1].

    1-D points (N, 1): the two densities as histograms, and ``critic`` = (x, D(x), label)
    drawn on a second axis (D's output curve); 2-D points (N, 2): a scatter, data in grey.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=80)
    data, generated = data.detach().cpu().numpy(), generated.detach().cpu().numpy()
    if data.shape[1] == 1:
        lo, hi = limits or (-0.25, 1.25)
        bins = np.linspace(lo, hi, 121)
        ax.hist(data[:, 0], bins=bins, density=True, alpha=0.45, color="0.4", label="data")
        ax.hist(np.clip(generated[:, 0], lo, hi), bins=bins, density=True, histtype="step", linewidth=1.5,
                color="tab:green", label="G(z)")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        if critic is not None:
            twin = ax.twinx()
            twin.plot(critic[0], critic[1], color="tab:blue", linewidth=1.2, label=critic[2])
            twin.set_ylabel(critic[2], color="tab:blue")
            if critic[2] == "D(x)":
                twin.set_ylim(-0.02, 1.02)
                twin.axhline(0.5, color="tab:blue", linestyle=":", linewidth=0.8)
        ax.legend(frameon=False, fontsize=7, loc="upper left")
    else:
        ax.scatter(data[:, 0], data[:, 1], s=2, color="0.6", alpha=0.5, label="data")
        ax.scatter(generated[:, 0], generated[:, 1], s=2, color="tab:green", alpha=0.6, label="G(z)")
        if limits is not None:
            ax.set_xlim(*limits)
            ax.set_ylim(*limits)
        ax.set_aspect("equal")
        ax.legend(frameon=False, fontsize=7, loc="upper right", markerscale=3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    image = _figure_tensor(fig)
    plt.close(fig)
    return image


def save_gif(frames: Sequence[str | Path], path: str | Path, duration_ms: int = 300) -> Path | None:
    """Animate PNG ``frames`` (in order) into a looping GIF with Pillow; None when there are none."""
    frames = list(frames)
    if not frames:
        return None
    images = [Image.open(frame).convert("RGB") for frame in frames]
    size = images[0].size
    images = [im if im.size == size else im.resize(size) for im in images]
    path = Path(path)
    with atomic_output(path) as tmp:
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path
