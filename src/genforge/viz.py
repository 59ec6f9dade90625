"""Pictures: image grids (Pillow) and plots (matplotlib, Agg backend, imported lazily); the
toys' progress pictures; and the end-of-run pictures of a trained model, by registry (``REPORTS``).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

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


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed); imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (PNG, or PDF by suffix) and close a matplotlib figure."""
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp)
    pyplot().close(fig)
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
    plt = pyplot()
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
    return save_figure(fig, path)


def plot_scatter(points: np.ndarray, labels: np.ndarray, path: str | Path, title: str = "",
                 class_names: Sequence[str] | None = None) -> Path:
    """2-D scatter coloured by integer label, with a legend of class names."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    cmap = plt.get_cmap("tab10")
    for label in np.unique(labels):
        mask = labels == label
        name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        ax.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.7, color=cmap(int(label) % 10), label=name)
    ax.set_title(title)
    ax.legend(markerscale=3, frameon=False, fontsize=8, loc="best")
    ax.set_aspect("equal", adjustable="datalim")
    return save_figure(fig, path)


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
    plt = pyplot()
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


def render_paths(data: torch.Tensor, paths: torch.Tensor, title: str = "") -> torch.Tensor:
    """Walks of generated points over the data, one (3, H, W) picture in [0, 1]: ``paths`` (R, T, D),
    each walk a line from its first point (circle) to its last (square). 2-D points are drawn in the
    plane; 1-D points as x against the step along the walk."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=80)
    data, paths = data.detach().cpu().float().numpy(), paths.detach().cpu().float().numpy()
    colours = plt.get_cmap("tab10")
    if data.shape[1] == 1:
        steps = np.arange(paths.shape[1])
        density = ax.twiny()  # the data's density along x, behind the walks
        density.hist(data[:, 0], bins=60, orientation="horizontal", density=True, color="0.85")
        density.set_xticks([])
        ax.set_zorder(density.get_zorder() + 1)
        ax.patch.set_visible(False)
        for r, walk in enumerate(paths):
            ax.plot(steps, walk[:, 0], "-o", markersize=3, color=colours(r % 10))
        ax.set_xlabel("step along the walk")
        ax.set_ylabel("x")
    else:
        ax.scatter(data[:, 0], data[:, 1], s=2, color="0.75", alpha=0.5, label="data")
        for r, walk in enumerate(paths):
            ax.plot(walk[:, 0], walk[:, 1], "-", linewidth=1.2, color=colours(r % 10))
            ax.plot(*walk[0, :2], "o", color=colours(r % 10), markersize=5)
            ax.plot(*walk[-1, :2], "s", color=colours(r % 10), markersize=5)
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    image = _figure_tensor(fig)
    plt.close(fig)
    return image


# --- the toys' progress pictures: one function per kind of data --------------------------

SHOWN_POINTS = 2500  # data points drawn behind the generated ones


def _span(points: torch.Tensor, margin: float) -> tuple[float, float]:
    """Square plot limits around ``points`` (N, D), widened by ``margin`` of their extent."""
    lo, hi = float(points.min()), float(points.max())
    pad = margin * (hi - lo) + 1e-3
    return lo - pad, hi + pad


def toy_progress(data, generated: torch.Tensor, critic=None, note: str = "") -> torch.Tensor:
    """A GAN toy's progress picture (3, H, W): ``data`` (the train split of toy points) against
    ``generated`` points, titled with the modes captured and % high quality on a known mixture.
    On 1-D data ``critic(xs)`` -> (values, name) draws the discriminator's curve over the axis."""
    from genforge.data.toy import MIXTURES
    from genforge.metrics.modes import mode_metrics

    title = data.name + note
    real = data.images[:SHOWN_POINTS]
    spec = MIXTURES.get(data.name)
    if spec is not None:
        found = mode_metrics(generated, torch.tensor(spec.means), spec.std)
        title += f": {found['modes']:.0f}/{len(spec.means)} modes, {found['hq']:.1f}% HQ"
    curve = None
    if real.shape[1] == 1:
        limits = (-0.25, 1.25) if data.name == "duck-cow" else _span(real, 0.3)
        if critic is not None:
            xs = torch.linspace(*limits, 241, device=generated.device).unsqueeze(1)  # (241, 1)
            values, name = critic(xs)
            curve = (xs[:, 0].cpu().numpy(), values.cpu().numpy(), name)
    else:
        limits = _span(real, 0.25)
    return render_points(real, generated, title, curve, limits)


