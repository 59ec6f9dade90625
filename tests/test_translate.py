"""``genforge translate``: images in, translations and a grid out; bad inputs skipped and named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genforge.checkpoint import Checkpoint, save_checkpoint
from genforge.cli import main
from genforge.config import load_recipe
from genforge.errors import GenforgeError
from genforge.models import build_model
from genforge.api import translate_files
from genforge.translate import load_image

from .conftest import SHARED_DATASETS


@pytest.fixture(scope="module")
def disco_run(tmp_path_factory):
    """An untrained width-4 fashion-discogan run: config.json and one checkpoint."""
    run_dir = tmp_path_factory.mktemp("disco-run")
    cfg = load_recipe("fashion-discogan", ["model.width=4", f"data.root={SHARED_DATASETS}"])
    torch.manual_seed(0)
    model = build_model(cfg, (1, 32, 32), 10)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    save_checkpoint(run_dir, Checkpoint(step=0, model=model.state_dict(),
                                        extra={"config": cfg.to_dict(), "image_shape": [1, 32, 32], "num_classes": 10}))
    return run_dir


def _inputs(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8), "L").save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8), "RGB").save(folder / "photo.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8), "RGB").convert("P").save(folder / "palette.png")
    Image.new("L", (1, 1)).save(folder / "tiny.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    return folder


def test_load_image_converts_modes_and_sizes(tmp_path):
    folder = _inputs(tmp_path / "in")
    for name in ("grey.png", "photo.jpg", "alpha.png", "palette.png"):
        image = load_image(folder / name, 1, 32)
        assert image.shape == (1, 32, 32) and image.dtype == torch.uint8
    assert load_image(folder / "photo.jpg", 3, 32).shape == (3, 32, 32)
    for name, why in (("tiny.png", "too small"), ("notes.txt", "not an image"), ("broken.png", "corrupt")):
        with pytest.raises(ValueError, match=why):
            load_image(folder / name, 1, 32)


def test_translate_files_skips_bad_inputs_and_keeps_the_rest(disco_run, tmp_path):
    folder = _inputs(tmp_path / "in")
    (tmp_path / "empty").mkdir()
    result = translate_files(disco_run, [folder, tmp_path / "empty", tmp_path / "missing.png"], "a2b", tmp_path / "out")
    written = sorted(p.name for p in result.written)
    assert written == ["alpha_a2b.png", "grey_a2b.png", "grid.png", "palette_a2b.png", "photo_a2b.png"]
    skipped = {path.rsplit("/", 1)[-1]: why for path, why in result.skipped}
    assert set(skipped) == {"tiny.png", "notes.txt", "broken.png", "empty", "missing.png"}
    grid = Image.open(result.grid)
    assert grid.width < grid.height  # 4 rows of source | translation | reconstruction
    assert Image.open(tmp_path / "out" / "grey_a2b.png").size == (32, 32)


def test_translate_with_nothing_usable_is_a_clear_error(disco_run, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(GenforgeError, match="no image to translate.*notes.txt"):
        translate_files(disco_run, [tmp_path / "notes.txt"], "b2a", tmp_path / "out")


def test_translate_cli(disco_run, tmp_path, capsys):
    folder = _inputs(tmp_path / "in")
    assert main(["translate", str(disco_run), str(folder), "--direction", "b2a", "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "4 images translated b2a, 3 skipped" in err and "skipped" in err and "tiny.png" in err
    assert main(["translate", str(disco_run), "--out", str(tmp_path / "o")]) == 2  # no inputs, no --from-test
    assert "--from-test" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_DATASETS / "fashion-mnist").is_dir(), reason="Fashion-MNIST not in ../shared/datasets")
def test_translate_from_test(disco_run, tmp_path, capsys):
    assert main(["translate", str(disco_run), "--from-test", "--n", "5", "--out", str(tmp_path / "t"),
                 "--device", "cpu"]) == 0
    assert len(list((tmp_path / "t").glob("test-*_a2b.png"))) == 5 and (tmp_path / "t" / "grid.png").is_file()


def _toy_run(path, variant):
    from genforge.config import load_recipe
    from genforge.train import train

    cfg = load_recipe("gmm-discogan-ring", ["model.hidden=8", "train.steps=2", "train.batch_size=16", "train.threads=1",
                                            "train.device=cpu", "train.sample_every=1000", "train.checkpoint_every=1000",
                                            f"model.variant={variant}"])
    train(cfg, path, progress=False)
    return path


def test_compare_puts_variants_side_by_side(tmp_path, capsys):
    from PIL import Image

    from genforge.cli import main

    runs = [str(_toy_run(tmp_path / v, v)) for v in ("gan", "recongan", "discogan")]
    assert main(["compare", *runs, "--out", str(tmp_path / "cmp.png")]) == 0
    with Image.open(tmp_path / "cmp.png") as image:
        assert image.size == (1200, 800)  # three columns (4 in wide) of two rows, at 100 dpi
    assert "3 runs side by side" in capsys.readouterr().err


def test_compare_refuses_other_families_datasets_and_bad_counts(tmp_path, capsys, gan_run):
    from genforge.cli import main

    toy = str(_toy_run(tmp_path / "toy", "discogan"))
    assert main(["compare", toy, str(gan_run), "--out", str(tmp_path / "x.png")]) == 2
    assert "compare shows DiscoGAN runs" in capsys.readouterr().err
    assert main(["compare", toy, "--n", "0"]) == 2
    assert "--n must be positive" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def huge_png_header(path, width: int = 10_000, height: int = 9_000) -> None:
    """A PNG whose header claims width x height pixels (a decompression bomb is judged from it)."""
    import io as _io
    import struct
    import zlib

    from PIL import Image as _Image

    buffer = _io.BytesIO()
    _Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))


def test_an_81_megapixel_input_is_skipped_from_its_header(tmp_path):
    huge_png_header(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match="over the limit"):
        load_image(tmp_path / "bomb.png", 1, 32)
