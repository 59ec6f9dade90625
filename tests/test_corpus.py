"""The bad-input corpus: every kind of bad input the hardening issue lists, and every kind the image
folder and IDX readers handle, as one parametrised test. Each case runs the ``genforge`` command
in-process and must end with exit status 2, exactly one ``genforge: error:`` line, no traceback,
and every file of the run folder (and of the files planted beside it) byte for byte as it was.

Cases are (id, setup, expected): ``setup(ctx)`` builds what the case needs (a copy of a trained
tiny run, a data root, a folder of images) and returns the command's arguments; ``expected`` is a
piece of the error line that shows the right thing was refused."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

from genforge import api
from genforge.cli import main
from genforge.config import load_recipe
from genforge.data.idx import write_idx

from .test_validate import _outside, _range_cases

TOY = ["model.hidden=16", "model.layers=1", "model.latent_dim=4", "train.batch_size=32", "train.threads=1",
       "train.device=cpu", "train.log_every=2", "train.sample_every=3", "train.checkpoint_every=3"]
LATEST, PREVIOUS = "step-0000006", "step-0000003"
NEXT = f"the previous complete checkpoint is {PREVIOUS}: genforge train --resume "


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 6-step tiny ring-8 run with checkpoints at steps 3 and 6, grids, plots and status."""
    run_dir = tmp_path_factory.mktemp("corpus") / "run"
    api.train_run(api.check_config("ring-8", TOY, steps=6), run_dir, progress=False)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", PREVIOUS, LATEST]
    return run_dir


@dataclass
class Context:
    """What a case works in: ``tmp`` (its own folder), the trained run to copy, and the folders whose
    files must not change (the run copy, ``outside`` with files links may point to, ``new`` = a run
    folder that must not come into being)."""

    tmp: Path
    trained: Path

    def __post_init__(self):
        self.outside = self.tmp / "outside"
        (self.outside / "folder").mkdir(parents=True)
        for name in ("victim.png", "victim.txt", "folder/kept.bin"):
            (self.outside / name).write_bytes(hashlib.sha256(name.encode()).digest() * 8)
        import numpy as np

        np.save(self.outside / "empty.npy", np.zeros((0, 100), "f4"))  # a latent file of no vectors
        self.new = self.tmp / "new-run"
        self.run_dir = self.tmp / "run"
        self.watched = [self.outside, self.new, self.run_dir]

    def run(self) -> Path:
        shutil.copytree(self.trained, self.run_dir, symlinks=True)
        return self.run_dir

    @property
    def ckpt(self) -> Path:
        return self.run_dir / "checkpoints" / LATEST


def snapshot(paths: list[Path]) -> dict[str, str]:
    """Every file (its SHA-256), link (its target) and folder under ``paths``, links not followed."""
    seen: dict[str, str] = {}
    for top in paths:
        if not (top.exists() or top.is_symlink()):
            seen[str(top)] = "absent"
            continue
        if top.is_symlink():
            seen[str(top)] = "link " + os.readlink(top)
            continue
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                path = Path(folder) / name
                if path.is_symlink():
                    seen[str(path)] = "link " + os.readlink(path)
                elif path.is_dir():
                    seen[str(path)] = "folder"
                else:
                    seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


# --- building blocks of the cases ---------------------------------------------------------------

def resume(ctx: Context, *extra: str) -> list[str]:
    return ["train", "--resume", str(ctx.run_dir), "--no-progress", *extra]


def edit_state(ctx: Context, change: Callable[[dict], object]) -> None:
    path = ctx.ckpt / "state.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps(change(state)))


def edit_tensors(ctx: Context, file: str, change: Callable[[dict], dict]) -> None:
    path = ctx.ckpt / file
    save_file(change(load_file(path)), path)


def setitem(mapping: dict, key: str, value) -> dict:
    mapping[key] = value
    return mapping


def without(mapping: dict, key: str) -> dict:
    mapping.pop(key)
    return mapping


def first(tensors: dict, part: str) -> str:
    return next(k for k in sorted(tensors) if part in k)


def with_first(part: str, make: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], dict]:
    """A change of the first tensor whose key holds ``part``."""
    return lambda tensors: setitem(tensors, first(tensors, part), make(tensors[first(tensors, part)]))


Case = tuple[str, Callable[[Context], list[str]], str]
CASES: list[Case] = []


def case(name: str, expected: str = ""):
    def register(setup: Callable[[Context], list[str]]):
        CASES.append((name, setup, expected))
        return setup
    return register


def add(name: str, setup: Callable[[Context], list[str]], expected: str = "") -> None:
    CASES.append((name, setup, expected))


