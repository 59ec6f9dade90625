"""``genforge export``: ONNX and TorchScript graphs that give genforge's own outputs, model folders
that load with plain safetensors and with genforge.load, a card naming only measured metrics, and
one-line refusals of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import markdown
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import genforge
from genforge import api
from genforge.api import export
from genforge.checkpoint import Checkpoint, save_checkpoint
from genforge.cli import main
from genforge.config import load_recipe
from genforge.errors import GenforgeError
from genforge.export import MARKER, OPSET
from genforge.models import build_model

from .conftest import _COMMON, SHARED_DATASETS, tiny_config

BATCHES = (1, 7)
TOLERANCE = 1e-4
FAMILIES = ("gan", "cgan", "vae", "disco_points", "disco_images")


# --- runs of every family, and their exports ------------------------------------------------------

@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cgan-run")
    api.train_run(tiny_config("mnist-dcgan", "model.conditional=concat"), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def disco_points_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("disco-points-run")
    cfg = load_recipe("gmm-discogan", [*_COMMON, "model.hidden=16", "model.g_steps=1"])
    api.train_run(cfg, run_dir, progress=False)
    return run_dir


def _untrained_run(run_dir: Path, recipe: str, overrides: list[str], shape: tuple[int, ...]) -> Path:
    """A run folder of an untrained model (config.json and one checkpoint at step 3), without training."""
    cfg = load_recipe(recipe, overrides)
    torch.manual_seed(0)
    model = build_model(cfg, shape, 10)
    for layer in model.modules():  # batch-norm statistics away from (0, 1), so that eval mode matters
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.2, 0.2)
            layer.running_var.uniform_(0.5, 1.5)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    save_checkpoint(run_dir, Checkpoint(step=3, model=model.state_dict(),
                                        extra={"config": cfg.to_dict(), "image_shape": list(shape), "num_classes": 10}))
    return run_dir


@pytest.fixture(scope="module")
def disco_images_run(tmp_path_factory) -> Path:
    """An untrained width-4 fashion-discogan run: conv translators on images."""
    return _untrained_run(tmp_path_factory.mktemp("disco-images-run"), "fashion-discogan",
                          ["model.width=4", f"data.root={SHARED_DATASETS}"], (1, 32, 32))


@pytest.fixture
def family_run(request) -> Path:
    """The run of the family named by the test's ``family`` parameter."""
    return request.getfixturevalue(f"{request.node.callspec.params['family']}_run")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """export(run, format) once per run and format in this module: the ExportResult."""
    made: dict[tuple[str, str], object] = {}

    def get(run_dir: Path, format: str):
        key = (str(run_dir), format)
        if key not in made:
            made[key] = export(run_dir, format, tmp_path_factory.mktemp("export") / format)
        return made[key]

    return get


# --- inputs and genforge's own outputs for them --------------------------------------------------

