"""Bad input gives one clear GenforgeError line, never a traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from genforge.cli import main
from genforge.errors import GenforgeError
from genforge.metrics.evaluate import evaluate_loaded
from genforge.metrics.extractor import load_extractor, weights_path


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genforge: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_run_dir_without_checkpoints(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"family": "gan", "recipe": "x"}))
    err = one_line_error(capsys, ["eval", str(tmp_path), "--n", "10"])
    assert "no complete checkpoint" in err
    err = one_line_error(capsys, ["eval", str(tmp_path / "nothing"), "--n", "10"])
    assert "no such run folder" in err


def test_checkpoint_of_another_family_or_an_unknown_one(tiny_gan_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_gan_run, run, symlinks=True)
    config = json.loads((run / "config.json").read_text())
    config["family"], config["model"] = "vae", {}
    (run / "config.json").write_text(json.dumps(config))
    err = one_line_error(capsys, ["eval", str(run), "--n", "10"])
    assert "checkpoint of family 'gan'" in err and "'vae'" in err
    config["family"] = "diffusion"
    (run / "config.json").write_text(json.dumps(config))
    err = one_line_error(capsys, ["eval", str(run), "--n", "10"])
    assert "unknown model family 'diffusion'" in err


def test_tampered_extractor_file(tmp_path):
    tampered = tmp_path / "mnist.safetensors"
    data = bytearray(weights_path("mnist").read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(GenforgeError) as info:
        load_extractor("mnist", tampered)
    message = str(info.value)
    assert message.startswith(f"tampered or stale extractor file {tampered}: sha256 ")
    assert "regenerate with `genforge evaluator train mnist`" in message and "\n" not in message


def test_bad_arguments(tiny_gan_run, capsys):
    assert "one of them" in one_line_error(capsys, ["eval"])
    assert "--n must be 2 to" in one_line_error(capsys, ["eval", str(tiny_gan_run), "--n", "1"])
    assert "no feature extractor for dataset 'ring-8'" in one_line_error(capsys, ["eval", "--real", "ring-8"])
    assert "image folder 'pokemon' has neither" in one_line_error(capsys, ["eval", "--real", "pokemon"])
    from genforge import api

    loaded = api.load(tiny_gan_run)
    with pytest.raises(GenforgeError, match="at least 2"):
        evaluate_loaded(loaded.cfg, loaded.model, loaded.step, None, n=0)
