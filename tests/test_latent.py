"""Latent tools: saving noise (never pickled), lerp/slerp, arithmetic, and their commands."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genforge import latent
from genforge.cli import main
from genforge.errors import GenforgeError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("suffix", [".safetensors", ".npy"])
def test_save_and_load_round_trip(tmp_path, suffix):
    z = torch.randn(3, 5)
    path = latent.save_latents(z, tmp_path / f"z{suffix}")
    assert torch.equal(latent.load_latents(path), z)


@pytest.mark.parametrize("values, message", [(np.zeros((0, 100), "f4"), "holds no latent vectors"),
                                             (np.zeros((3, 0), "f4"), "holds no latent vectors"),
                                             (np.full((2, 4), np.nan, "f4"), "2 of its 2 latent vectors hold NaN"),
                                             (np.array([[0, 1], [np.inf, 0]], "f4"), "1 of its 2 latent vectors")])
def test_an_empty_or_non_finite_latent_file_is_refused(tmp_path, values, message):
    # an empty file was an IndexError in interpolate; NaN codes made a blank picture with exit 0
    np.save(tmp_path / "z.npy", values)
    with pytest.raises(GenforgeError, match=message):
        latent.load_latents(tmp_path / "z.npy")


def test_refuses_pickles_and_other_files(tmp_path):
    with pytest.raises(GenforgeError, match=".safetensors or .npy"):
        latent.save_latents(torch.zeros(1, 2), tmp_path / "z.pt")
    with pytest.raises(GenforgeError, match=".safetensors or .npy"):
        latent.load_latents(tmp_path / "z.pt")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(GenforgeError, match="not a latent-vector file"):
        latent.load_latents(tmp_path / "obj.npy")


def test_lerp_and_slerp():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    t = torch.linspace(0, 1, 5)
    line = latent.lerp(a, b, t)
    assert torch.allclose(line[0], a) and torch.allclose(line[-1], b) and torch.allclose(line[2], (a + b) / 2)
    arc = latent.slerp(a, b, t)
    assert torch.allclose(arc[0], a, atol=1e-6) and torch.allclose(arc[-1], b, atol=1e-6)
    # halfway along the quarter circle, norm halfway between 1 and 2
    assert torch.allclose(arc[2], 1.5 * torch.tensor([2 ** -0.5, 2 ** -0.5]), atol=1e-6)
    assert torch.allclose(latent.slerp(a, 3 * a, t), latent.lerp(a, 3 * a, t))  # parallel: lerp


def test_arithmetic_averages_each_concept():
    a, b, c = torch.tensor([[1.0, 1.0], [3.0, 1.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 5.0]])
    assert latent.arithmetic(a, b, c).tolist() == [[1.0, 6.0]]
    with pytest.raises(GenforgeError, match="widths differ"):
        latent.arithmetic(a, torch.zeros(1, 3), c)


def test_latent_commands_on_a_gan_run(gan_run, tmp_path, capsys):
    z = tmp_path / "z.safetensors"
    assert main(["sample", str(gan_run), "--n", "3", "--out", str(tmp_path / "s.png"), "--save-z", str(z),
                 "--device", "cpu"]) == 0
    assert latent.load_latents(z).shape == (3, 16)
    strip = tmp_path / "strip.png"
    assert main(["interpolate", str(gan_run), "--steps", "4", "--rows", "2", "--slerp", "--out", str(strip),
                 "--device", "cpu"]) == 0
    from PIL import Image

    assert Image.open(strip).size == (2 * (4 * 30 + 2), 2 * (2 * 30 + 2))  # 4 x 2 tiles of 28 px, scale 2
    assert main(["interpolate", str(gan_run), "--from", str(z), "--to", str(z), "--out", str(strip),
                 "--device", "cpu"]) == 0
    assert main(["arithmetic", str(gan_run), "--a", str(z), "--b", str(z), "--c", str(z),
                 "--out", str(tmp_path / "abc.png"), "--save-z", str(tmp_path / "r.npy"), "--device", "cpu"]) == 0
    assert torch.allclose(latent.load_latents(tmp_path / "r.npy"), latent.load_latents(z).mean(0, keepdim=True))
    assert main(["sample", str(gan_run), "--class", "3", "--out", str(tmp_path / "c.png"), "--device", "cpu"]) == 2
    assert "conditional" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 7), dtype=np.float32))
    assert main(["arithmetic", str(gan_run), "--a", str(bad), "--b", str(bad), "--c", str(bad),
                 "--out", str(tmp_path / "x.png"), "--device", "cpu"]) == 2
    assert "7 entries" in capsys.readouterr().err
