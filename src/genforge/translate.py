"""``genforge translate``: map images of one domain to the other with a trained DiscoGAN run.

Inputs are image files or folders of them (PNG, JPEG, anything Pillow reads). Each is
converted to the model's channels (transparency flattened onto white, palettes expanded),
padded to a square with its border colour and resized to the model's size. Files that are
not usable images are skipped with a reason; nothing else is lost. Output: one PNG per
translation and ``grid.png`` with rows source | translation | reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from genforge import viz
from genforge.errors import GenforgeError

MIN_SIDE = 4  # smaller images hold no picture to translate


@dataclass
class TranslateResult:
    out_dir: Path
    written: list[Path] = field(default_factory=list)  # one translation per input, then the grid
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    grid: Path | None = None


def collect_files(inputs: list[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named, plus the files inside named folders (sorted, not recursive); problems as (path, why)."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not inside:
                problems.append((str(path), "folder holds no files"))
            files.extend(inside)
        elif path.is_file():
            files.append(path)
        else:
            problems.append((str(path), "no such file or folder"))
    return files, problems


def load_image(path: Path, channels: int, size: int, invert: bool = False) -> torch.Tensor:
    """One file -> uint8 (C, size, size); raises ValueError with a readable reason. Read through the
    image folders' decoder, with its pixel limit (a decompression bomb is refused from its header)."""
    from genforge.data.folder import BadImage, read_image

    try:
        image = read_image(path)
    except BadImage as e:
        raise ValueError(str(e)) from None
    if min(image.size) < MIN_SIDE:
        raise ValueError(f"too small ({image.width}x{image.height}); need at least {MIN_SIDE}x{MIN_SIDE} pixels")
    if image.mode in ("P", "PA", "LA", "RGBA") or "transparency" in image.info:
        rgba = image.convert("RGBA")  # palettes and transparency: flatten onto white
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if invert:
        image = ImageOps.invert(image)
    side = max(image.size)  # pad to a square with the corner colour, keep the aspect ratio
    square = Image.new(image.mode, (side, side), image.getpixel((0, 0)))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    array = np.asarray(square.resize((size, size), Image.LANCZOS), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1)


def _unique_name(path: Path, used: set[str], suffix: str) -> str:
    name = f"{path.stem}_{suffix}.png"
    count = 1
    while name in used:
        count += 1
        name = f"{path.stem}-{count}_{suffix}.png"
    used.add(name)
    return name


def translate_images(model, images: torch.Tensor, direction: str, out_dir: Path, names: list[str]) -> TranslateResult:
    """Translate uint8 images (N, C, H, W) and write each translation plus ``grid.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = TranslateResult(out_dir)
    device = next(model.parameters()).device
    triplets = []
    for start in range(0, len(images), 64):
        source = model.prepare(images[start:start + 64].to(device))
        triplets.append(model.triplets(source, direction))
    rows = torch.cat(triplets)  # (3N, C, H, W): source, translation, reconstruction per input
    for index, name in enumerate(names):
        viz.to_pil(rows[3 * index + 1]).save(out_dir / name)  # the translation alone, at the model's size
        result.written.append(out_dir / name)
    result.grid = viz.save_grid(rows, out_dir / "grid.png", nrow=3, scale=4)
    result.written.append(result.grid)
    return result


def translate_files(loaded, inputs: list[str | Path], direction: str, out_dir: str | Path,
                    invert: bool = False) -> TranslateResult:
    """Translate image files/folders with a loaded DiscoGAN run (genforge.api.Loaded); unusable files
    are skipped and listed."""
    _check_direction(direction)
    model = _translator(loaded)
    channels, size = model.image_shape[0], model.image_shape[-1]
    files, skipped = collect_files(inputs)
    images, names, used = [], [], set()
    for path in files:
        try:
            images.append(load_image(path, channels, size, invert))
        except ValueError as e:
            skipped.append((str(path), str(e)))
            continue
        names.append(_unique_name(path, used, direction))
    if not images:
        listed = "; ".join(f"{p}: {why}" for p, why in skipped) or "no inputs"
        raise GenforgeError(f"no image to translate ({listed})")
    result = translate_images(model, torch.stack(images), direction, Path(out_dir), names)
    result.skipped = skipped
    return result


def translate_test(loaded, n: int, direction: str, out_dir: str | Path, seed: int = 0,
                   data_root: str | None = None) -> TranslateResult:
    """Translate ``n`` test images of the source domain (chosen with ``seed``) of the run's dataset."""
    from genforge.data.datasets import load_data

    _check_direction(direction)
    if n <= 0:
        raise GenforgeError(f"--n must be positive, not {n}")
    model = _translator(loaded)
    cfg = loaded.cfg
    # load_data: named sets and two image folders alike (a folder's test split is its training images)
    data = load_data(cfg.data, "test", cfg.data.root or data_root).resized(model.image_shape[-1])
    pool = data.images if direction == "a2b" else data.images_b
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]
    names = [f"test-{int(i):05d}_{direction}.png" for i in pick]
    return translate_images(model, pool[pick], direction, Path(out_dir), names)


