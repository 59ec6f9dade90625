"""Typed run configuration: recipe presets (TOML) + ``key=value`` overrides.

A run's config is a tree of dataclasses. Every field has one help line (its
``metadata["help"]``), shown by ``genforge recipes --show``; fields with a fixed set
of values list them in ``metadata["choices"]``. Unknown keys and bad values are
errors that name the key and list what is valid.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from genforge import registry
from genforge.data.catalog import FOLDERS
from genforge.errors import GenforgeError, shorten
from genforge.fields import allows, check_ranges, opt  # noqa: F401  (re-exported: the config's field helpers)


@dataclass
class DataConfig:
    dataset: str = opt("mnist-10k", "dataset name (see `genforge data list`), or folder:PATH for a folder of images")
    root: str = opt("", "data root folder; empty = --data-root, $GENFORGE_DATA or ~/.cache/genforge")
    image_size: int = opt(28, "side of the square images the model sees (28 or 32 for MNIST)")
    path: str = opt("", "image folder of a folder dataset (folder, pokemon); empty = folder:PATH's, or "
                    "<data root>/pokemon/artwork for pokemon")
    path_b: str = opt("", "a second image folder: domain B of a translator (DiscoGAN), data.path being domain A; "
                      "empty = one folder (or a two-folder set's own second one: pokemon-art2sprite's sprites)")
    background: str = opt("black", "image folders: colour under transparent pixels and around images that are "
                          "not square", ("black", "white"))
    channels: int = opt(3, "image folders: 3 (RGB) or 1 (grey); named datasets keep their own")
    flip: bool = opt(False, "augmentation: flip each training image left-right with probability 1/2")
    brightness: float = opt(0.0, "augmentation: add a per-image shift in [-b, b] (fraction of the value range); 0 = off")
    contrast: float = opt(0.0, "augmentation: scale each image about its mean by a factor in [1 - c, 1 + c]; 0 = off")
    test_share: float = opt(0.0, "image folders: share of the files held out as the test split (chosen by a hash "
                            "of each file's name, so the same files in any order); 0 = the test split is the "
                            "training images")


@dataclass
class OptimConfig:
    name: str = opt("adam", "optimiser for every network", ("adam", "adamw", "rmsprop", "adadelta", "sgd"))
    lr: float = opt(2e-4, "learning rate")
    lr_d: float = opt(0.0, "learning rate of the discriminator / critic (Heusel et al. 2017's two time scales: often "
                      "above G's); 0 = optim.lr")
    lr_g: float = opt(0.0, "learning rate of the generator / translators; 0 = optim.lr")
    beta1: float = opt(0.5, "Adam beta1 (RMSProp/SGD momentum ignores it)")
    beta2: float = opt(0.999, "Adam beta2")
    weight_decay: float = opt(0.0, "L2 weight decay")
    fused: bool = opt(True, "fused (Adam/AdamW) or multi-tensor (others) optimiser kernels; false = the plain "
                      "per-parameter loop")
    schedule: str = opt("constant", "learning rate over the run: constant, or decayed from lr to lr x final_lr "
                        "linearly / along a half cosine by train.steps (needs train.steps)",
                        ("constant", "linear", "cosine"))
    final_lr: float = opt(0.0, "the decayed schedules' last learning rate, as a fraction of lr")


@dataclass
class TrainConfig:
    steps: int = opt(1000, "total training steps (one step = one update of every phase); 0 = no limit")
    minutes: float = opt(0.0, "wall-clock budget in minutes; 0 = none (stops at whichever comes first)")
    batch_size: int = opt(64, "images per batch")
    seed: int = opt(0, "seed for weights, batches and noise")
    device: str = opt("auto", "auto (cuda if present, else cpu), cpu, cuda or cuda:N")
    threads: int = opt(0, "CPU threads for torch; 0 = the cores other work leaves free, re-measured as the run "
                          "goes (shared by the processes torchrun starts)")
    precision: str = opt("auto", "autocast of the training steps: auto (bf16 for image models where the CPU or GPU "
                         "has native bfloat16, else fp32), fp32, bf16, fp16 (CUDA only, with loss scaling)",
                         ("auto", "fp32", "bf16", "fp16"))
    channels_last: str = opt("auto", "channels-last memory layout for conv nets: auto (on for images), on, off",
                             ("auto", "on", "off"))
    compile: str = opt("auto", "torch.compile the training steps: auto (CUDA runs of 2,000+ steps or 10+ minutes, "
                       "never a gradient penalty; it did not pay on CPUs), on, off", ("auto", "on", "off"))
    log_every: int = opt(50, "steps between logged losses (the only host syncs)")
    sample_every: int = opt(500, "steps between sample grids from the fixed noise batch")
    checkpoint_every: int = opt(500, "steps between checkpoints (one is also written at the end)")
    ema_decay: float = opt(0.0, "EMA decay of the sampling networks' weights, ramped up as min(decay, (1+t)/(10+t)) "
                           "over the first steps; 0 = off")
    eval_samples: int = opt(5000, "importance samples per test image for the final NLL estimate (VAE)")
    eval_every: int = opt(0, "steps between FID checks on eval_n samples (best kept in checkpoints/best); 0 = off")
    eval_n: int = opt(2000, "samples per training-time FID check")
    on_nan: str = opt("stop", "a non-finite loss or weight: stop (at the next log step or checkpoint, keeping the last "
                      "finite checkpoint), or skip each update whose gradients are not finite (one host sync per "
                      "phase) and stop after train.nan_skips of them", ("stop", "skip"))
    nan_skips: int = opt(10, "with train.on_nan=skip: updates skipped for non-finite gradients before the run stops")


@dataclass
class RunConfig:
    recipe: str
    family: str
    description: str
    model: Any  # the family's own config dataclass
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = ("model", "data", "optim", "train")


# --- building dataclasses from plain dicts, with errors that say what is valid ---------

def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse_value(key: str, text: Any, kind: Any, choices: tuple[str, ...] | None = None) -> Any:
    """Convert ``text`` (a string from the command line, or a TOML/JSON value) to ``kind``."""
    try:
        if kind is bool:
            if isinstance(text, bool):
                value = text
            else:
                lowered = str(text).strip().lower()
                if lowered in ("true", "1", "yes", "on"):
                    value = True
                elif lowered in ("false", "0", "no", "off"):
                    value = False
                else:
                    raise ValueError
        elif kind is int:
            if isinstance(text, bool):
                raise ValueError
            number = text
            if isinstance(text, str):  # exact for big ints ("9007199254740993"); "1e3" still parses
                try:
                    number = int(text)
                except ValueError:
                    number = float(text)
            if isinstance(number, float):
                if not math.isfinite(number) or number != int(number):
                    raise ValueError
            value = int(number)
        elif kind is float:
            if isinstance(text, bool):
                raise ValueError
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
        elif kind is str:
            if not isinstance(text, str):
                raise ValueError
            value = text
        else:  # pragma: no cover - only the kinds above are used in configs
            raise GenforgeError(f"config key '{key}' has an unsupported type {kind}")
    except (ValueError, TypeError, OverflowError):
        name = getattr(kind, "__name__", str(kind))
        if isinstance(text, dict):  # `optim.lr.x=3`: a key below a value
            raise GenforgeError(f"config key '{key}' is a value, not a section: set it as {key}=VALUE "
                                f"(not {key}.{next(iter(text), 'KEY')}=...)") from None
        raise GenforgeError(f"config key '{key}': {text!r} is not a valid {name}") from None
    if choices and value not in choices:
        raise GenforgeError(f"config key '{key}': {value!r} is not one of {', '.join(choices)}")
    return value


def _apply(obj: Any, values: dict[str, Any], prefix: str) -> None:
    """Set fields of dataclass ``obj`` from ``values``, rejecting unknown keys."""
    types = _field_types(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, raw in values.items():
        full = f"{prefix}{key}"
        if key not in fields:
            valid = ", ".join(f"{prefix}{name}" for name in fields)
            raise GenforgeError(f"unknown config key '{full}'; valid keys: {valid}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(raw, dict):
                raise GenforgeError(f"config key '{full}' is a section; set its keys as {full}.KEY=VALUE")
            _apply(current, raw, f"{full}.")
        else:
            setattr(obj, key, parse_value(full, raw, types[key], fields[key].metadata.get("choices")))


def iter_fields(obj: Any, prefix: str = "") -> typing.Iterator[tuple[str, Any, str]]:
    """Yield (dotted key, value, help line) for every leaf field of a config tree."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, f"{prefix}{f.name}.")
        elif f.metadata.get("help"):
            yield f"{prefix}{f.name}", value, f.metadata["help"]