# --- configs: every range, every type, every cross-field rule ---------------------------------------

def train_new(recipe: str, *extra: str, budget: tuple[str, str] = ("--steps", "2")) -> Callable[[Context], list[str]]:
    return lambda ctx: ["train", recipe, "--run-dir", str(ctx.new), "--no-progress", *budget, *extra]


def resumed(*extra: str) -> Callable[[Context], list[str]]:
    """A copy of the trained run, resumed with ``extra``."""
    return lambda ctx: (ctx.run(), resume(ctx, *extra))[1]


for _recipe, _key, _rule in _range_cases():
    _section, _name = _key.split(".")
    _kind = type(getattr(getattr(load_recipe(_recipe), _section), _name))
    for _value in _outside(_rule, _kind):
        add(f"range {_recipe} {_key}={_value}", train_new(_recipe, "train.steps=2", f"{_key}={_value}", budget=()),
            f"{_key}=")

for _override, _expected in [
    ("optim.lr=abc", "optim.lr"), ("train.steps=1.5", "train.steps"), ("train.batch_size=true", "train.batch_size"),
    ("model.latent_dim=", "model.latent_dim"), ("optim.fused=maybe", "optim.fused"), ("optim.lr=nan", "optim.lr"),
    ("optim.lr=inf", "optim.lr"), ("train.precision=fp8", "train.precision"), ("optim.name=lbfgs", "optim.name"),
    ("optim.lrr=1", "unknown config key 'optim.lrr'"), ("modell.width=8", "unknown config key 'modell'"),
    ("train=5", "is a section"), ("train.steps.x=1", "is a value, not a section: set it as train.steps=VALUE"), ("data.image_size=30", "data.image_size=30"),
    ("train.device=gpu", "train.device"), ("train.device=cuda:x", "train.device"), ("data.channels=2", "data.channels"),
    ("optim.schedule=cosine", "optim.schedule"), ("train.seed=-1", "train.seed"), ("train.seed=99999999999", "train.seed"),
    ("train.on_nan=ignore", "train.on_nan"), ("train.nan_skips=0", "train.nan_skips"),
    ("model.loss=hinge2", "model.loss"), ("data.background=grey", "data.background"),
    ("model.top_k=5", "model.top_k"), ("=1", "not of the form key=value"), ("optim..lr=1", "not of the form"),
]:
    _budget = ("--minutes", "1") if _override.startswith("optim.schedule") else ("--steps", "2")
    add(f"override {_override}", train_new("mnist-dcgan", _override, budget=_budget), _expected)

add("dry-run optim.lr=-1", lambda ctx: ["train", "mnist-dcgan", "--dry-run", "optim.lr=-1"], "optim.lr=-1")
add("unknown recipe", train_new("mnist-dcgann"), "unknown recipe 'mnist-dcgann'")
add("no recipe", lambda ctx: ["train", "--run-dir", str(ctx.new)], "name a recipe")
add("--steps 0", lambda ctx: ["train", "ring-8", "--run-dir", str(ctx.new), "--steps", "0"], "--steps must be positive")
add("--steps -5", lambda ctx: ["train", "ring-8", "--run-dir", str(ctx.new), "--steps", "-5"], "--steps must be positive")
add("--minutes 0", lambda ctx: ["train", "ring-8", "--run-dir", str(ctx.new), "--minutes", "0"], "--minutes must be")
add("--minutes nan", lambda ctx: ["train", "ring-8", "--run-dir", str(ctx.new), "--minutes", "nan"], "--minutes must be")
add("--device tpu", train_new("ring-8", "--device", "tpu"), "train.device=tpu")
add("--device cuda without a GPU", train_new("ring-8", "--device", "cuda", *TOY[:-1]), "CUDA")
add("precision fp16 on a CPU", train_new("ring-8", "train.precision=fp16", "train.device=cpu"), "train.precision=fp16")
add("--seeds 0", train_new("ring-8", "--seeds", "0", *TOY), "--seeds")
add("--from without --resume", train_new("ring-8", "--from", PREVIOUS), "--from names the checkpoint")
add("a new run into a folder that holds a run", lambda ctx: ["train", "ring-8", "--run-dir", str(ctx.run()),
                                                              "--steps", "2"], "already holds a run")


# --- resuming: what a resume may and may not be asked -----------------------------------------------

add("resume with a key that changes the model", resumed("model.hidden=32"),
    "--resume cannot change 'model.hidden'")