def _translator(loaded):
    """The model of a loaded run, once it is known to translate images."""
    if not loaded.capabilities.translator:
        raise GenforgeError(f"{loaded.run_dir}: a '{loaded.cfg.family}' run; translate needs a DiscoGAN run "
                            "(e.g. fashion-discogan)")
    if loaded.capabilities.data != "images":
        raise GenforgeError(f"{loaded.run_dir}: this run translates 2-D points ({loaded.cfg.data.dataset}), "
                            "not images")
    return loaded.model


def _check_direction(direction: str) -> None:
    if direction not in ("a2b", "b2a"):
        raise GenforgeError(f"unknown direction '{direction}'; use a2b or b2a")


def compare_runs(runs: list, out: str | Path, n: int = 8, seed: int = 0, data_root: str | None = None) -> Path:
    """DiscoGAN runs (loaded, genforge.api.Loaded) side by side, one column each, titled with the run's
    variant: on 2-D toys, A -> B coloured by source mode over the real B, and A -> B -> A over the real
    A; on images, the rows source | A -> B | A -> B -> A of the same ``n`` test images of domain A.
    All runs must share a dataset, so the columns show the same inputs."""
    from genforge.data.datasets import load_data

    if len(runs) < 1:
        raise GenforgeError("name at least one DiscoGAN run directory to compare")
    loaded = []
    for run in runs:
        if not run.capabilities.translator:
            raise GenforgeError(f"{run.run_dir}: a '{run.cfg.family}' run; compare shows DiscoGAN runs")
        loaded.append((Path(run.run_dir), run.cfg, run.model, run.step))
    datasets = {cfg.data.dataset for _, cfg, _, _ in loaded}
    if len(datasets) != 1:
        raise GenforgeError(f"the runs use different datasets ({', '.join(sorted(datasets))}); compare runs of one")
    first_cfg = loaded[0][1]
    data = load_data(first_cfg.data, "test", first_cfg.data.root or data_root)
    plt = viz.pyplot()
    points = loaded[0][2].capabilities.data == "points"
    rows = 2 if points else 1
    size = (4 * len(loaded), 8) if points else (2.4 * len(loaded), 0.8 * min(n, len(data.images)) + 0.8)
    fig, axes = plt.subplots(rows, len(loaded), figsize=size, dpi=100, squeeze=False)
    pick = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(seed))[:n]
    cmap = plt.get_cmap("tab10")
    for column, (run_dir, cfg, model, step) in enumerate(loaded):
        title = f"{getattr(cfg.model, 'variant', run_dir.name)} (step {step})"
        with torch.no_grad():
            if points:
                a, b = model.prepare(data.images), model.prepare(data.images_b)
                fake_b, recon_a = model.translate(a, "a2b")
                labels = data.labels.numpy()
                for ax, shown, backdrop, what in ((axes[0, column], fake_b, b, "A -> B"),
                                                  (axes[1, column], recon_a, a, "A -> B -> A")):
                    back = backdrop.numpy()
                    ax.scatter(back[:, 0], back[:, 1], s=3, color="0.85")
                    shown = shown.numpy()
                    for k in np.unique(labels):
                        ax.scatter(*shown[labels == k].T, s=3, color=cmap(int(k) % 10))
                    ax.set_title(f"{title}: {what}", fontsize=9)
                    ax.set_aspect("equal", adjustable="datalim")
            else:
                grid = viz.make_grid(model.triplets(model.prepare(data.images[pick]), "a2b"), nrow=3)
                axes[0, column].imshow(grid.permute(1, 2, 0).numpy().squeeze(), cmap="gray", vmin=0, vmax=1)
                axes[0, column].set_title(f"{title}\nA | A -> B | A -> B -> A", fontsize=9)
                axes[0, column].axis("off")
    fig.tight_layout()
    return viz.save_figure(fig, out)