def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    """Turn ``["optim.lr=1e-4", "train.batch_size=32"]`` into a nested dict of strings."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise GenforgeError(f"override '{item}' is not of the form key=value (e.g. optim.lr=1e-4)")
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GenforgeError(f"override '{item}' conflicts with an earlier one")
        if isinstance(node.get(parts[-1]), dict):
            raise GenforgeError(f"override '{item}' conflicts with an earlier one")
        node[parts[-1]] = value.strip()
    return nested


# --- recipes -------------------------------------------------------------------------

def recipe_names() -> list[str]:
    """Names of the presets shipped in ``genforge/recipes/*.toml``."""
    folder = resources.files("genforge") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_recipe_dict(name: str) -> dict[str, Any]:
    """A built-in recipe's TOML as a dict. Only the shipped names are looked up: a name is never a path
    (the studio passes names from the browser, and '../x' or '/tmp/x' must not load any TOML on disk)."""
    known = recipe_names()
    if name not in known:
        raise GenforgeError(f"unknown recipe '{shorten(name, 80)}'; known recipes: {', '.join(known)}")
    path = resources.files("genforge") / "recipes" / f"{name}.toml"
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise GenforgeError(f"recipe file {path}: {e}") from None


def build_config(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> RunConfig:
    """Make a RunConfig from a recipe/config dict, then apply overrides on top."""
    raw = dict(raw)
    recipe = raw.pop("recipe", "custom")
    family = raw.pop("family", None)
    description = raw.pop("description", "")
    if not isinstance(family, str):
        raise GenforgeError(f"recipe '{recipe}' names no model family (family = \"vae\" or similar)")
    cfg = RunConfig(recipe=recipe, family=family, description=description, model=registry.family(family).Config())
    for layer in (raw, overrides or {}):
        unknown = [k for k in layer if k not in SECTIONS]
        if unknown:
            valid = ", ".join(k for k, _, _ in iter_fields(cfg))
            raise GenforgeError(f"unknown config key '{unknown[0]}'; valid keys: {valid}")
        for section in SECTIONS:
            if section in layer:
                if not isinstance(layer[section], dict):
                    raise GenforgeError(f"config key '{section}' is a section; set its keys as {section}.KEY=VALUE")
                _apply(getattr(cfg, section), layer[section], f"{section}.")
    return cfg


def load_recipe(name: str, overrides: typing.Iterable[str] = ()) -> RunConfig:
    """Load a named preset and apply ``key=value`` overrides."""
    raw = load_recipe_dict(name)
    raw["recipe"] = name
    return build_config(raw, parse_overrides(overrides))


def config_from_json(path) -> RunConfig:
    """Read a run's saved ``config.json`` (written by :func:`save_config`)."""
    try:
        raw = json.loads(open(path).read())
    except FileNotFoundError:
        raise GenforgeError(f"{path}: no such file; is this a genforge run directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenforgeError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise GenforgeError(f"{path}: expected a JSON object")
    return build_config(raw)


# --- validation: every range and cross-field check, before anything is written ----------

TRAIN_SEED_MAX = 2**32 - 1  # train.seed (and a lab's seed, a training seed too): 0 to this

# What each general key allows (families hold their own model.* table beside ``check_config``).
RANGES = {
    "data.image_size": "[8, 1024]", "data.brightness": "[0, 1]", "data.contrast": "[0, 1]",
    "data.test_share": "[0, 1)",
    "optim.lr": "> 0", "optim.lr_d": ">= 0", "optim.lr_g": ">= 0",
    "optim.beta1": "[0, 1)", "optim.beta2": "[0, 1)", "optim.weight_decay": ">= 0",
    "optim.final_lr": "[0, 1]",
    "train.steps": ">= 0", "train.minutes": ">= 0", "train.batch_size": ">= 1", "train.seed": f"[0, {TRAIN_SEED_MAX}]",
    "train.threads": ">= 0", "train.log_every": ">= 1", "train.sample_every": ">= 1", "train.checkpoint_every": ">= 1",
    "train.ema_decay": "[0, 1)", "train.eval_samples": ">= 1", "train.eval_every": ">= 0", "train.eval_n": ">= 2",
    "train.nan_skips": ">= 1",
}


def validate(cfg: RunConfig, data_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
             two_domain_data: bool = False) -> RunConfig:
    """Every check of a run's config, in one place, before anything is written: each key's range, the
    budget and schedule rules, and the family's own ``check_config``. ``data_shape`` (one item's shape,
    (C, H, W) or (D,)), ``num_classes`` and ``two_domain_data`` (the loaded set has a domain B) add the
    checks that need the data, once it is loaded.

    Raises ``GenforgeError`` (one line: the key, its value and what is allowed); returns ``cfg``."""
    for section in ("data", "optim", "train"):
        check_ranges(getattr(cfg, section), {k.split(".", 1)[1]: rule for k, rule in RANGES.items()
                                             if k.startswith(section + ".")}, section + ".")
    if cfg.data.channels not in (1, 3):
        raise GenforgeError(f"data.channels={cfg.data.channels}: must be 1 (grey) or 3 (RGB)")
    tcfg = cfg.train
    if tcfg.steps <= 0 and tcfg.minutes <= 0:
        raise GenforgeError("no budget: give a number of steps or minutes to train (train.steps or train.minutes)")
    if cfg.optim.schedule != "constant" and tcfg.steps <= 0:
        raise GenforgeError(f"optim.schedule={cfg.optim.schedule} decays the learning rate by train.steps: "
                            "give a budget in steps (train.steps), or set optim.schedule=constant to train for a number of minutes")
    if tcfg.device not in ("auto", "cpu", "cuda") and not (tcfg.device.startswith("cuda:")
                                                           and tcfg.device[5:].isdigit()):
        raise GenforgeError(f"train.device={tcfg.device}: must be auto, cpu, cuda or cuda:N")
    family = registry.family(cfg.family)
    if not family.two_domains:
        if cfg.data.path_b or cfg.data.dataset == FOLDERS:
            what = "data.path_b" if cfg.data.path_b else f"data.dataset={FOLDERS}"
            raise GenforgeError(f"{what} is a second domain, for a translator (the discogan family); the "
                                f"{cfg.family} family trains on one dataset and would ignore it: leave it out (one "
                                f"folder: data.dataset=folder:PATH)")
        if two_domain_data:
            raise GenforgeError(f"data.dataset={cfg.data.dataset} has two domains (A and B), for a translator (the "
                                f"discogan family); the {cfg.family} family trains on one and would ignore B: use a "
                                f"one-domain set (mnist-10k, fashion-mnist, a mixture such as ring-8, or "
                                f"data.dataset=folder:PATH)")
    uncompilable = family.uncompilable(cfg.model)
    if tcfg.compile == "on" and uncompilable:
        raise GenforgeError(f"train.compile=on: {uncompilable}; use train.compile=off or auto")
    family.check_config(cfg, data_shape, num_classes)
    return cfg