add("resume with a recipe", lambda ctx: ["train", "ring-8", "--resume", str(ctx.run())], "--resume takes a run")
add("resume --steps 0", resumed("--steps", "0"), "--steps must be positive")
add("resume --from a step that is not there", resumed("--from", "step-0000009"),
    "no complete checkpoint of that name")
add("resume --from a name that is no step", resumed("--from", "../../outside"),
    "name a checkpoint as step-N")
add("resume of a folder without config.json", lambda ctx: (ctx.run(), (ctx.run_dir / "config.json").unlink(),
                                                             resume(ctx))[-1], "no config.json")
add("resume of a folder with no checkpoint", lambda ctx: (ctx.run(), shutil.rmtree(ctx.run_dir / "checkpoints"),
                                                          resume(ctx))[-1], "no complete checkpoint")
add("resume of a folder that does not exist", lambda ctx: resume(ctx), "no such run folder")
add("resume of a file", lambda ctx: (ctx.run(), ["train", "--resume", str(ctx.run_dir / "config.json")])[-1],
    "config.json: a file of the run ")


# --- a checkpoint's state.json ----------------------------------------------------------------------

def damaged(change: Callable[[Context], None], *extra: str) -> Callable[[Context], list[str]]:
    """A copy of the run with its newest checkpoint changed by ``change``, resumed."""
    def setup(ctx: Context) -> list[str]:
        ctx.run()
        change(ctx)
        return resume(ctx, *extra)
    return setup


STATE_DAMAGE = {
    "step as a string": lambda s: setitem(s, "step", "6"),
    "step negative": lambda s: setitem(s, "step", -6),
    "step a float": lambda s: setitem(s, "step", 6.5),
    "step true": lambda s: setitem(s, "step", True),
    "step unlike the folder name": lambda s: setitem(s, "step", 5),
    "step missing": lambda s: without(s, "step"),
    "image_shape missing": lambda s: without(s, "image_shape"),
    "image_shape a string": lambda s: setitem(s, "image_shape", "2"),
    "image_shape empty": lambda s: setitem(s, "image_shape", []),
    "image_shape zero": lambda s: setitem(s, "image_shape", [0]),
    "image_shape of other data": lambda s: setitem(s, "image_shape", [3]),
    "image_shape nested": lambda s: setitem(s, "image_shape", [[2]]),
    "num_classes missing": lambda s: without(s, "num_classes"),
    "num_classes a string": lambda s: setitem(s, "num_classes", "8"),
    "num_classes of other data": lambda s: setitem(s, "num_classes", 3),
    "data_order null": lambda s: setitem(s, "data_order", None),
    "data_order missing": lambda s: without(s, "data_order"),
    "data_order a string": lambda s: setitem(s, "data_order", "0,0"),
    "data_order epoch negative": lambda s: setitem(s, "data_order", {"epoch": -1, "position": 0}),
    "data_order epoch huge": lambda s: setitem(s, "data_order", {"epoch": 10 ** 30, "position": 0}),
    "data_order position past the data": lambda s: setitem(s, "data_order", {"epoch": 0, "position": 10 ** 9}),
    "data_order without position": lambda s: setitem(s, "data_order", {"epoch": 0}),
    "data_order size zero": lambda s: setitem(s, "data_order", {"epoch": 0, "position": 0, "size": 0}),
    "data_order size a string": lambda s: setitem(s, "data_order", {"epoch": 0, "position": 0, "size": "9"}),
    "loss_window a list": lambda s: setitem(s, "loss_window", []),
    "loss_window counts zero": lambda s: setitem(s, "loss_window", {"sums": {"d/loss": 1.0}, "counts": {"d/loss": 0}}),
    "loss_window sums a string": lambda s: setitem(s, "loss_window", {"sums": {"d/loss": "1"}, "counts": {"d/loss": 1}}),
    "loss_window terms that differ": lambda s: setitem(s, "loss_window", {"sums": {"d/loss": 1.0}, "counts": {}}),
    "optimizers a list": lambda s: setitem(s, "optimizers", []),
    "optimizers missing": lambda s: without(s, "optimizers"),
    "optimizers of the wrong shape": lambda s: setitem(s, "optimizers", {"generator": []}),
    "an optimizer missing": lambda s: setitem(s, "optimizers", {"generator": s["optimizers"]["generator"]}),
    "param_groups empty": lambda s: (s["optimizers"]["generator"].__setitem__("param_groups", []), s)[1],
    "param_groups params as strings": lambda s: (s["optimizers"]["generator"]["param_groups"][0].__setitem__(
        "params", ["a"]), s)[1],
    "param_groups with a parameter too few": lambda s: (s["optimizers"]["generator"]["param_groups"][0]["params"]
                                                        .pop(), s)[1],
    "param_groups params in another order": lambda s: (s["optimizers"]["generator"]["param_groups"][0]["params"]
                                                       .reverse(), s)[1],
    "lr as a string": lambda s: (s["optimizers"]["generator"]["param_groups"][0].__setitem__("lr", "fast"), s)[1],
    "betas of one value": lambda s: (s["optimizers"]["generator"]["param_groups"][0].__setitem__("betas", [0.5]), s)[1],
    "a group key unknown to the optimizer": lambda s: (s["optimizers"]["generator"]["param_groups"][0]
                                                       .__setitem__("momentum", 0.9), s)[1],
    "scalars not by index": lambda s: (s["optimizers"]["generator"].__setitem__("scalars", {"x": {}}), s)[1],
    "scalars not numbers": lambda s: (s["optimizers"]["generator"].__setitem__("scalars", {"0": {"step": "1"}}), s)[1],
    "config a list": lambda s: setitem(s, "config", []),
    "grad_scalers a list": lambda s: setitem(s, "grad_scalers", []),
    "the file a list": lambda s: [s],
    "the file a number": lambda s: 6,
    "the file null": lambda s: None,
    "the file a string": lambda s: "state",
}
for _name, _change in STATE_DAMAGE.items():
    add(f"state.json: {_name}", damaged(lambda ctx, c=_change: edit_state(ctx, c)), NEXT)