def _hue_by_angle(points: torch.Tensor) -> np.ndarray:
    """A colour per source point from its angle around the source mean (modes get distinct colours)."""
    centred = (points - points.mean(0)).cpu().numpy()
    return (np.arctan2(centred[:, 1], centred[:, 0]) + np.pi) / (2 * np.pi)


def translation_progress(a: torch.Tensor, b: torch.Tensor, fake_b: torch.Tensor, fake_a: torch.Tensor) -> torch.Tensor:
    """Two panels of a two-domain toy, A -> B over real B and B -> A over real A, as a (1, 3, H, W) image."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.5), dpi=80)
    for ax, title, real, source, fake in ((axes[0], "A -> B", b, a, fake_b), (axes[1], "B -> A", a, b, fake_a)):
        real, fake = real.cpu().numpy(), fake.cpu().numpy()
        ax.scatter(real[:, 0], real[:, 1], s=3, color="0.8")
        ax.scatter(fake[:, 0], fake[:, 1], s=3, c=_hue_by_angle(source), cmap="hsv", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    image = _figure_tensor(fig)
    plt.close(fig)
    return image.unsqueeze(0)


def plot_translations(data, a: torch.Tensor, b: torch.Tensor, model, path: str | Path) -> Path:
    """The original toy's scatter plots: data A, data B, A -> B and B -> A coloured by source mode,
    and both reconstructions (``model`` translates; ``a``, ``b`` in its network space)."""
    plt = pyplot()
    fake_b, recon_a = model.translate(a, "a2b")
    fake_a, recon_b = model.translate(b, "b2a")
    la, lb = data.labels.numpy(), data.labels_b.numpy()
    panels = [("data A", a, la, None), ("data B", b, lb, None), ("A -> B (colour: A mode)", fake_b, la, b),
              ("B -> A (colour: B mode)", fake_a, lb, a), ("A -> B -> A", recon_a, la, a), ("B -> A -> B", recon_b, lb, b)]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8), dpi=100)
    cmap = plt.get_cmap("tab10")
    for ax, (title, points, labels, backdrop) in zip(axes.flat, panels):
        if backdrop is not None:  # the real domain the points should land on, in grey behind
            backdrop = backdrop.cpu().numpy()
            ax.scatter(backdrop[:, 0], backdrop[:, 1], s=3, color="0.85")
        points = points.cpu().numpy()
        for k in np.unique(labels):
            mask = labels == k
            ax.scatter(points[mask, 0], points[mask, 1], s=3, color=cmap(int(k) % 10), label=str(k))
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")
    axes.flat[2].legend(markerscale=3, frameon=False, fontsize=7, title="source mode")
    return save_figure(fig, path)


# --- end-of-run pictures by registry ------------------------------------------------------
# Each entry draws some pictures of a trained model into RUN_DIR/plots and applies where the
# model's declared capabilities say (the model is in inference mode; ``ctx`` is a
# genforge.models.base.Context). Training's end calls write_report (via genforge.metrics.evaluate).

@dataclass(frozen=True)
class Report:
    name: str
    draw: Callable[[Any, Any], list]  # (model, ctx) -> the paths written (None: nothing to draw)
    applies: Callable[[Any], bool]  # on the model (its capabilities)
    help: str


REPORTS: dict[str, Report] = {}
LOG4 = math.log(4.0)  # at the optimum D = 1/2 everywhere and the value function is -log 4


def report(name: str, help: str, applies: Callable[[Any], bool] = lambda model: True):
    """Register ``draw(model, ctx) -> [paths]`` as end-of-run picture ``name``."""
    def wrap(draw: Callable[[Any, Any], list]):
        REPORTS[name] = Report(name, draw, applies, help)
        return draw
    return wrap


def write_report(model, ctx) -> list[Path]:
    """Every registered picture that applies to ``model``; returns the paths written."""
    written = [path for entry in REPORTS.values() if entry.applies(model) for path in entry.draw(model, ctx)]
    return [path for path in written if path is not None]


def _rows(ctx) -> list[dict]:
    return read_metrics(Path(ctx.run_dir) / "metrics.jsonl")


GIF_FRAMES = 100  # at most this many frames in a progress GIF (a long run's grids, evenly spaced)


def progress_frames(run_dir: str | Path, most: int = GIF_FRAMES) -> list[Path]:
    """The progress pictures the loop saved, in step order, then the final one: the GIFs' frames; at
    most ``most`` of them, evenly spaced from the first to the final one, so a long run's GIF stays small."""
    samples = Path(run_dir) / "samples"
    frames = [f for f in sorted(samples.glob("step-*.png")) + [samples / "final.png"] if f.is_file()]
    if len(frames) <= most:
        return frames
    return [frames[round(i * (len(frames) - 1) / (most - 1))] for i in range(most)]


