"""Evaluating a trained run (or a real split) with every metric that applies to it.

The metrics live in a registry (``METRICS``), as in StyleGAN2: each entry names the
model families it applies to (``None`` = any generator, and real data), the feature
spaces it works in and a function from :class:`EvalInputs` to ``{name: value}``.
Reference features of each real split are cached on disk, keyed by extractor hash +
dataset + split + image size.

Two feature spaces: ``classifier`` (the trained extractor of MNIST / Fashion-MNIST, scored
against the test split) and ``pixel`` (image folders, which have neither an extractor nor a
held-out split: a fixed random projection of 32x32 pixels, scored against the training
images, with colour statistics and a nearest-neighbour copy check). eval.json says which
metrics were computed and why the others were not.
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
from genforge.runtime import Distributed

PR_MAX = 10_000  # precision/recall on at most this many points per side (O(N^2) distances)
KID_SUBSETS = 100  # as StyleGAN2 and torchmetrics (tests lower it for speed)


PIXEL_NN_QUERIES = 2_000  # samples in the nearest-neighbour copy check (an (M, N) distance matrix)
PIXEL_NN_REFERENCES = 10_000  # training images it searches at most (a seeded subset beyond that)
NEAR_COPY_QUANTILE = 0.05  # a "near copy" is as close to a training image as the closest 5% of training pairs


@dataclass
class FeatureSet:
    """Extractor outputs of a set of images: features (N, 128) and class logits (N, C).
    In the pixel space: random projections (N, 128), no logits (N, 0), and the downscaled
    pixels themselves (N, C * 32 * 32) in [0, 1]."""

    features: torch.Tensor
    logits: torch.Tensor
    pixels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    def subset(self, index: torch.Tensor) -> FeatureSet:
        return FeatureSet(self.features[index], self.logits[index],
                          None if self.pixels is None else self.pixels[index])


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
    channels: int = 1  # image channels (the pixel-space colour statistics need them)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[EvalInputs], dict[str, Any]]
    families: tuple[str, ...] | None  # None: any generator, and real data
    help: str
    spaces: tuple[str, ...] = ("classifier",)  # the feature spaces it is computed in
    why_not: str = ""  # why it is not computed in the other spaces, when NOT_IN_SPACE's reason does not fit


METRICS: dict[str, Metric] = {}
SPACES = ("classifier", "pixel")
# Why a metric of one space is not computed in the other: {(metric's space, run's space): reason}.
NOT_IN_SPACE = {
    ("classifier", "pixel"): "needs a feature extractor trained on the domain, and {dataset} has none "
                             "(extractors exist for mnist, mnist-10k and fashion-mnist)",
    ("pixel", "classifier"): "pixel-space statistics stand in where no extractor exists; {dataset} has one, "
                             "whose features the classifier metrics use",
}


def register(name: str, help: str, families: tuple[str, ...] | None = None,
             spaces: tuple[str, ...] = ("classifier",), why_not: str = ""):
    def wrap(fn: Callable[[EvalInputs], dict[str, Any]]):
        METRICS[name] = Metric(name, fn, families, help, spaces, why_not)
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


@register("likelihood", "test negative ELBO and importance-weighted NLL in nats (VAE.evaluate)", families=("vae",),
          why_not="needs a held-out test split, and an image folder has none")
def _likelihood(inputs: EvalInputs) -> dict[str, Any]:
    from genforge.models.base import Context

    ctx = Context(Path("."), None, inputs.test_data, inputs.device, inputs.nll_samples, inputs.progress)
    return inputs.model.evaluate(ctx)


@register("pixel_fid", "Frechet distance of Gaussians fitted to a fixed random projection (128-d) of 32x32 pixels",
          spaces=("pixel",))
def _pixel_fid(inputs: EvalInputs) -> dict[str, Any]:
    return {"pixel_fid": core.fid(inputs.real.features, inputs.fake.features)}


@register("pixel_kid", "KID (cubic kernel MMD^2) on the same random projection of pixels", spaces=("pixel",))
def _pixel_kid(inputs: EvalInputs) -> dict[str, Any]:
    mean, std = core.kid(inputs.real.features, inputs.fake.features, subsets=KID_SUBSETS, seed=inputs.seed)
    return {"pixel_kid": mean, "pixel_kid_std": std}


@register("colour", "per-channel mean and std of the pixels (32x32, [0, 1]) of samples and training images",
          spaces=("pixel",))
def _colour(inputs: EvalInputs) -> dict[str, Any]:
    def moments(pixels: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        std, mean = torch.std_mean(pixels.view(pixels.shape[0], channels, -1), dim=(0, 2))  # (C,) each, no copy
        return mean.double(), std.double()

    channels = inputs.channels
    real_mean, real_std = moments(inputs.real.pixels, channels)
    fake_mean, fake_std = moments(inputs.fake.pixels, channels)
    return {"colour_mean_diff": float((fake_mean - real_mean).abs().mean()),
            "colour_std_diff": float((fake_std - real_std).abs().mean()),
            "colour_mean": [round(float(v), 6) for v in fake_mean], "colour_std": [round(float(v), 6) for v in fake_std],
            "colour_mean_train": [round(float(v), 6) for v in real_mean],
            "colour_std_train": [round(float(v), 6) for v in real_std]}


@register("nearest", "copy check: mean pixel distance of samples to their nearest training image, against the "
          "training images' distance to their nearest other one", spaces=("pixel",))
def _nearest(inputs: EvalInputs) -> dict[str, Any]:
    from genforge.metrics.nearest import nearest

    generator = torch.Generator().manual_seed(inputs.seed)
    references = inputs.real.pixels
    if references.shape[0] > PIXEL_NN_REFERENCES:
        references = references[torch.randperm(references.shape[0], generator=generator)[:PIXEL_NN_REFERENCES]]
    train_to_train, _ = nearest(references, references, exclude_self=True)
    sample_to_train, _ = nearest(inputs.fake.pixels[:PIXEL_NN_QUERIES], references)
    threshold = torch.quantile(train_to_train.double(), NEAR_COPY_QUANTILE)
    return {"nn_sample_to_train": float(sample_to_train.mean()), "nn_train_to_train": float(train_to_train.mean()),
            "nn_ratio": float(sample_to_train.mean() / train_to_train.mean().clamp_min(1e-12)),
            "near_copies": float((sample_to_train.double() <= threshold).double().mean())}


def applies(metric: Metric, family: str | None, space: str) -> bool:
    return space in metric.spaces and (metric.families is None or (family is not None and family in metric.families))


def compute_metrics(inputs: EvalInputs, family: str | None, space: str = "classifier") -> dict[str, Any]:
    """Every registered metric that applies to ``family`` (None = real data: the generic ones) in ``space``."""
    values: dict[str, Any] = {}
    for metric in METRICS.values():
        if applies(metric, family, space):
            values.update(metric.fn(inputs))
    return values


def availability(family: str | None, space: str, dataset: str) -> dict[str, Any]:
    """eval.json's account of the registry: the metrics computed, and why each other one was not."""
    available, unavailable = [], {}
    for metric in METRICS.values():
        if applies(metric, family, space):
            available.append(metric.name)
        elif metric.families is not None and family not in metric.families:
            unavailable[metric.name] = f"only for the {', '.join(metric.families)} family; this run is {family}"
        else:
            why = metric.why_not or NOT_IN_SPACE[(metric.spaces[0], space)]
            unavailable[metric.name] = why.format(dataset=dataset)
    return {"feature_space": space, "metrics_available": available, "metrics_unavailable": unavailable}