for _name, _bytes in {"torn": b'{"step": 6, "opt', "empty": b"", "binary": bytes(range(256)),
                      "invalid UTF-8": b'{"step": "\xff\xfe"}', "nested a million deep": b"[" * 1_000_000,
                      "NaN step": b'{"step": NaN}'}.items():
    add(f"state.json: {_name}", damaged(lambda ctx, b=_bytes: (ctx.ckpt / "state.json").write_bytes(b)), NEXT)


# --- rng, optim and model tensors --------------------------------------------------------------------

TENSOR_DAMAGE = {
    ("rng.safetensors", "the wrong dtype"): with_first("torch", lambda t: t.float()),
    ("rng.safetensors", "without its torch key"): lambda ts: {"cuda0": ts["torch"]},
    ("rng.safetensors", "the wrong length"): with_first("torch", lambda t: t[:100]),
    ("rng.safetensors", "two-dimensional"): with_first("torch", lambda t: t.view(2, -1)),
    ("rng.safetensors", "an unexpected key"): lambda ts: setitem(ts, "numpy", ts["torch"].clone()),
    ("rng.safetensors", "no tensors"): lambda ts: {},
    ("optim.safetensors", "a wrong-shaped exp_avg"): with_first("exp_avg", lambda t: torch.zeros(t.numel() * 4 + 1)),
    ("optim.safetensors", "an exp_avg_sq of another layer's shape"): with_first("exp_avg_sq",
                                                                                lambda t: torch.zeros(3, 7)),
    ("optim.safetensors", "a float64 exp_avg"): with_first("exp_avg", lambda t: t.double()),
    ("optim.safetensors", "a NaN exp_avg"): with_first("exp_avg", lambda t: torch.full_like(t, float("nan"))),
    ("optim.safetensors", "a step of shape (2,)"): with_first("/step", lambda t: torch.zeros(2)),
    ("optim.safetensors", "an int64 step"): with_first("/step", lambda t: t.long()),
    ("optim.safetensors", "a key of no optimizer"): lambda ts: setitem(ts, "critic/0/exp_avg", torch.zeros(1)),
    ("optim.safetensors", "a key without an index"): lambda ts: setitem(ts, "generator/x/exp_avg", torch.zeros(1)),
    ("optim.safetensors", "a key of two parts"): lambda ts: setitem(ts, "generator/exp_avg", torch.zeros(1)),
    ("optim.safetensors", "an unknown moment"): lambda ts: setitem(ts, "generator/0/velocity", torch.zeros(1)),
    ("optim.safetensors", "a parameter index out of range"): lambda ts: setitem(ts, "generator/99/exp_avg",
                                                                                torch.zeros(1)),
    ("model.safetensors", "a weight key missing"): lambda ts: without(ts, first(ts, "generator")),
    ("model.safetensors", "an extra weight"): lambda ts: setitem(ts, "generator.extra.weight", torch.zeros(2)),
    ("model.safetensors", "a weight of the wrong shape"): with_first("weight", lambda t: torch.zeros(t.shape[0] + 1,
                                                                                                      *t.shape[1:])),
    ("model.safetensors", "a float64 weight"): with_first("weight", lambda t: t.double()),
    ("model.safetensors", "no weights at all"): lambda ts: {},
}
for (_file, _name), _change in TENSOR_DAMAGE.items():
    add(f"{_file}: {_name}", damaged(lambda ctx, f=_file, c=_change: edit_tensors(ctx, f, c)), NEXT)