def _inputs(loaded, spec: dict, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Valid inputs of a graph (by its config.json description) for ``n`` samples."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    for port in spec["inputs"]:
        shape = [n, *port["shape"][1:]]
        if port["name"] == "noise":
            inputs["noise"] = api.noise(loaded, n, seed)[:, :shape[1]].contiguous()
        elif port["dtype"] == "int64":
            inputs[port["name"]] = torch.randint(loaded.capabilities.classes, shape, generator=generator)
        elif loaded.capabilities.data == "points":
            inputs[port["name"]] = torch.randn(shape, generator=generator)
        else:
            inputs[port["name"]] = torch.rand(shape, generator=generator)
    return inputs


def _genforge_output(loaded, graph: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """What genforge.api gives for the same inputs (the reference every runtime must match)."""
    if graph in ("a2b", "b2a"):
        return api.translate(loaded, inputs["source"], graph)[0]
    if graph == "encoder":
        return api.encode(loaded, inputs["images"])
    noise = inputs["noise"]
    if "label" in inputs:
        noise = torch.cat([noise, torch.nn.functional.one_hot(inputs["label"], loaded.capabilities.classes).float()], 1)
    return api.generate(loaded, noise)


def _graphs(result) -> dict[str, dict]:
    return json.loads((result.out / "config.json").read_text())["graphs"]


def _assert_close(out: torch.Tensor, reference: torch.Tensor, images: bool) -> None:
    assert out.shape == reference.shape
    assert (out - reference).abs().max().item() <= TOLERANCE
    if images:
        assert out.min() >= 0 and out.max() <= 1


# --- ONNX -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_graphs_run_in_onnxruntime_with_genforges_outputs(family, family_run, exported):
    loaded = api.load(family_run)
    result = exported(family_run, "onnx")
    graphs = _graphs(result)
    expected = {"gan": ["generator"], "cgan": ["generator"], "vae": ["decoder", "encoder"]}.get(family, ["a2b", "b2a"])
    assert list(graphs) == expected == result.graphs
    for name, spec in graphs.items():
        assert spec["opset"] == OPSET and spec["exporter"] == "torch.onnx.export(dynamo=True)"
        model = onnx.load(str(result.out / spec["file"]))
        assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}
        stamped = json.loads({p.key: p.value for p in model.metadata_props}["genforge.spec"])
        assert stamped["networks"] == spec["networks"]
        session = onnxruntime.InferenceSession(str(result.out / spec["file"]), providers=["CPUExecutionProvider"])
        assert all(isinstance(port.shape[0], str) for port in session.get_inputs())  # a dynamic batch axis
        for n in BATCHES:
            inputs = _inputs(loaded, spec, n, seed=n)
            out = session.run(None, {key: value.numpy() for key, value in inputs.items()})[0]
            _assert_close(torch.from_numpy(out), _genforge_output(loaded, name, inputs),
                          images=loaded.capabilities.data == "images" and name != "encoder")


def test_a_conditional_generator_takes_the_class_as_a_label_input(cgan_run, exported):
    spec = _graphs(exported(cgan_run, "onnx"))["generator"]
    assert [(p["name"], p["dtype"], p["shape"]) for p in spec["inputs"]] == [
        ("noise", "float32", ["batch", 16]), ("label", "int64", ["batch"])]


def test_where_the_dynamo_exporter_fails_the_torchscript_based_one_exports_and_says_why(gan_run, tmp_path,
                                                                                          monkeypatch):
    real_export = torch.onnx.export

    def dynamo_fails(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("unsupported operator (a stand-in)")
        return real_export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    result = export(gan_run, "onnx", tmp_path / "onnx")
    spec = _graphs(result)["generator"]
    assert "TorchScript-based" in spec["exporter"] and "TorchScript-based" in result.line()
    assert "unsupported operator (a stand-in)" in spec["dynamo_failed"] and spec["opset"] == OPSET
    loaded = api.load(gan_run)
    session = onnxruntime.InferenceSession(str(result.out / spec["file"]), providers=["CPUExecutionProvider"])
    for n in BATCHES:
        inputs = _inputs(loaded, spec, n, seed=n)
        out = session.run(None, {key: value.numpy() for key, value in inputs.items()})[0]
        _assert_close(torch.from_numpy(out), _genforge_output(loaded, "generator", inputs), images=True)


# --- TorchScript ------------------------------------------------------------------------------------

CHILD = """
import sys
import torch
from safetensors.torch import load_file, save_file

folder, inputs_file, outputs_file = sys.argv[1:]
assert "genforge" not in sys.modules
inputs, outputs = load_file(inputs_file), {}
for key in sorted({k.split("/")[0] for k in inputs}):
    graph, n = key.split("@")
    module = torch.jit.load(f"{folder}/{graph}.pt")
    names = sorted(k for k in inputs if k.startswith(key + "/"))
    outputs[key] = module(*[inputs[k] for k in names])
save_file(outputs, outputs_file)
assert "genforge" not in sys.modules  # the graphs need nothing of genforge
"""


@pytest.mark.parametrize("family", FAMILIES)
def test_torchscript_graphs_load_in_a_fresh_process_without_genforge(family, family_run, exported, tmp_path):
    loaded = api.load(family_run)
    result = exported(family_run, "torchscript")
    inputs, expected = {}, {}
    for name, spec in _graphs(result).items():
        for n in BATCHES:
            given = _inputs(loaded, spec, n, seed=10 + n)
            # keys "graph@n/index-name": the child passes them in the graph's input order
            inputs.update({f"{name}@{n}/{i}-{key}": value for i, (key, value) in enumerate(given.items())})
            expected[f"{name}@{n}"] = _genforge_output(loaded, name, given)
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    subprocess.run([sys.executable, "-c", CHILD, str(result.out), str(tmp_path / "inputs.safetensors"),
                    str(tmp_path / "outputs.safetensors")], check=True, timeout=120)
    outputs = load_file(str(tmp_path / "outputs.safetensors"))
    assert set(outputs) == set(expected)
    for key, reference in expected.items():
        _assert_close(outputs[key], reference, images=False)


# --- the model folder ---------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_a_model_folder_loads_with_plain_safetensors_and_with_genforge_load(family, family_run, exported):
    run = api.load(family_run)
    result = exported(family_run, "folder")
    config = json.loads((result.out / "config.json").read_text())
    networks = {n for g in config["graphs"].values() for n in g["networks"]}
    tensors = load_file(str(result.out / "model.safetensors"))
    assert {key.split(".", 1)[0] for key in tensors} == networks  # the sampling networks only
    assert not networks & {"discriminator", "D_A", "D_B", "ema"}
    with safe_open(str(result.out / "model.safetensors"), "pt") as handle:
        assert handle.metadata()["format"] == MARKER
    model = genforge.load(result.out)
    assert model.step == run.step and model.capabilities.rejection is False
    for name, spec in config["graphs"].items():
        inputs = _inputs(run, spec, 7, seed=5)
        assert torch.equal(_genforge_output(model, name, inputs), _genforge_output(run, name, inputs))
    if run.capabilities.latent:
        assert torch.equal(api.sample(model, 8, seed=0), api.sample(run, 8, seed=0))


def test_the_folder_holds_the_ema_weights_by_default_and_the_live_ones_with_live(gan_run, exported, tmp_path):
    default = exported(gan_run, "folder")
    live = export(gan_run, "folder", tmp_path / "live", weights="live")
    assert (default.weights, live.weights) == ("ema", "live")
    run = api.load(gan_run)
    z = api.noise(run, 5, seed=2)
    with torch.no_grad():
        live_images = run.model.eval().generate(z)  # outside inference(): the live generator
    assert torch.equal(api.generate(genforge.load(live.out), z), live_images)
    assert not torch.equal(api.generate(genforge.load(default.out), z), live_images)
    assert torch.equal(api.generate(genforge.load(default.out), z), api.generate(run, z))


def test_a_folder_of_a_run_that_samples_by_rejection_samples_without_it(tmp_path):
    """model.reject judges samples with the discriminator, which stays with the run: the folder's
    sampling keeps every sample instead of consulting an untrained one."""
    _untrained_run(tmp_path / "run", "ring-8", ["model.hidden=16", "model.reject=0.5"], (2,))
    folder = genforge.load(api.export(tmp_path / "run", "folder", tmp_path / "model").out)
    assert folder.cfg.model.reject == 0 and api.load(tmp_path / "run").cfg.model.reject == 0.5
    assert torch.equal(api.sample(folder, 300, seed=0), api.generate(folder, api.noise(folder, 300, seed=0)))


# --- the model card -------------------------------------------------------------------------------------

def _card_metrics(card: str) -> list[str]:
    """The metric names in the card's Evaluation table."""
    section = card.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")]
    return [name for name in rows if name != "metric"]


def _copy_run(run_dir: Path, where: Path) -> Path:
    shutil.copytree(run_dir, where, symlinks=True)
    return where


def test_the_card_renders_and_names_the_metrics_eval_json_measured(gan_run, tmp_path):
    run_dir = _copy_run(gan_run, tmp_path / "run")
    measured = {"fid": 123.4, "kid": 5.6, "samples": 2000, "seed": 0, "step": 4, "reference": "mnist-10k/test (1000)",
                "floor": {"fid": 9.9, "kid": 0.1, "precision": 0.9}, "units": {"fid": "lower is better"}}
    (run_dir / "eval.json").write_text(json.dumps(measured))
    result = export(run_dir, "folder", tmp_path / "model")
    card = (result.out / "README.md").read_text()
    html = markdown.markdown(card, extensions=["tables", "fenced_code"])
    assert "<table>" in html and '<img alt="samples" src="samples.png"' in html
    assert "<h2>Intended use and limits</h2>" in html and "<h2>Data</h2>" in html
    assert _card_metrics(card) == ["fid", "kid"]  # precision has only a floor: never shown as the model's
    assert "| fid | 123.4 | 9.9 | lower is better |" in card
    assert "CC BY-SA 3.0" in card and "mnist-10k" in card and "EMA" in card
    with Image.open(result.out / "samples.png") as grid:
        assert grid.width > 28 and grid.height > 28


def test_a_card_without_eval_json_shows_trainings_figures_or_says_nothing_was_measured(vae_run, tmp_path):
    run_dir = _copy_run(vae_run, tmp_path / "run")
    (run_dir / "eval.json").unlink(missing_ok=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = sorted(key[len("eval/"):] for row in rows for key in row if key.startswith("eval/"))
    assert logged  # the VAE's end-of-run report logs its test ELBO
    card = (export(run_dir, "folder", tmp_path / "logged").out / "README.md").read_text()
    assert sorted(_card_metrics(card)) == logged and "real-data floor" in card
    kept = [row for row in rows if not any(key.startswith("eval/") for key in row)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept))
    card = (export(run_dir, "folder", tmp_path / "none").out / "README.md").read_text()
    assert _card_metrics(card) == [] and "Not evaluated: no metric was measured" in card


def test_a_toy_card_draws_points_and_names_the_synthetic_data(disco_points_run, exported):
    result = exported(disco_points_run, "folder")
    card = (result.out / "README.md").read_text()
    assert "synthetic points" in card and "(samples.png)" in card and "Points are floats" in card


# --- bad input: one line, exit 2 ------------------------------------------------------------------------

def _refused(capsys, args: list[str], message: str) -> None:
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genforge: error: ") and message in err[0], err


def test_bad_input_is_refused_in_one_line_and_writes_nothing(gan_run, vae_run, tmp_path, capsys):
    out = tmp_path / "out"
    no_checkpoint = tmp_path / "fresh"
    no_checkpoint.mkdir()
    shutil.copy(gan_run / "config.json", no_checkpoint / "config.json")
    _refused(capsys, [str(no_checkpoint), "--format", "onnx", "--out", str(out)], "no complete checkpoint")
    _refused(capsys, [str(gan_run), "--format", "png", "--out", str(out)], "unknown export format 'png'")
    _refused(capsys, [str(tmp_path), "--format", "folder", "--out", str(out)], "not a genforge run folder")
    _refused(capsys, [str(tmp_path / "missing"), "--format", "folder", "--out", str(out)], "no such run folder")
    _refused(capsys, [str(vae_run), "--format", "torchscript", "--ema", "--out", str(out)], "kept no EMA weights")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_an_existing_output_is_replaced_only_with_force_and_only_if_an_export(gan_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(gan_run), "--format", "torchscript", "--out", str(out)]) == 0
    assert capsys.readouterr().err.startswith("genforge: exported generator (torchscript")
    _refused(capsys, [str(gan_run), "--format", "folder", "--out", str(out)], "already exists")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generator.pt"]
    assert main(["export", str(gan_run), "--format", "folder", "--out", str(out), "--force"]) == 0
    assert capsys.readouterr().err.count("\n") == 1  # one line
    assert (out / "model.safetensors").is_file() and not (out / "generator.pt").exists()
    _refused(capsys, [str(out), "--format", "onnx", "--out", str(tmp_path / "again")], "an exported model, not a run")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _refused(capsys, [str(gan_run), "--format", "folder", "--out", str(mine), "--force"], "did not write")
    assert (mine / "notes.txt").read_text() == "keep me"
    # a file is never an export's (export writes a folder), and a run's own files are refused outright
    kept = tmp_path / "passwd"
    kept.write_text("root:x:0:0")
    _refused(capsys, [str(gan_run), "--format", "folder", "--out", str(kept), "--force"], "is a file")
    assert kept.read_text() == "root:x:0:0"
    config = (gan_run / "config.json").read_text()
    for own in ("config.json", "metrics.jsonl", "checkpoints/latest"):
        _refused(capsys, [str(gan_run), "--format", "folder", "--out", str(gan_run / own), "--force"],
                 "would overwrite the run")
    assert (gan_run / "config.json").read_text() == config


def test_genforge_load_refuses_an_onnx_export_and_a_damaged_folder(gan_run, exported, tmp_path):
    with pytest.raises(GenforgeError, match="holds a .onnx. export"):
        genforge.load(exported(gan_run, "onnx").out)
    damaged = _copy_run(exported(gan_run, "folder").out, tmp_path / "damaged")
    config = json.loads((damaged / "config.json").read_text())
    (damaged / "config.json").write_text(json.dumps({**config, "image_shape": [1, 32, 32]}))
    with pytest.raises(GenforgeError, match="weights of 'generator' do not fit"):
        genforge.load(damaged)
    del config["image_shape"]
    (damaged / "config.json").write_text(json.dumps(config))
    with pytest.raises(GenforgeError, match="damaged export description"):
        genforge.load(damaged)


def test_onnx_export_without_the_onnx_packages_says_what_to_install(gan_run, tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxscript" else real_find_spec(name, *args))
    _refused(capsys, [str(gan_run), "--format", "onnx", "--out", str(tmp_path / "onnx")], "pip install onnx onnxscript")
    assert not (tmp_path / "onnx").exists()


def test_a_hand_edited_eval_json_does_not_break_the_model_card(gan_run, tmp_path, capsys):
    run = _copy_run(gan_run, tmp_path / "run")
    (run / "eval.json").write_text(json.dumps({"step": 5, "units": 5, "floor": 5, "notes": "x", "fid": 12.5}))
    assert main(["export", str(run), "--format", "folder", "--out", str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| fid | 12.5 | - |" in card and "feature space: none" in card and "None" not in card