# --- cached reference features of the real splits ---------------------------------------

def cache_dir() -> Path:
    """``$GENFORGE_CACHE``, else ``$XDG_CACHE_HOME/genforge/eval`` or ``~/.cache/genforge/eval``."""
    from genforge.data.root import cache_dir as kind_dir

    return kind_dir("eval")


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
    from genforge.data.datasets import is_folder_dataset

    if is_folder_dataset(dataset):
        raise GenforgeError(f"--real scores a test split with a trained extractor, and the image folder '{dataset}' "
                            "has neither; `genforge eval RUN_DIR` of a run on it reports the folder's floor "
                            "(one half of its images against the other)")
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
    "dataset", "reference", "floor": {the real-vs-real values}, "feature_space",
    "metrics_available": [...], "metrics_unavailable": {metric: why}}``. Image folders
    without an extractor are scored in the pixel space (see the module doc).
    """
    from genforge.data.datasets import is_folder_dataset
    from genforge.metrics.extractor import DOMAINS
    from genforge.runs import load_model

    if n < 2:
        raise GenforgeError(f"--n must be at least 2, not {n}")
    run_dir = Path(run_dir)
    cfg, model, step = load_model(run_dir, device)
    root = cfg.data.root or root
    space = "pixel" if is_folder_dataset(cfg.data.dataset) and cfg.data.dataset not in DOMAINS else "classifier"
    if space == "pixel":
        result = _evaluate_pixels(cfg, model, n, seed, root)
    else:
        result = _evaluate_features(cfg, model, n, seed, device, root, nll_samples, progress)
    result.update({"step": step, "family": cfg.family, "dataset": cfg.data.dataset,
                   **availability(cfg.family, space, cfg.data.dataset)})
    if write:
        tmp = run_dir / "eval.json.tmp"
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, run_dir / "eval.json")
    return result


def _evaluate_features(cfg, model, n: int, seed: int, device, root: str | None, nll_samples: int | None,
                       progress: bool) -> dict[str, Any]:
    """The classifier space: samples and the test split through the domain's extractor."""
    from genforge.data.datasets import load_images, resize_images

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
    return {**values, "extractor": name, "extractor_sha256": EXTRACTOR_SHA256[name], "samples": n, "seed": seed,
            "reference": f"{cfg.data.dataset}/test ({len(real)})",
            "floor": evaluate_real(cfg.data.dataset, n, seed, cfg.data.image_size, root, device)}


