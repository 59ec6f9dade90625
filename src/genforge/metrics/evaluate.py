"""Evaluating a trained run (or a real split) with every metric that applies to it.

The metrics live in a registry (``METRICS``), as in StyleGAN2: each entry names the
model families it applies to (``None`` = any generator, and real data) and a function
from :class:`EvalInputs` to ``{name: value}``. Reference features of each real split
are cached on disk, keyed by extractor hash + dataset + split + image size.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from genforge.errors import GenforgeError
from genforge.metrics import EXTRACTOR_SHA256, core
from genforge.metrics.extractor import Classifier, extract, extractor_for, load_extractor

PR_MAX = 10_000  # precision/recall on at most this many points per side (O(N^2) distances)
KID_SUBSETS = 100  # as StyleGAN2 and torchmetrics (tests lower it for speed)


@dataclass
class FeatureSet:
    """Extractor outputs of a set of images: features (N, 128) and class logits (N, C)."""

    features: torch.Tensor
    logits: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]

    def subset(self, index: torch.Tensor) -> FeatureSet:
        return FeatureSet(self.features[index], self.logits[index])


@dataclass
class EvalInputs:
    """What a metric function may use."""

    real: FeatureSet  # the reference split (the test split)
    fake: FeatureSet  # generated samples (or a held-out real split, for the floor)
    seed: int = 0
    model: Any = None  # the GenerativeModel, for likelihood metrics
    test_data: Any = None  # ImageData of the test split at the model's image size
    device: torch.device = torch.device("cpu")
    nll_samples: int = 5000
    progress: bool = False


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[EvalInputs], dict[str, Any]]
    families: tuple[str, ...] | None  # None: any generator, and real data
    help: str


METRICS: dict[str, Metric] = {}


def register(name: str, help: str, families: tuple[str, ...] | None = None):
    def wrap(fn: Callable[[EvalInputs], dict[str, Any]]):
        METRICS[name] = Metric(name, fn, families, help)
        return fn
    return wrap


@register("fid", "Frechet distance between Gaussians fitted to real and generated features (lower is better)")
def _fid(inputs: EvalInputs) -> dict[str, Any]:
    return {"fid": core.fid(inputs.real.features, inputs.fake.features)}


@register("kid", "kernel (MMD^2, cubic polynomial) distance, mean and std over 100 subsets (lower is better)")
def _kid(inputs: EvalInputs) -> dict[str, Any]:
    mean, std = core.kid(inputs.real.features, inputs.fake.features, subsets=KID_SUBSETS, seed=inputs.seed)
    return {"kid": mean, "kid_std": std}


@register("precision_recall", "share of samples on the real manifold / of real images on the sample manifold (k=3)")
def _precision_recall(inputs: EvalInputs) -> dict[str, Any]:
    n = min(len(inputs.real), len(inputs.fake), PR_MAX)  # equal counts: the k-NN radii depend on N
    precision, recall = core.precision_recall(inputs.real.features[:n], inputs.fake.features[:n])
    return {"precision": precision, "recall": recall}


@register("coverage", "class histogram of the samples by the domain classifier, its entropy, confident share")
def _coverage(inputs: EvalInputs) -> dict[str, Any]:
    return core.class_coverage(inputs.fake.logits)


@register("likelihood", "test negative ELBO and importance-weighted NLL in nats (VAE.evaluate)", families=("vae",))
def _likelihood(inputs: EvalInputs) -> dict[str, Any]:
    from genforge.models.base import Context

    ctx = Context(Path("."), None, inputs.test_data, inputs.device, inputs.nll_samples, inputs.progress)
    return inputs.model.evaluate(ctx)


def compute_metrics(inputs: EvalInputs, family: str | None) -> dict[str, Any]:
    """Every registered metric that applies to ``family`` (None = real data: the generic ones)."""
    values: dict[str, Any] = {}
    for metric in METRICS.values():
        if metric.families is None or (family is not None and family in metric.families):
            values.update(metric.fn(inputs))
    return values


# --- cached reference features of the real splits ---------------------------------------

def cache_dir() -> Path:
    """``$GENFORGE_CACHE``, else ``$XDG_CACHE_HOME/genforge/eval`` or ``~/.cache/genforge/eval``.

    Not the data root itself: shared dataset folders are often read-only.
    """
    if os.environ.get("GENFORGE_CACHE"):
        return Path(os.environ["GENFORGE_CACHE"]).expanduser()
    base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "genforge" / "eval"


def _key(extractor_name: str) -> str:
    return f"{extractor_name}-{EXTRACTOR_SHA256[extractor_name][:16]}"


def reference_features(dataset: str, split: str, image_size: int, extractor: Classifier, extractor_name: str,
                       root: str | None = None) -> FeatureSet:
    """Features and logits of a real split at ``image_size``, computed once and cached on disk."""
    from safetensors.torch import load_file, save_file

    from genforge.data.datasets import load_images, resize_images

    path = cache_dir() / f"{dataset}-{split}-{image_size}px-{_key(extractor_name)}.safetensors"
    if path.is_file():
        try:
            cached = load_file(str(path))
            return FeatureSet(cached["features"], cached["logits"])
        except Exception:  # a torn or foreign cache file: recompute it
            pass
    data = load_images(dataset, split, root)
    features, logits = extract(extractor, resize_images(data.images, image_size), with_logits=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({"features": features.contiguous(), "logits": logits.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return FeatureSet(features, logits)


def floor_size(dataset: str, n: int, root: str | None = None) -> int:
    """Held-out real images in the floor: n, at most the size of either split (1,000 for mnist-10k)."""
    from genforge.data.datasets import load_images

    return min(n, len(load_images(dataset, "train", root)), len(load_images(dataset, "test", root)))


def evaluate_real(dataset: str, n: int = 10_000, seed: int = 0, image_size: int = 28, root: str | None = None,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """The floor: ``n`` random train images scored as if they were samples, against the test split.

    A perfect generator of the training distribution would score about this. Cached as JSON.
    """
    name = extractor_for(dataset)
    extractor = load_extractor(name, device=device)
    n = floor_size(dataset, n, root)
    path = cache_dir() / f"floor-{dataset}-{image_size}px-n{n}-seed{seed}-{_key(name)}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    real = reference_features(dataset, "test", image_size, extractor, name, root)
    train = reference_features(dataset, "train", image_size, extractor, name, root)
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    values = compute_metrics(EvalInputs(real, train.subset(index), seed), family=None)
    result = {**values, "dataset": dataset, "samples": n, "reference": f"{dataset}/test ({len(real)})",
              "extractor": name, "extractor_sha256": EXTRACTOR_SHA256[name], "seed": seed}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return result


def evaluate_run(run_dir: str | Path, n: int = 10_000, seed: int = 0, device: torch.device | str = "cpu",
                 root: str | None = None, nll_samples: int | None = None, progress: bool = False,
                 write: bool = True) -> dict[str, Any]:
    """Score the newest checkpoint of ``run_dir`` on ``n`` samples; writes ``RUN_DIR/eval.json``.

    Returns ``{metric: value, ..., "extractor", "extractor_sha256", "samples", "seed", "step",
    "dataset", "reference", "floor": {the real-vs-real values}}``.
    """
    from genforge.data.datasets import load_images, resize_images
    from genforge.runs import load_model

    if n < 2:
        raise GenforgeError(f"--n must be at least 2, not {n}")
    run_dir = Path(run_dir)
    cfg, model, step = load_model(run_dir, device)
    root = cfg.data.root or root
    name = extractor_for(cfg.data.dataset)
    extractor = load_extractor(name, device=device)
    real = reference_features(cfg.data.dataset, "test", cfg.data.image_size, extractor, name, root)

    with model.ema_weights():
        images = model.sample(n, torch.Generator().manual_seed(seed))  # (n, C, H, W) in [0, 1]
    fake = FeatureSet(*extract(extractor, images, with_logits=True))
    test = load_images(cfg.data.dataset, "test", root)
    test = type(test)(test.name, "test", resize_images(test.images, cfg.data.image_size), test.labels, test.classes)
    torch.manual_seed(seed)  # the likelihood estimates draw noise from the global RNG
    inputs = EvalInputs(real, fake, seed, model, test, torch.device(device),
                        nll_samples or cfg.train.eval_samples, progress)
    with model.ema_weights():
        values = compute_metrics(inputs, cfg.family)
    result = {**values, "extractor": name, "extractor_sha256": EXTRACTOR_SHA256[name], "samples": n, "seed": seed,
              "step": step, "family": cfg.family, "dataset": cfg.data.dataset,
              "reference": f"{cfg.data.dataset}/test ({len(real)})",
              "floor": evaluate_real(cfg.data.dataset, n, seed, cfg.data.image_size, root, device)}
    if write:
        tmp = run_dir / "eval.json.tmp"
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, run_dir / "eval.json")
    return result


# --- the cheap metric during training ---------------------------------------------------

class TrainingEval:
    """FID of ``n`` samples against the test split every N steps, plus the mode-collapse alarm.

    Sampling uses its own generator seeded from (seed, step), so the training RNG stream is
    untouched and a resumed run computes the same values.
    """

    def __init__(self, dataset: str, image_size: int, n: int, seed: int, device: torch.device,
                 root: str | None = None):
        self.name = extractor_for(dataset)
        self.extractor = load_extractor(self.name, device=device)
        self.real = reference_features(dataset, "test", image_size, self.extractor, self.name, root)
        self.real_stats = core.feature_stats(self.real.features)
        self.n, self.seed, self.warned = n, seed, False

    def __call__(self, model, step: int) -> tuple[dict[str, float], str | None]:
        """({"eval/fid", "eval/class_entropy", "eval/classes_covered"}, a collapse warning once or None)."""
        with torch.no_grad(), model.ema_weights():
            images = model.sample(self.n, torch.Generator().manual_seed(self.seed * 1_000_003 + step + 7))
        features, logits = extract(self.extractor, images, with_logits=True)
        fid = core.frechet_distance(*self.real_stats, *core.feature_stats(features))
        coverage = core.class_coverage(logits)
        warning = None
        if not self.warned:
            warning = core.collapse_warning(coverage, logits.shape[1])
            self.warned = warning is not None
        values = {"eval/fid": fid, "eval/class_entropy": coverage["class_entropy"],
                  "eval/classes_covered": float(coverage["classes_covered"])}
        return values, (f"step {step}: {warning}" if warning else None)


def format_table(result: dict[str, Any]) -> str:
    """The scalar metrics, one per line, with the real-vs-real floor beside them."""
    floor = result.get("floor", {})
    skip = {"samples", "seed", "step", "extractor_sha256"}
    lines = [f"{'metric':24s} {'value':>12s} {'real floor':>12s}"]
    for key, value in result.items():
        if key in skip or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        other = floor.get(key)
        shown = f"{other:12.4f}" if isinstance(other, (int, float)) and math.isfinite(other) else f"{'':12s}"
        lines.append(f"{key:24s} {value:12.4f} {shown}")
    if "class_histogram" in result:
        lines.append("class_histogram          " + " ".join(f"{s:.3f}" for s in result["class_histogram"]))
    return "\n".join(lines)