for _file in ("model.safetensors", "optim.safetensors", "rng.safetensors", "state.json"):
    add(f"{_file}: missing", damaged(lambda ctx, f=_file: (ctx.ckpt / f).unlink()), "")
for _file in ("model.safetensors", "optim.safetensors", "rng.safetensors"):
    for _name, _make in {"truncated": lambda b: b[: len(b) // 2], "empty": lambda b: b"",
                         "a garbage header": lambda b: b"\xff" * 64 + b[64:],
                         "a header claiming a petabyte": lambda b: struct.pack("<Q", 2 ** 50) + b[8:],
                         "a pickle": lambda b: b"\x80\x04\x95" + b"cos\nsystem\n(S'echo owned'\ntR." + b[40:]}.items():
        add(f"{_file}: {_name}", damaged(lambda ctx, f=_file, m=_make: (ctx.ckpt / f).write_bytes(
            m((ctx.ckpt / f).read_bytes()))), NEXT)


def _model_weights_change(ctx: Context, change) -> list[str]:
    ctx.run()
    edit_tensors(ctx, "model.safetensors", change)
    return ["sample", str(ctx.run_dir), "--n", "4", "--device", "cpu", "--out", str(ctx.outside / "new.png")]


add("sample: a weight key missing", lambda ctx: _model_weights_change(ctx, lambda ts: without(ts, first(ts, "gen"))),
    "is missing")
add("sample: a weight of the wrong shape", lambda ctx: _model_weights_change(
    ctx, with_first("weight", lambda t: torch.zeros(t.shape[0] + 1, *t.shape[1:]))), "needs torch.float32")
add("eval: a weight of the wrong dtype", lambda ctx: (_model_weights_change(ctx, with_first("weight", lambda t: t.half())),
                                                      ["eval", str(ctx.run_dir), "--n", "8", "--device", "cpu"])[-1],
    "needs torch.float32")


# --- the latest link and config.json --------------------------------------------------------------------

def latest_to(target: str, kind: str = "link") -> Callable[[Context], None]:
    def change(ctx: Context) -> None:
        latest = ctx.run_dir / "checkpoints" / "latest"
        latest.unlink()
        if kind == "link":
            latest.symlink_to(target)
        elif kind == "file":
            latest.write_text(target)
        else:
            latest.mkdir()
    return change


add("latest: a link to a file beside it", damaged(lambda ctx: latest_to("../config.json")(ctx)), "not to a step-N")
add("latest: a link to a folder name that is no step", damaged(lambda ctx: (
    (ctx.run_dir / "checkpoints" / "mine").mkdir(), latest_to("mine")(ctx))), "not to a step-N")
add("latest: a plain file", damaged(lambda ctx: latest_to(LATEST, "file")(ctx)), "not a link")
add("latest: a folder", damaged(lambda ctx: latest_to("", "folder")(ctx)), "not a link")
add("latest: a link out of the run", damaged(lambda ctx: latest_to(str(ctx.outside / "folder"))(ctx)),
    "outside the run folder")


def edit_config(change: Callable[[dict], object]) -> Callable[[Context], None]:
    def edit(ctx: Context) -> None:
        path = ctx.run_dir / "config.json"
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return edit


CONFIG_DAMAGE = {
    "a width that does not fit the weights": (lambda c: (c["model"].__setitem__("hidden", 32), c)[1], "needs"),
    "a latent size that does not fit": (lambda c: (c["model"].__setitem__("latent_dim", 7), c)[1], "needs"),
    "a list": (lambda c: [c], "expected a JSON object"),
    "an unknown key": (lambda c: (c["train"].__setitem__("stepz", 1), c)[1], "unknown config key 'train.stepz'"),
    "an unknown family": (lambda c: setitem(c, "family", "diffusion"), "diffusion"),
    "no family": (lambda c: without(c, "family"), "names no model family"),
    "a value out of range": (lambda c: (c["optim"].__setitem__("lr", -1), c)[1], "optim.lr=-1"),
    "a value of the wrong type": (lambda c: (c["train"].__setitem__("batch_size", "many"), c)[1], "train.batch_size"),
    "a section that is a number": (lambda c: setitem(c, "optim", 3), "is a section"),
}
for _name, (_change, _expected) in CONFIG_DAMAGE.items():
    add(f"config.json: {_name}", damaged(edit_config(_change)), _expected)
for _name, _bytes in {"torn": b'{"recipe": "ring-8", "fam', "empty": b"", "invalid UTF-8": b"\xff\xfe{}"}.items():
    add(f"config.json: {_name}", damaged(lambda ctx, b=_bytes: (ctx.run_dir / "config.json").write_bytes(b)),
        "not valid JSON")


# --- links in a run folder that lead out of it ------------------------------------------------------

LINKS = {  # path in the run folder -> what outside it the link points to
    "samples/final.png": "victim.png", "plots/losses.png": "victim.png", "metrics.jsonl": "victim.txt",
    "metrics.jsonl.tmp": "victim.txt", "eval.json.tmp": "victim.txt", "eval.json": "victim.txt",
    "status.json": "victim.txt", "lock": "victim.txt", "train.log": "victim.txt", "checkpoints": "folder",
    "samples": "folder", "checkpoints/.tmp-step-0000009": "folder", "checkpoints/step-0000006/model.safetensors":
        "victim.txt",
}


def planted(relative: str, target: str) -> Callable[[Context], None]:
    def plant(ctx: Context) -> None:
        path = ctx.run_dir / relative
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.symlink_to(ctx.outside / target)
    return plant


for _relative, _target in LINKS.items():
    add(f"link out: {_relative} (train --resume)", damaged(lambda ctx, r=_relative, t=_target: planted(r, t)(ctx)),
        "outside the run folder")
    add(f"link out: {_relative} (eval)", lambda ctx, r=_relative, t=_target: (
        ctx.run(), planted(r, t)(ctx), ["eval", str(ctx.run_dir), "--n", "8", "--device", "cpu"])[-1],
        "outside the run folder")
add("link out: a new run into a folder holding one", lambda ctx: (
    ctx.new.mkdir(), (ctx.new / "samples").symlink_to(ctx.outside / "folder"),
    train_new("ring-8", *TOY)(ctx))[-1], "outside the run folder")
add("the run folder itself a link", lambda ctx: (ctx.run(), (ctx.tmp / "alias").symlink_to(ctx.run_dir),
                                                 ["train", "--resume", str(ctx.tmp / "alias")])[-1], "symbolic link")


# --- the other commands on a run ------------------------------------------------------------------------

def on_run(*argv: str) -> Callable[[Context], list[str]]:
    def setup(ctx: Context) -> list[str]:
        run_dir = ctx.run()
        return [word.replace("RUN", str(run_dir)).replace("OUT", str(ctx.outside)) for word in argv]
    return setup


for _argv, _expected in [
    (("sample", "RUN", "--n", "0"), "--n must be 1 to"), (("sample", "RUN", "--n", "1000000000"), "--n must be 1 to"),
    (("sample", "RUN", "--class", "3", "--out", "OUT/s.png"), "sampling one class needs"),
    (("sample", "RUN", "--by-class", "--out", "OUT/s.png"), "needs a conditional GAN"),
    (("sample", "RUN", "--save-z", "OUT/z.txt", "--out", "OUT/s.png"), ".safetensors or .npy"),
    (("sample", "RUN", "--device", "tpu"), "unknown device"),
    (("sample", "OUT/folder"), "no config.json"), (("sample", "OUT/nowhere"), "no such run folder"),
    (("eval", "RUN/config.json"), "config.json: a file of the run "),
    (("sample", "RUN/checkpoints"), "no config.json"), (("sample", "OUT/victim.txt"), "a file, not a run folder"),
    (("interpolate", "RUN", "--rows", "0", "--out", "OUT/i.png"), "--rows must be positive"),
    (("interpolate", "RUN", "--from", "OUT/victim.txt", "--out", "OUT/i.png"), "give both --from and --to"),
    (("interpolate", "RUN", "--steps", "100000", "--rows", "100", "--out", "OUT/i.png"), "--steps x --rows"),
    (("interpolate", "RUN", "--steps", "0", "--out", "OUT/i.png"), "--steps must be 2 to 100,000, not 0"),
    (("interpolate", "RUN", "--steps", "1", "--out", "OUT/i.png"), "--steps must be 2 to 100,000, not 1"),
    (("interpolate", "RUN", "--from", "OUT/empty.npy", "--to", "OUT/empty.npy", "--out", "OUT/i.png"),
     "holds no latent vectors"),
    (("arithmetic", "RUN", "--a", "OUT/a.npy", "--b", "OUT/b.npy", "--c", "OUT/c.npy", "--out", "OUT/x.png"), "a.npy"),
    (("arithmetic", "RUN", "--a", "OUT/victim.txt", "--b", "OUT/b.npy", "--c", "OUT/c.npy"), "victim.txt"),
    (("eval", "RUN", "--n", "1"), "--n must be 2 to"), (("eval",), "name a run directory or --real"),
    (("eval", "RUN", "--real", "mnist"), "name a run directory or --real"),
    (("translate", "RUN", "OUT/victim.png", "--out", "OUT/t"), "needs a DiscoGAN run"),
    (("translate", "RUN"), "name image files/folders or --from-test"),
    (("export", "RUN", "--format", "gif", "--out", "OUT/e"), "gif"),
    (("export", "RUN", "--format", "folder", "--out", "OUT/folder"), "OUT/folder".replace("OUT/", "")),
    (("compare", "RUN", "--n", "0"), "--n must be positive"),
    (("bench", "toys", "--seeds", "0"), "--seeds must be positive"),
    (("bench", "toys", "--toy", "ring-9"), "unknown toy"),
    (("recipes", "--show", "nope"), "unknown recipe"),
    (("data", "fetch", "imagenet"), "unknown dataset"),
    (("evaluator", "train", "cifar"), "cifar"),
    (("studio", "--max-trainings", "0"), "--max-trainings"),
]:
    add(f"{' '.join(_argv)}".replace("RUN", "run").replace("OUT", "out"), on_run(*_argv), _expected)


# --- image folders: every kind of file the folder reader turns away ---------------------------------------

def _png(width: int = 8, height: int = 8) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


BAD_IMAGES = {
    "empty.png": lambda: b"", "text.png": lambda: b"<html>404 Not Found</html>\n",
    "truncated.png": lambda: _png(40, 40)[:60], "corrupt.png": lambda: _png(40, 40)[:40] + b"\x00" * 200,
    "header-only.png": lambda: _png_header_only(16, 16), "bomb.png": lambda: _png_header_only(100_000, 100_000),
    "big.png": lambda: _png_header_only(8_000, 8_000), "empty.jpg": lambda: b"",
    "truncated.jpg": lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "garbage.gif": lambda: b"GIF89a" + b"\x00" * 7,
    "garbage.webp": lambda: b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8, "garbage.bmp": lambda: b"BM" + b"\xff" * 40,
    "random.jpeg": lambda: bytes((i * 37) % 256 for i in range(500)),
}


def image_folder(fill: Callable[[Path], None]) -> Callable[[Context], list[str]]:
    def setup(ctx: Context) -> list[str]:
        folder = ctx.outside / "images"
        folder.mkdir()
        fill(folder)
        return train_new("mnist-dcgan", f"data.dataset=folder:{folder}", "data.image_size=8", "train.device=cpu")(ctx)
    return setup


for _name, _make in BAD_IMAGES.items():
    add(f"image folder: only {_name}", image_folder(lambda f, n=_name, m=_make: (f / n).write_bytes(m())),
        "no usable image")
add("image folder: empty", image_folder(lambda f: None), "no image files")
add("image folder: only other files", image_folder(lambda f: (f / "notes.txt").write_text("x")), "1 other file")
add("image folder: only hidden images", image_folder(lambda f: (f / ".a.png").write_bytes(_png())), "no image files")
add("image folder: a dangling link", image_folder(lambda f: (f / "a.png").symlink_to(f / "gone.png")),
    "no usable image")
add("image folder: a folder named like an image", image_folder(lambda f: (f / "a.png").mkdir()), "no image files")
add("image folder: does not exist", train_new("mnist-dcgan", "data.dataset=folder:/nonexistent/images"),
    "does not exist")
add("image folder: a file", lambda ctx: train_new("mnist-dcgan", f"data.dataset=folder:{ctx.outside / 'victim.png'}")(ctx),
    "is a file, not a folder")


# --- IDX files: every way the reader refuses one --------------------------------------------------------

HEADER = bytes([0, 0, 8, 3]) + struct.pack(">III", 4, 28, 28)


def _idx(payload: bytes, compress: bool = True) -> bytes:
    return gzip.compress(payload, mtime=0) if compress else payload


BAD_IDX = {
    "wrong magic": _idx(b"\x01\x02\x08\x03" + HEADER[4:] + bytes(4 * 784)),
    "wrong type code": _idx(bytes([0, 0, 9, 3]) + HEADER[4:] + bytes(4 * 784)),
    "no dimensions": _idx(bytes([0, 0, 8, 0])),
    "five dimensions": _idx(bytes([0, 0, 8, 5]) + struct.pack(">IIIII", 1, 1, 1, 1, 1) + b"\x00"),
    "200 dimensions": _idx(bytes([0, 0, 8, 200]) + b"\x00" * 800),
    "too short": _idx(b"\x00\x00"),
    "truncated header": _idx(HEADER[:10]),
    "truncated data": _idx(HEADER + bytes(784)),
    "truncated data, not compressed": _idx(HEADER + bytes(784), compress=False),
    "longer than its header": _idx(HEADER + bytes(5 * 784)),
    "a truncated gzip stream": _idx(HEADER + bytes(4 * 784))[:-20],
    "a corrupt gzip stream": (lambda b: b[:20] + bytes(x ^ 0xFF for x in b[20:40]) + b[40:])(_idx(HEADER + bytes(4 * 784))),
    "a size overflowing int64": _idx(bytes([0, 0, 8, 3]) + struct.pack(">III", 2 ** 31, 2 ** 31, 2 ** 31)),
    "a gzip bomb": gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 4, 28, 28) + bytes(50 * 2 ** 20), 1),
    "random bytes": bytes((i * 131 + 7) % 256 for i in range(3000)),
    "random bytes behind gzip magic": b"\x1f\x8b" + bytes((i * 131 + 7) % 256 for i in range(3000)),
}