SAMPLE_CHUNK = 500  # samples generated (and reduced to 32x32 pixels) at a time: 10,000 at 128 px would be 2 GB


def pixel_set(chunks) -> FeatureSet:
    """The pixel-space description of images given in chunks ((B, C, H, W) uint8 or [0, 1]):
    downscaled pixels, their random projection, no logits."""
    from genforge.metrics.nearest import pixel_vectors, project

    pixels = torch.cat([pixel_vectors(chunk) for chunk in chunks])
    return FeatureSet(project(pixels), torch.empty(pixels.shape[0], 0), pixels)


def _evaluate_pixels(cfg, model, n: int, seed: int, root: str | None) -> dict[str, Any]:
    """The pixel space: samples against the folder's training images (it has no held-out split);
    the floor is one random half of the training images against the other half."""
    from genforge.data.datasets import load_data
    from genforge.metrics.nearest import PIXEL_SIDE, PROJECTION_DIM, projection_id

    train = load_data(cfg.data, "train", root)
    real = pixel_set(train.images.split(SAMPLE_CHUNK))
    generator = torch.Generator().manual_seed(seed)
    with model.ema_weights():
        fake = pixel_set(model.sample(min(SAMPLE_CHUNK, n - start), generator) for start in range(0, n, SAMPLE_CHUNK))
    channels = train.images.shape[1]
    values = compute_metrics(EvalInputs(real, fake, seed, channels=channels), cfg.family, "pixel")
    floor: dict[str, Any] = {}
    if len(real) >= 8:  # two halves of at least 4: enough for every statistic, if not for precision
        order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
        half = len(real) // 2
        floor = compute_metrics(EvalInputs(real.subset(order[half:]), real.subset(order[:half]), seed,
                                           channels=channels), None, "pixel")
        floor["samples"] = half
    side = min(PIXEL_SIDE, cfg.data.image_size)
    return {**values, "extractor": f"pixels at {side}x{side}, fixed random projection to {PROJECTION_DIM}",
            "extractor_sha256": projection_id(real.pixels.shape[1]), "samples": n, "seed": seed,
            "reference": f"{cfg.data.dataset} training images ({len(real)}; a folder has no held-out split)",
            "floor": floor}


# --- the cheap metric during training ---------------------------------------------------

class TrainingEval:
    """FID of ``n`` samples against the test split every N steps, plus the mode-collapse alarm.

    Sampling uses its own generator seeded from (seed, step), so the training RNG stream is
    untouched and a resumed run computes the same values.
    """

    def __init__(self, dataset: str, image_size: int, n: int, seed: int, device: torch.device,
                 root: str | None = None, ranks: Distributed | None = None):
        self.name = extractor_for(dataset)
        self.extractor = load_extractor(self.name, device=device)
        self.real = reference_features(dataset, "test", image_size, self.extractor, self.name, root)
        self.real_stats = core.feature_stats(self.real.features)
        self.n, self.seed, self.warned = n, seed, False
        self.ranks, self.device = ranks or Distributed(), device

    def __call__(self, model, step: int) -> tuple[dict[str, float], str | None]:
        """({"eval/fid", "eval/class_entropy", "eval/classes_covered"}, a collapse warning once or None).
        Under torchrun each rank samples and embeds its share; every rank gets the same values."""
        ranks = self.ranks
        share = -(-self.n // ranks.world)  # ceil(n / processes): all n when there is one
        seed = self.seed * 1_000_003 + step + 7 + 104_729 * ranks.rank
        with torch.no_grad(), model.ema_weights():
            images = model.sample(share, torch.Generator().manual_seed(seed))
        features, logits = extract(self.extractor, images, with_logits=True)
        if ranks.active:
            both = ranks.gather(torch.cat([features, logits], 1).to(self.device)).cpu()[:self.n]
            features, logits = both[:, :features.shape[1]], both[:, features.shape[1]:]
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
