"""`genforge fuse RUN a.png b.png`: a VAE encodes two image files and decodes the walk between
their codes into one strip; bad requests are one line each."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from genforge import api
from genforge.cli import main
from genforge.errors import GenforgeError

from .models.test_conv_vae import train_tiny_conv_vae


@pytest.fixture(scope="module")
def fuse_run(tmp_path_factory):
    return train_tiny_conv_vae(tmp_path_factory.mktemp("fuse"), 12)


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genforge: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_fuse_writes_a_strip_of_both_images_and_the_steps_between(fuse_run, tmp_path, capsys):
    run, folder = fuse_run
    out = tmp_path / "strip.png"
    assert main(["fuse", str(run), str(folder / "1.png"), str(folder / "2.png"), "--steps", "5", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert f"-> {out}" in capsys.readouterr().err
    strip = Image.open(out)
    assert strip.mode == "RGB" and strip.width > 6 * strip.height  # 7 tiles in one row
    assert strip.height == 3 * (16 + 2 * 2)  # one 16 px row with its padding, at scale 3


def test_the_walk_starts_and_ends_at_the_reconstructions(fuse_run):
    run, folder = fuse_run
    loaded = api.load(run, "cpu")
    a, b = (api.decode_image_bytes((folder / name).read_bytes(), loaded, name) for name in ("3.png", "4.png"))
    strip = api.fuse(loaded, a, b, 4)
    assert strip.shape == (6, 3, 16, 16)
    assert torch.equal(strip[0], a[0]) and torch.equal(strip[-1], b[0])
    recon = api.reconstruct(loaded, torch.cat([a, b]))
    assert torch.allclose(strip[1], recon[0], atol=1e-5) and torch.allclose(strip[4], recon[1], atol=1e-5)


def test_bad_fusions_are_one_line_errors(fuse_run, gan_run, tmp_path, capsys):
    run, folder = fuse_run
    a, b = str(folder / "1.png"), str(folder / "2.png")
    assert "--steps must be 2 to 100,000, not 1" in _error(capsys, ["fuse", str(run), a, b, "--steps", "1"])
    assert "--steps must be 2 to 100,000, not 1000000" in _error(capsys, ["fuse", str(run), a, b, "--steps", "1000000"])
    assert "cannot read it" in _error(capsys, ["fuse", str(run), a, str(tmp_path / "missing.png")])
    (tmp_path / "notes.png").write_text("not an image")
    assert "notes.png" in _error(capsys, ["fuse", str(run), a, str(tmp_path / "notes.png")])
    assert "fusion needs a VAE run" in _error(capsys, ["fuse", str(gan_run), a, b])
    loaded = api.load(run, "cpu")
    with pytest.raises(GenforgeError, match="shape"):
        api.fuse(loaded, torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 16, 16))


def test_an_upload_is_composited_on_the_runs_background(fuse_run, tmp_path):
    run, _ = fuse_run
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(tmp_path / "clear.png")  # fully transparent
    loaded = api.load(run, "cpu")
    data = (tmp_path / "clear.png").read_bytes()
    assert float(api.decode_image_bytes(data, loaded).max()) == 0.0  # pokemon-vae: on black
    loaded.cfg.data.background = "white"
    assert float(api.decode_image_bytes(data, loaded).min()) == 1.0


def test_a_toy_run_is_refused_for_what_it_is_before_its_images_are_read(tmp_path, capsys):
    toy = tmp_path / "ring"
    assert main(["train", "ring-8", "model.hidden=16", "train.device=cpu", "train.threads=1", "--steps", "2",
                 "--run-dir", str(toy), "--no-progress"]) == 0
    err = _error(capsys, ["fuse", str(toy), str(tmp_path / "missing-a.png"), str(tmp_path / "missing-b.png")])
    assert "fusion needs a VAE run" in err and "ring-8" in err and "image" not in err.split("needs")[0]