@report("progress_gif", "the toy's progress pictures over training as an animated GIF",
        lambda model: model.capabilities.data == "points" and not model.capabilities.translator)
def _progress_gif(model, ctx) -> list:
    return [save_gif(progress_frames(ctx.run_dir), Path(ctx.run_dir) / "plots" / "progress.gif")]


@report("samples_gif", "an image run's fixed-noise grids over training (samples/step-*.png) as samples/progress.gif",
        lambda model: model.capabilities.data == "images")
def _samples_gif(model, ctx) -> list:
    return [save_gif(progress_frames(ctx.run_dir), Path(ctx.run_dir) / "samples" / "progress.gif")]


@report("value_function", "BCE games: the value function against -log 4, and D's mean outputs against 1/2")
def _value_function(model, ctx) -> list:
    rows, plots = _rows(ctx), Path(ctx.run_dir) / "plots"
    if not any("d/value" in row for row in rows):  # only the BCE games log it
        return []
    return [plot_curves(rows, ["d/value"], plots / "value.png", ylabel="V(D, G)",
                        title="value function E log D(x) + E log(1 - D(G(z)))", hline=(-LOG4, "-log 4 (the optimum)")),
            plot_curves(rows, ["d/d_real", "d/d_fake"], plots / "d_output.png", ylabel="mean D output",
                        title="D's mean output on real and fake", hline=(0.5, "1/2 (the optimum)"))]


@report("class_histogram", "the generated class histogram logged at the checkpoints, over training")
def _class_histogram(model, ctx) -> list:
    rows = _rows(ctx)
    shares = sorted({k for row in rows for k in row if k.startswith("eval/class_share_")},
                    key=lambda k: int(k.rsplit("_", 1)[1]))
    if not shares:
        return []
    last = [row for row in rows if shares[0] in row][-1]  # the last checkpoint's histogram
    warning = class_collapse([last.get(key, 0.0) for key in shares], last["step"])
    if warning:
        print(f"genforge: warning: {warning}", file=sys.stderr)
    return [plot_curves(rows, shares, Path(ctx.run_dir) / "plots" / "class_histogram.png", ylabel="share of samples",
                        title="generated class histogram over training (mode collapse)" + (f"\n{warning}" if warning else ""),
                        hline=(1.0 / len(shares), "uniform"))]


COLLAPSE_SHARE = 0.5  # one class above half of the samples is mode collapse (10 classes: 5x its share)


def class_collapse(shares: Sequence[float], step: int) -> str | None:
    """The one-line mode-collapse warning for a generated class histogram (shares per class, summing
    to 1) at ``step``: a class above half of the samples, or classes with none; None when neither."""
    top = max(range(len(shares)), key=lambda k: shares[k])
    vanished = [k for k, share in enumerate(shares) if share == 0]
    problems = []
    if shares[top] > COLLAPSE_SHARE:
        problems.append(f"class {top} takes {shares[top]:.0%} of the samples")
    if vanished:
        problems.append(f"class{'es' if len(vanished) > 1 else ''} {', '.join(map(str, vanished))} "
                        f"vanished (no sample)")
    if not problems:
        return None
    return f"mode collapse at step {step}: {' and '.join(problems)} (plots/class_histogram.png)"


@report("by_class", "a conditional generator's grid, one class a row", lambda model: model.capabilities.classes > 0)
def _by_class(model, ctx) -> list:
    grid = model.class_grid(10, torch.Generator().manual_seed(0))
    return [save_grid(grid, Path(ctx.run_dir) / "plots" / "by_class.png", nrow=10)]


@report("translation_curves", "a translator's learning curves (D, the GAN terms, both reconstructions)",
        lambda model: model.capabilities.translator)
