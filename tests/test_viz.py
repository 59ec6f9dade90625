"""Pictures: grids (exact pixel layout), PNG files, metrics reading and plots."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from genforge import viz


def test_make_grid_layout_and_padding():
    images = torch.stack([torch.full((1, 3, 5), float(i) / 10) for i in range(5)])  # (5, 1, 3, 5)
    grid = viz.make_grid(images, padding=2, pad_value=1.0)
    # 5 images -> 3 per row (ceil sqrt), 2 rows
    assert grid.shape == (1, 2 * (3 + 2) + 2, 3 * (5 + 2) + 2)
    for index in range(5):
        r, c = divmod(index, 3)
        top, left = 2 + r * 5, 2 + c * 7
        assert torch.all(grid[:, top:top + 3, left:left + 5] == index / 10)
    assert torch.all(grid[:, :2] == 1.0) and torch.all(grid[:, :, :2] == 1.0)
    assert torch.all(grid[:, 7:10, 16:21] == 1.0)  # the empty sixth cell is padding colour


def test_make_grid_nrow():
    grid = viz.make_grid(torch.zeros(6, 3, 4, 4), nrow=6, padding=1, pad_value=0.5)
    assert grid.shape == (3, 4 + 2, 6 * 5 + 1)


def test_to_pil_grey_rgb_and_scale():
    grey = viz.to_pil(torch.tensor([[[0.0, 1.0], [0.5, 2.0]]]), scale=3)
    assert grey.mode == "L" and grey.size == (6, 6)
    assert np.array(grey)[0].tolist() == [0, 0, 0, 255, 255, 255]
    assert np.array(grey)[3, 0] == 128 and np.array(grey)[3, 3] == 255  # 2.0 clamps to white
    rgb = viz.to_pil(torch.zeros(3, 4, 5))
    assert rgb.mode == "RGB" and rgb.size == (5, 4)


def test_save_grid_writes_a_png_of_the_expected_size(tmp_path):
    path = viz.save_grid(torch.rand(16, 1, 28, 28), tmp_path / "sub" / "g.png")
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (244, 244)  # (4 * 30 + 2) * 2
    colour = viz.save_grid(torch.rand(4, 3, 8, 8), tmp_path / "c.png", scale=1)
    assert Image.open(colour).mode == "RGB" and Image.open(colour).size == (22, 22)
    assert np.array(Image.open(colour))[0, 0].tolist() == [0, 0, 0]  # colour grids pad with black


def test_read_metrics_skips_torn_and_stepless_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a/loss": 2.0}\n[1, 2]\n{"no_step": 1}\n{"step": 2, "a/loss": 1.0}\n{"step": 3, "a/lo')
    assert viz.read_metrics(path) == [{"step": 1, "a/loss": 2.0}, {"step": 2, "a/loss": 1.0}]
    assert viz.read_metrics(tmp_path / "missing.jsonl") == []


def test_plot_curves(tmp_path):
    rows = [{"step": s, "g/loss": 1.0 / s, "d/loss": 0.5} for s in range(1, 6)]
    assert viz.plot_curves(rows, ["x/loss"], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    path = viz.plot_curves(rows, ["g/loss", "d/loss", "x/loss"], tmp_path / "p" / "c.png", title="t",
                           hline=(0.7, "ref"))
    assert path.is_file() and Image.open(path).format == "PNG"


def test_plot_scatter(tmp_path):
    rng = np.random.default_rng(0)
    path = viz.plot_scatter(rng.normal(size=(50, 2)), rng.integers(0, 3, 50), tmp_path / "s.png",
                            class_names=["a", "b", "c"])
    assert path.is_file() and Image.open(path).size[0] > 100


def _applying(model) -> set[str]:
    return {name for name, entry in viz.REPORTS.items() if entry.applies(model)}


def test_end_of_run_pictures_by_capability():
    from genforge.config import load_recipe
    from genforge.models import build_model

    toy = build_model(load_recipe("ring-8", ["model.hidden=8"]), (2,), 8)
    cgan = build_model(load_recipe("mnist-cgan", ["model.width=4"]), (1, 28, 28), 10)
    vae = build_model(load_recipe("mnist-vae", ["model.hidden=8"]), (1, 28, 28), 10)
    disco = build_model(load_recipe("gmm-discogan", ["model.hidden=8"]), (2,), 5)
    always = {"value_function", "class_histogram"}  # drawn from the metrics rows where the run logged them
    assert _applying(toy) == always | {"progress_gif"}
    assert _applying(cgan) == always | {"by_class", "samples_gif"}  # every image run animates its grids
    assert _applying(vae) == always | {"vae", "samples_gif"}
    assert _applying(disco) == always | {"translation_curves", "translations"}


def test_toy_report_draws_the_value_function_and_the_progress_gif(tmp_path):
    import json

    from genforge.config import load_recipe
    from genforge.models import build_model
    from genforge.models.base import Context

    model = build_model(load_recipe("ring-8", ["model.hidden=8"]), (2,), 8)
    rows = [{"step": s, "d/value": -1.2, "d/d_real": 0.6, "d/d_fake": 0.4} for s in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for name in ("step-0000001", "final"):
        viz.save_grid(torch.rand(4, 3, 8, 8), tmp_path / "samples" / f"{name}.png")
    ctx = Context(tmp_path, None, None, torch.device("cpu"), 1, progress=False)
    with model.inference():
        paths = viz.write_report(model, ctx)
    assert {p.name for p in paths} == {"progress.gif", "value.png", "d_output.png"}
    assert Image.open(tmp_path / "plots" / "progress.gif").n_frames == 2