def mnist_root(images: bytes | None, labels_count: int = 4, drop: str = "") -> Callable[[Context], list[str]]:
    """A data root whose mnist train images are ``images`` (None = good ones), with labels of ``labels_count``."""
    def setup(ctx: Context) -> list[str]:
        folder = ctx.outside / "data" / "mnist"
        folder.mkdir(parents=True)
        for prefix in ("train", "t10k"):
            write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", torch.zeros(4, 28, 28, dtype=torch.uint8))
            write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", torch.zeros(labels_count, dtype=torch.uint8))
        if images is not None:
            (folder / "train-images-idx3-ubyte.gz").write_bytes(images)
        if drop:
            (folder / drop).unlink()
        return train_new("mnist-dcgan", "data.dataset=mnist", "--data-root", str(ctx.outside / "data"))(ctx)
    return setup


for _name, _bytes in BAD_IDX.items():
    add(f"IDX: {_name}", mnist_root(_bytes), "train-images-idx3-ubyte.gz")
add("IDX: images and labels that disagree", mnist_root(None, labels_count=3), "do not match")
add("IDX: a labels file missing", mnist_root(None, drop="train-labels-idx1-ubyte.gz"), "genforge data fetch mnist")


# --- the test --------------------------------------------------------------------------------------------

@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No system data roots and no dataset cache from other tests; the user cache under tmp."""
    from genforge.data import datasets, root

    monkeypatch.setattr(root, "SYSTEM_ROOTS", ())
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    datasets._load_cached.cache_clear()
    yield
    datasets._load_cached.cache_clear()


@pytest.mark.parametrize("name, setup, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(name, setup, expected, trained, tmp_path, isolated,
                                                              capsys):
    ctx = Context(tmp_path, trained)
    argv = setup(ctx)
    before = snapshot(ctx.watched)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("genforge: error:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and "Traceback" not in err + out, err[-2000:]
    assert expected in errors[0], errors[0]
    assert snapshot(ctx.watched) == before


def test_the_corpus_covers_at_least_170_kinds():
    assert len(CASES) >= 170 and len({c[0] for c in CASES}) == len(CASES)


def test_a_damaged_newest_checkpoint_resumes_from_the_previous_with_from(trained, tmp_path, isolated, capsys):
    ctx = Context(tmp_path, trained)
    ctx.run()
    edit_tensors(ctx, "optim.safetensors", TENSOR_DAMAGE[("optim.safetensors", "a wrong-shaped exp_avg")])
    assert main(resume(ctx)) == 2
    assert NEXT in capsys.readouterr().err
    assert main(resume(ctx, "--from", PREVIOUS)) == 0
    err = capsys.readouterr().err
    assert f"resuming ring-8 (gan) in {ctx.run_dir} from {PREVIOUS}" in err
    assert f"genforge: warning: this abandons the newer {LATEST}: the run's next checkpoint removes it" in err
    redone = load_file(ctx.run_dir / "checkpoints" / LATEST / "model.safetensors")
    straight = load_file(trained / "checkpoints" / LATEST / "model.safetensors")
    assert redone.keys() == straight.keys() and all(torch.equal(redone[k], straight[k]) for k in straight)