def _translation_curves(model, ctx) -> list:
    return [plot_curves(_rows(ctx), ["d/loss", "g/gan_a2b", "g/gan_b2a", "g/recon_a", "g/recon_b"],
                        Path(ctx.run_dir) / "plots" / "curves.png",
                        title=f"DiscoGAN ({model.cfg.variant}): learning curves")]


@report("translations", "test translations: the toy's scatter plots, or source | translation | reconstruction grids",
        lambda model: model.capabilities.translator)
def _translations(model, ctx) -> list:
    from genforge.metrics.translation import prepared_domains

    plots = Path(ctx.run_dir) / "plots"
    a, b = prepared_domains(model, ctx.test_data, ctx.device)
    if model.capabilities.data == "points":
        return [plot_translations(ctx.test_data, a, b, model, plots / "translations.png")]
    return [save_grid(model.triplets(source, direction), plots / f"translations_{direction}.png", nrow=3)
            for direction, source in (("a2b", a[:16]), ("b2a", b[:16]))]


@report("vae", "a VAE's reconstructions, prior samples, latent map of the test split (and the manifold at latent 2), "
        "ELBO curves", lambda model: model.capabilities.encoder)
def _vae_pictures(model, ctx) -> list:
    plots, test = Path(ctx.run_dir) / "plots", ctx.test_data
    shape = model.image_shape
    per_row = min(4, len(test))
    rows = min(8, len(test) // per_row)
    x = model.prepare(test.images[:rows * per_row].to(ctx.device))
    recon = model.decode(model.encode(x)[0]).cpu()
    # Originals left, reconstructions right: up to 8 rows of (4 originals | 4 reconstructions).
    pairs = torch.cat([model.to_unit(x).cpu().view(rows, per_row, *shape), recon.view(rows, per_row, *shape)], dim=1)
    paths = [save_grid(pairs.flatten(0, 1), plots / "reconstructions.png", nrow=2 * per_row, scale=3),
             save_grid(model.sample(64, torch.Generator().manual_seed(0)), plots / "prior_samples.png", nrow=8, scale=3),
             _latent_walks(model, x, plots / "latent_walks.png")]
    if test.classes:  # a map coloured by class; an image folder has no classes
        paths.append(_latent_map(model, test, ctx.device, plots / "latent_scatter.png"))
    if model.cfg.latent_dim == 2:  # the classic manifold: decode a grid of Gaussian quantiles
        from scipy.stats import norm

        ticks = torch.tensor(norm.ppf(np.linspace(0.05, 0.95, 20)), dtype=torch.float32)
        grid_z = torch.stack(torch.meshgrid(ticks, ticks.flip(0), indexing="xy"), dim=-1).view(-1, 2)
        paths.append(save_grid(model.decode(grid_z.to(ctx.device)).cpu(), plots / "manifold.png", nrow=20, scale=2))
    paths.append(plot_curves(_rows(ctx), ["vae/loss", "vae/recon", "vae/kl"], plots / "elbo_curves.png",
                             title="negative ELBO = reconstruction + KL", ylabel="nats per image"))
    return paths


def _latent_walks(model, x: torch.Tensor, path: Path, steps: int = 8) -> Path | None:
    """Up to 4 walks between the latent means of test images, one a row: image a, the ``steps``
    decoded points from a's code to b's (fusions), image b. None with fewer than two images."""
    rows = [torch.cat([model.to_unit(x[2 * r:2 * r + 1]), model.walk(x[2 * r], x[2 * r + 1], steps),
                       model.to_unit(x[2 * r + 1:2 * r + 2])]).cpu() for r in range(min(4, x.shape[0] // 2))]
    return save_grid(torch.cat(rows), path, nrow=steps + 2, scale=3) if rows else None


def _latent_map(model, test, device, path: Path) -> Path:
    """The test split's codes mu in 2-D (PCA beyond 2 dimensions), coloured by class."""
    mu = model.encode(model.prepare(test.images.to(device)))[0].cpu().numpy()
    if mu.shape[1] > 2:  # PCA of mu to 2-D
        centred = mu - mu.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        points, how = centred @ vt[:2].T, "PCA of mu"
    else:
        points, how = mu, "mu"
    return plot_scatter(points, test.labels.numpy(), path, title=f"test digits in latent space ({how})",
                        class_names=test.classes)
