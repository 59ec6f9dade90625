"""The one registry that judges a trained model, at its checkpoints, at training's end and in
``genforge eval`` (and the studio, through ``genforge.api``).

Every metric is an entry of :data:`METRICS`, registered with the kinds of data it applies to
(:data:`KINDS`: toy points, two-domain points or images, a named image set with a trained
extractor, an image folder), an optional condition on the model's declared capabilities, the
units of its figures and the stages it runs at: ``checkpoint`` (cheap, seeded by the step, so
a resumed run logs the same values), ``final`` (training's end: :func:`final_metrics`) and
``eval`` (:func:`evaluate_loaded`, which writes ``eval.json`` with the metrics that ran and,
for every other one, why not). As in StyleGAN2, a metric is a function; the feature spaces its
figures are computed in live in :mod:`genforge.metrics.features`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from genforge.errors import GenforgeError
from genforge.atomic import write_json_atomic
from genforge.metrics import EXTRACTOR_SHA256, core
from genforge.metrics.extractor import DOMAINS, extract, extractor_for, load_extractor
from genforge.metrics.features import (SAMPLE_CHUNK, EvalInputs, FeatureSet, TrainingEval,  # noqa: F401 (TrainingEval:
                                       cache_dir, extractor_key, floor_size, pixel_set,  # the loop and bench import it here)
                                       reference_features, sample_chunks)

PR_MAX = 10_000  # precision/recall on at most this many points per side (O(N^2) distances)
KID_SUBSETS = 100  # as StyleGAN2 and torchmetrics (tests lower it for speed)
PIXEL_NN_QUERIES = 2_000  # samples in the nearest-neighbour copy check (an (M, N) distance matrix)
PIXEL_NN_REFERENCES = 10_000  # training images it searches at most (a seeded subset beyond that)
NEAR_COPY_QUANTILE = 0.05  # a "near copy" is as close to a training image as the closest 5% of training pairs
KID_SUBSET_SIZE = 1000  # core.kid's subset size (smaller where a side has fewer)
FID_TRUSTED = 2_000  # images per side below which FID's upward bias (~1/N) dominates a comparison
CHECKPOINT_SEED = 1_000_003  # checkpoint metrics sample from seed CHECKPOINT_SEED + step, never the training RNG

KINDS = {
    "points": "toy points on a known mixture (1-D or 2-D)",
    "two-domain-points": "two domains of toy points (a translator)",
    "two-domain-images": "two image domains (a translator)",
    "named-images": "a named image set with a trained extractor (mnist, mnist-10k, fashion-mnist)",
    "image-folder": "images without a trained extractor (an image folder): scored in pixel space",
}
STAGES = ("checkpoint", "final", "eval")


def data_kind(capabilities: Any, dataset: str) -> str:
    """The kind of data (a key of :data:`KINDS`) a model of these capabilities was trained on."""
    if capabilities.translator:
        return "two-domain-points" if capabilities.data == "points" else "two-domain-images"
    if capabilities.data == "points":
        return "points"
    return "named-images" if dataset in DOMAINS else "image-folder"


@dataclass
class Judging:
    """What a metric may use: the model (in eval mode with its EMA weights), its data and the
    settings of this evaluation. The expensive parts (samples, features, splits) are computed on
    first use and shared by the metrics that need them."""

    model: Any
    dataset: str
    kind: str
    seed: int = 0
    n: int = 10_000  # samples for the sample-quality metrics
    device: torch.device = torch.device("cpu")
    data_cfg: Any = None  # the run's DataConfig, to load a split that is not given
    root: str | None = None
    train_data: Any = None
    test_data: Any = None
    nll_samples: int = 5000
    show_progress: bool = False
    cache: dict[str, Any] = field(default_factory=dict)

    def generator(self) -> torch.Generator:
        """A fresh CPU generator seeded by ``seed`` (never the training RNG)."""
        return torch.Generator().manual_seed(self.seed)

    def split(self, name: str) -> Any:
        """The ``train`` or ``test`` split at the model's image size, as the run trained on it."""
        given = self.train_data if name == "train" else self.test_data
        if given is not None:
            return given
        if name not in self.cache:
            from genforge.data.datasets import load_data

            self.cache[name] = load_data(self.data_cfg, name, self.root)
        return self.cache[name]

    def features(self) -> EvalInputs:
        """Samples and reference images in this kind's feature space (classifier or pixel)."""
        if "features" not in self.cache:
            self.cache["features"] = _pixel_inputs(self) if self.kind == "image-folder" else _classifier_inputs(self)
        return self.cache["features"]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[Judging], dict[str, Any]]
    kinds: tuple[str, ...]
    help: str
    units: dict[str, str]  # figure -> its unit and scale, printed beside it
    stages: tuple[str, ...] = ("final", "eval")
    applies: Callable[[Any], bool] | None = None  # a further condition on the model (its capabilities)
    requires: str = ""  # what ``applies`` asks for, in words: why the metric did not run
    why_not: dict[str, str] = field(default_factory=dict)  # run's kind -> why not, where the generic reason is vague
    artefact: str | None = None  # at training's end its values are also written to this file of the run
    on_features: Callable[[EvalInputs], dict[str, Any]] | None = None  # a sample-quality metric (with a real floor)
    names: tuple[str, ...] | None = None  # its figures' names where they are not the units' keys (a translator's)

    def figures(self) -> list[str]:
        """The names of the figures this metric can give (its result's keys), known before it runs."""
        return list(self.names) if self.names is not None else list(self.units)


METRICS: dict[str, Metric] = {}


def register(name: str, help: str, kinds: tuple[str, ...], units: dict[str, str], **options):
    """Register ``fn(judging) -> {figure: value}`` as metric ``name`` (see :class:`Metric`)."""
    def wrap(fn: Callable[[Judging], dict[str, Any]]):
        METRICS[name] = Metric(name, fn, kinds, help, units, **options)
        return fn
    return wrap


def register_on_features(name: str, help: str, kind: str, units: dict[str, str], why_not: dict[str, str]):
    """Register ``fn(EvalInputs)``, a sample-quality metric of ``kind``'s feature space: it runs in
    ``genforge eval`` on the samples, and on held-out real images for the floor."""
    def wrap(fn: Callable[[EvalInputs], dict[str, Any]]):
        METRICS[name] = Metric(name, lambda judging: fn(judging.features()), (kind,), help, units, ("eval",),
                               why_not=why_not, on_features=fn)
        return fn
    return wrap


# --- where the metrics do not apply, in words --------------------------------------------

NO_EXTRACTOR = {"image-folder": "needs a feature extractor trained on the domain, and {dataset} has none "
                                "(extractors exist for mnist, mnist-10k and fashion-mnist)"}
HAS_EXTRACTOR = {"named-images": "pixel-space statistics stand in where no extractor exists; {dataset} has one, "
                                 "whose features the classifier metrics use"}
LOWER = "lower is better"


def _conditional(model: Any) -> bool:
    return model.capabilities.classes > 0


def _likelihood_model(model: Any) -> bool:
    return model.capabilities.likelihood


def _class_histogram_on(model: Any) -> bool:
    return not model.capabilities.classes and bool(getattr(model.cfg, "class_histogram", False))


# --- the metrics ---------------------------------------------------------------------------

@register("modes", "modes captured, % high-quality samples and reverse KL of 2,500 samples on the toy's mixture "
          "(VEEGAN / PacGAN's protocol)", ("points",),
          {"modes": "modes with a high-quality sample, of modes_total", "hq": "% of samples within 3 std of a mode",
           "reverse_kl": "nats, KL(mode histogram || uniform); 0 = even", "modes_total": "modes of the mixture"},
          stages=("checkpoint", "final", "eval"))
def _modes(judging: Judging) -> dict[str, Any]:
    from genforge.data.toy import MIXTURES
    from genforge.metrics.modes import SAMPLES, mode_metrics

    spec = MIXTURES.get(judging.dataset)
    if spec is None:
        return {}
    return mode_metrics(judging.model.sample(SAMPLES, judging.generator()), torch.tensor(spec.means), spec.std)


TRANSLATION_DIRECTIONS = ("a2b", "b2a")
RECONSTRUCTIONS = ("recon_a", "recon_b")  # each domain's cycle A -> B -> A, B -> A -> B
POINT_FIGURES = (*(f"{d}_{key}" for d in TRANSLATION_DIRECTIONS for key in (
    "high_quality", "modes_covered", "target_modes", "distinct_modes", "distinct_fraction", "mapping_purity")),
    *RECONSTRUCTIONS)
IMAGE_FIGURES = ("classifier_real_acc", *RECONSTRUCTIONS, *(f"{d}_{key}" for d in TRANSLATION_DIRECTIONS for key in (
    "domain_acc", "diversity", "diversity_ratio", "pixel_fid", "pixel_fid_untranslated", "fashion_classifier_acc",
    "feature_fid", "feature_diversity_ratio")))
TRANSLATION_UNITS = {"high_quality": "share of translations within 3 std of a target mode",
                     "modes_covered": "target modes reached", "target_modes": "modes of the target mixture",
                     "distinct_modes": "source modes on distinct targets",
                     "distinct_fraction": "share 0-1", "mapping_purity": "share 0-1", "recon": "MSE, network space",
                     "domain_acc": "share 0-1 the domain classifier files under the target",
                     "classifier_real_acc": "the domain classifier on real test images, share 0-1",
                     "diversity": "mean pairwise pixel distance", "diversity_ratio": "vs real target images; 1 = as varied",
                     # keyed per direction: "pixel_fid" alone is an image folder's sample FID
                     **{f"{d}_pixel_fid": f"translations vs real target images, pixels at 32x32 projected to 128-d, "
                        f"{LOWER}" for d in TRANSLATION_DIRECTIONS},
                     **{f"{d}_pixel_fid_untranslated": "the untranslated sources vs the target: where translation "
                        "starts" for d in TRANSLATION_DIRECTIONS},
                     "fashion_classifier_acc": "share 0-1 of target classes", "feature_fid": f"extractor features, {LOWER}",
                     "feature_diversity_ratio": "vs real target features; 1 = as varied"}


@register("translation_points", "per direction: where translated test points land on the target mixture "
          "(modes covered, distinct targets, purity, % high quality) and the reconstruction error",
          ("two-domain-points",), TRANSLATION_UNITS, artefact="translation_metrics.json", names=POINT_FIGURES)
def _translation_points(judging: Judging) -> dict[str, Any]:
    from genforge.metrics.translation import point_translation_metrics

    return point_translation_metrics(judging.model, judging.split("test"), judging.device)


@register("translation_images", "per direction: a domain classifier's verdict on translated test images, "
          "reconstruction error, diversity, pixel-space FID (no trained classifier needed: any two folders); on "
          "Fashion-MNIST the extractor's class accuracy and feature FID",
          ("two-domain-images",), TRANSLATION_UNITS, artefact="translation_metrics.json", names=IMAGE_FIGURES)
def _translation_images(judging: Judging) -> dict[str, Any]:
    from genforge.metrics.translation import image_translation_metrics

    return image_translation_metrics(judging.model, judging.split("train"), judging.split("test"), judging.device)


@register("class_accuracy", "share of 1,000 samples (100 per class) the evaluation classifier files under the class "
          "asked of the conditional generator", ("named-images",), {"class_accuracy": "share 0-1; 0.1 = chance"},
          applies=_conditional, requires="needs a conditional generator (model.conditional=concat|projection)")
def _class_accuracy(judging: Judging) -> dict[str, Any]:
    from genforge.metrics.classes import class_accuracy, classifier_for

    classifier = classifier_for(judging.dataset, str(judging.device))
    return {} if classifier is None else class_accuracy(judging.model, classifier, judging.generator())


@register("class_histogram", "the evaluation classifier's class histogram of 1,000 samples at each checkpoint "
          "(mode collapse over training; model.class_histogram=true)", ("named-images",),
          {"class_share_K": "share 0-1 of samples filed under class K"}, stages=("checkpoint",),
          applies=_class_histogram_on, requires="needs model.class_histogram=true on an unconditional GAN")
def _class_histogram(judging: Judging) -> dict[str, Any]:
    from genforge.metrics.classes import class_histogram, classifier_for

    classifier = classifier_for(judging.dataset, str(judging.device))
    return {} if classifier is None else class_histogram(judging.model, classifier, judging.generator())


@register("likelihood", "test negative ELBO and importance-weighted NLL (Burda et al.) of the test split",
          ("named-images",), {"test_neg_elbo": f"nats per image, {LOWER}", "test_recon": "nats per image",
                              "test_kl": "nats per image", "test_nll": f"nats per image, {LOWER}",
                              "nll_importance_samples": "samples per image"},
          applies=_likelihood_model, requires="needs a likelihood model (the vae family)",
          why_not={"image-folder": "an image folder's VAE is scored in bits per dimension (bits_per_dim)"})
def _likelihood(judging: Judging) -> dict[str, Any]:
    model = judging.model
    x = model.prepare(judging.split("test").images.to(judging.device))  # eval mode: rounded, fixed
    elbo = model.test_elbo(x)
    nll = model.importance_nll(x, k=judging.nll_samples, progress=judging.show_progress)
    return {"test_neg_elbo": elbo["loss"], "test_recon": elbo["recon"], "test_kl": elbo["kl"],
            "test_nll": nll, "nll_importance_samples": float(judging.nll_samples)}


IMAGE_NLL_SAMPLES = 64  # at most this many importance samples per image for a colour VAE (a conv decode each)


@register("bits_per_dim", "a colour VAE's test negative ELBO and importance-weighted NLL in bits per dimension "
          "(sub-pixel) on the folder's held-out test split (data.test_share)", ("image-folder",),
          {"test_bits_per_dim": f"bits per sub-pixel (negative ELBO), {LOWER}; 8 = uniform over 256 levels",
           "test_nll_bits_per_dim": f"bits per sub-pixel (importance-weighted NLL), {LOWER}",
           "test_neg_elbo": f"nats per image, {LOWER}", "test_kl": "nats per image",
           "test_images": "images in the test split", "nll_importance_samples": "samples per image"},
          applies=_likelihood_model, requires="needs a likelihood model (the vae family)",
          why_not={"named-images": "a named set's VAE is scored in nats per image (likelihood)"})
def _bits_per_dim(judging: Judging) -> dict[str, Any]:
    model = judging.model
    x = model.prepare(judging.split("test").images.to(judging.device))
    elbo = model.test_elbo(x, batch_size=256)
    k = min(judging.nll_samples, IMAGE_NLL_SAMPLES)
    nll = model.importance_nll(x, k=k, progress=judging.show_progress)
    return {"test_bits_per_dim": model.bits_per_dim(elbo["loss"]), "test_nll_bits_per_dim": model.bits_per_dim(nll),
            "test_neg_elbo": elbo["loss"], "test_kl": elbo["kl"], "test_images": float(x.shape[0]),
            "nll_importance_samples": float(k)}


def _distances_in(kind: str, prefix: str, features: str, why: dict[str, str]) -> None:
    """Register FID and KID of ``kind``'s feature space (figures ``{prefix}fid``, ``{prefix}kid``)."""
    def fid(inputs: EvalInputs) -> dict[str, Any]:
        return {f"{prefix}fid": core.fid(inputs.real.features, inputs.fake.features)}

    def kid(inputs: EvalInputs) -> dict[str, Any]:
        mean, std = core.kid(inputs.real.features, inputs.fake.features, subsets=KID_SUBSETS, seed=inputs.seed)
        return {f"{prefix}kid": mean, f"{prefix}kid_std": std}

    register_on_features(f"{prefix}fid", f"Frechet distance between Gaussians fitted to {features} of real and "
                         "generated images", kind,
                         {f"{prefix}fid": f"{LOWER}; biased up below {FID_TRUSTED:,} images a side"}, why)(fid)
    register_on_features(f"{prefix}kid", f"kernel distance (MMD^2, cubic polynomial kernel) on {features}, mean "
                         "and std over 100 subsets", kind,
                         {f"{prefix}kid": f"MMD^2, unbiased at any size, {LOWER}",
                          f"{prefix}kid_std": "its spread over the subsets"}, why)(kid)


_distances_in("named-images", "", "the extractor's 128-d features", NO_EXTRACTOR)
_distances_in("image-folder", "pixel_", "a fixed random projection (128-d) of 32x32 pixels", HAS_EXTRACTOR)


@register_on_features("precision_recall", "share of samples on the real manifold / of real images on the sample "
                      "manifold (k=3)", "named-images", {"precision": "share 0-1", "recall": "share 0-1"},
                      NO_EXTRACTOR)
def _precision_recall(inputs: EvalInputs) -> dict[str, Any]:
    n = min(len(inputs.real), len(inputs.fake), PR_MAX)  # equal counts: the k-NN radii depend on N
    precision, recall = core.precision_recall(inputs.real.features[:n], inputs.fake.features[:n])
    return {"precision": precision, "recall": recall}


@register_on_features("coverage", "class histogram of the samples by the domain classifier, its entropy, confident "
                      "share", "named-images", {"class_entropy": "nats; log 10 = 2.30 when even",
                                                 "classes_covered": "classes of 10", "confident_share": "share 0-1"},
                      NO_EXTRACTOR)
def _coverage(inputs: EvalInputs) -> dict[str, Any]:
    return core.class_coverage(inputs.fake.logits)


@register_on_features("colour", "per-channel mean and std of the pixels (32x32, [0, 1]) of samples and training "
                      "images", "image-folder", {"colour_mean_diff": "pixel value in [0, 1]",
                                              "colour_std_diff": "pixel value in [0, 1]"}, HAS_EXTRACTOR)
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


@register_on_features("nearest", "copy check: mean pixel distance of samples to their nearest training image, "
                      "against the training images' distance to their nearest other one", "image-folder",
                      {"nn_sample_to_train": "pixel L2 at 32x32", "nn_train_to_train": "pixel L2 at 32x32",
                       "nn_ratio": "samples vs training; < 1 = closer than the data", "near_copies": "share 0-1"},
                      HAS_EXTRACTOR)
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


# --- running the registry --------------------------------------------------------------------

def why_not(metric: Metric, model: Any, kind: str, dataset: str) -> str | None:
    """Why ``metric`` does not run on this model and data (None: it does): the model first (a GAN has
    no likelihood, whatever its data), then the kind of data."""
    if metric.applies is not None and not metric.applies(model):
        return f"{metric.requires}; this run is {model.family}"
    if kind not in metric.kinds:
        reason = metric.why_not.get(kind) or (f"applies to {' / '.join(KINDS[k] for k in metric.kinds)}; "
                                              f"this run's data: {KINDS[kind]}")
        return reason.format(dataset=dataset)
    return None


def run_metrics(judging: Judging, stage: str, progress: Callable[[str, int, int], None] | None = None,
                run_dir: Path | None = None) -> tuple[dict[str, Any], list[Metric]]:
    """Every metric of ``stage`` that applies to the judged model and data, in registry order:
    ({figure: value}, the metrics that ran). ``progress(metric, done, total)`` before each; with a
    ``run_dir``, a metric that declares an artefact also writes its values to that file."""
    chosen = [m for m in METRICS.values() if stage in m.stages
              and why_not(m, judging.model, judging.kind, judging.dataset) is None]
    values: dict[str, Any] = {}
    for done, metric in enumerate(chosen):
        if progress is not None:
            progress(metric.name, done, len(chosen))
        result = metric.fn(judging)
        if run_dir is not None and metric.artefact is not None:
            write_json_atomic(Path(run_dir) / metric.artefact, result)
        values.update(result)
    if progress is not None:
        progress("done", len(chosen), len(chosen))
    return values, chosen


def feature_metrics(inputs: EvalInputs, kind: str = "named-images") -> dict[str, Any]:
    """Every sample-quality metric of ``kind``'s feature space on given features (a floor, a test)."""
    values: dict[str, Any] = {}
    for metric in METRICS.values():
        if metric.on_features is not None and kind in metric.kinds:
            values.update(metric.on_features(inputs))
    return values


def checkpoint_metrics(model: Any, data: Any, step: int, device: torch.device | str = "cpu") -> dict[str, float]:
    """The cheap metrics logged at a checkpoint (``eval/...``: the toys' modes, the opt-in class
    histogram), from samples seeded by the step: no draw from the training RNG, so a resumed run
    logs the same values. The caller puts the model in inference mode."""
    judging = Judging(model, data.name, data_kind(model.capabilities, data.name), CHECKPOINT_SEED + step,
                      device=torch.device(device), train_data=data)
    values, _ = run_metrics(judging, "checkpoint")
    return {f"eval/{key}": value for key, value in values.items()}


def final_metrics(model: Any, ctx: Any) -> dict[str, float]:
    """Training's end: the family's metrics on its data (seed 0), e.g. the toys' modes, a VAE's test
    ELBO and NLL, a translator's mode or domain metrics, a conditional GAN's class accuracy. ``ctx``
    is a :class:`genforge.models.base.Context`; the metrics that declare an artefact also write
    their values to that file of the run (``translation_metrics.json``)."""
    dataset = ctx.train_data.name
    judging = Judging(model, dataset, data_kind(model.capabilities, dataset), 0, device=ctx.device,
                      train_data=ctx.train_data, test_data=ctx.test_data, nll_samples=ctx.num_importance,
                      show_progress=ctx.progress)
    with model.inference():
        return run_metrics(judging, "final", run_dir=ctx.run_dir)[0]


def final_figures(model: Any, dataset: str) -> list[str]:
    """The names of the figures :func:`final_metrics` can give for ``model`` on ``dataset``, known before
    training (``--seeds --metric`` checks its metric against them); empty where no final metric applies
    (an unconditional GAN on images is scored by ``genforge eval``)."""
    kind = data_kind(model.capabilities, dataset)
    return [name for metric in METRICS.values() if "final" in metric.stages
            and why_not(metric, model, kind, dataset) is None for name in metric.figures()]


def write_report(model: Any, ctx: Any) -> list[Path]:
    """Training's end: the pictures registered for the model and its data (:data:`genforge.viz.REPORTS`)."""
    from genforge import viz

    with model.inference():
        return viz.write_report(model, ctx)


# --- genforge eval: every metric, the real floor, and an account of what ran ----------------

def _classifier_inputs(judging: Judging) -> EvalInputs:
    """``n`` samples and the test split through the domain's extractor."""
    name = extractor_for(judging.dataset)
    extractor = load_extractor(name, device=judging.device)
    real = reference_features(judging.dataset, "test", judging.model.image_shape[-1], extractor, name, judging.root)
    images = judging.model.sample(judging.n, judging.generator())  # (n, C, H, W) in [0, 1]
    return EvalInputs(real, FeatureSet(*extract(extractor, images, with_logits=True)), judging.seed)


def _pixel_inputs(judging: Judging) -> EvalInputs:
    """``n`` samples against the training images (an image folder has no held-out split), in pixels."""
    train = judging.split("train")
    real = pixel_set(train.images.split(SAMPLE_CHUNK))
    fake = pixel_set(sample_chunks(judging.model, judging.n, judging.generator()))
    return EvalInputs(real, fake, judging.seed, channels=train.images.shape[1])


def _classifier_account(judging: Judging) -> dict[str, Any]:
    name = extractor_for(judging.dataset)
    references = len(judging.features().real)
    return {"extractor": name, "extractor_sha256": EXTRACTOR_SHA256[name], "samples": judging.n, "seed": judging.seed,
            "reference": f"{judging.dataset}/test ({references})", "reference_images": references,
            "floor": evaluate_real(judging.dataset, judging.n, judging.seed, judging.model.image_shape[-1],
                                   judging.root, judging.device)}


def _pixel_account(judging: Judging) -> dict[str, Any]:
    """The pixel space's description; its floor is one random half of the training images against
    the other half."""
    from genforge.metrics.nearest import PIXEL_SIDE, PROJECTION_DIM, projection_id

    inputs = judging.features()
    real = inputs.real
    floor: dict[str, Any] = {}
    if len(real) >= 8:  # two halves of at least 4: enough for every statistic, if not for precision
        order = torch.randperm(len(real), generator=judging.generator())
        half = len(real) // 2
        floor = feature_metrics(EvalInputs(real.subset(order[half:]), real.subset(order[:half]), judging.seed,
                                           channels=inputs.channels), "image-folder")
        floor["samples"] = half
    side = min(PIXEL_SIDE, judging.model.image_shape[-1])
    return {"extractor": f"pixels at {side}x{side}, fixed random projection to {PROJECTION_DIM}",
            "extractor_sha256": projection_id(real.pixels.shape[1]), "samples": judging.n, "seed": judging.seed,
            "reference": f"{judging.dataset} training images ({len(real)}"
                         f"{'' if judging.data_cfg.test_share else '; a folder has no held-out split'})",
            "test_split": _test_split(judging),
            "reference_images": len(real), "floor": floor}


def _test_split(judging: Judging) -> str:
    """eval.json's line on where an image folder's test split came from."""
    share = judging.data_cfg.test_share
    if share <= 0:
        return "none: the folder has no held-out split, so its test split is its training images (data.test_share=0)"
    return (f"held out: the {len(judging.split('test'))} files whose name hashes below data.test_share={share:g} "
            "(the folder has no split of its own); training used the other files")


def _points_account(judging: Judging) -> dict[str, Any]:
    from genforge.data.toy import MIXTURES
    from genforge.metrics.modes import SAMPLES

    spec = MIXTURES.get(judging.dataset)
    shape = f"{len(spec.means)} modes, std {spec.std}" if spec is not None else "no known mixture"
    return {"samples": SAMPLES, "seed": judging.seed, "reference": f"the {judging.dataset} mixture ({shape})"}


def _two_domain_account(judging: Judging) -> dict[str, Any]:
    from genforge.metrics.translation import JUDGED_IMAGES

    test = judging.split("test")
    judged = len(test.images) if judging.kind == "two-domain-points" else min(len(test.images), JUDGED_IMAGES)
    return {"samples": judged, "seed": judging.seed,
            "reference": f"{judging.dataset} test split ({len(test.images)} A, {len(test.images_b)} B)"}


ACCOUNTS: dict[str, Callable[[Judging], dict[str, Any]]] = {
    "named-images": _classifier_account, "image-folder": _pixel_account, "points": _points_account,
    "two-domain-points": _two_domain_account, "two-domain-images": _two_domain_account}
FEATURE_SPACES = {"named-images": "classifier", "image-folder": "pixel"}


def availability(model: Any, kind: str, dataset: str, ran: list[Metric]) -> dict[str, Any]:
    """eval.json's account of the registry: the data kind, the metrics computed, why each other one was not."""
    unavailable = {}
    for metric in METRICS.values():
        if "eval" in metric.stages and metric not in ran:
            unavailable[metric.name] = why_not(metric, model, kind, dataset) or "not computed"
    return {"data_kind": kind, "feature_space": FEATURE_SPACES.get(kind), "metrics_available": [m.name for m in ran],
            "metrics_unavailable": unavailable}


def small_data_notes(result: dict[str, Any], kind: str) -> dict[str, Any]:
    """``notes`` and ``trust`` (the figure to compare runs by): FID is biased upward when either side
    has few images (the bias falls as 1/N; a 128x128 covariance needs N well above 128), and a floor
    from two halves of a small set carries more of that bias than the samples' figure does."""
    fid, kid = ("pixel_fid", "pixel_kid") if kind == "image-folder" else ("fid", "kid")
    if fid not in result:
        return {}
    notes = []
    smallest = min(result["samples"], result.get("reference_images", result["samples"]))
    if smallest < FID_TRUSTED:
        notes.append(f"{fid} is biased upward with {smallest:,} images on a side (fewer than {FID_TRUSTED:,}); compare "
                     f"runs by {kid}, unbiased at any size: {result[kid]:.4g} +- {result[kid + '_std']:.2g} (the spread "
                     f"over subsets of {min(KID_SUBSET_SIZE, smallest):,} images; 0 when a subset is the whole set)")
    floor = result.get("floor") or {}
    if fid in floor and floor.get("samples", FID_TRUSTED) < FID_TRUSTED and result[fid] < floor[fid]:
        notes.append(f"the real floor compares two halves of {floor['samples']} images, so its {fid} "
                     f"({floor[fid]:.2f}) carries more of that bias than the samples' ({result[fid]:.2f}): "
                     "below the floor is the bias, not a model better than its data")
    return {"notes": notes, "trust": kid if notes else fid}


def units_of(metrics: list[Metric]) -> dict[str, str]:
    """Figure -> its unit and scale, for the metrics that ran."""
    return {figure: unit for metric in metrics for figure, unit in metric.units.items()}


def evaluate_loaded(cfg: Any, model: Any, step: int, run_dir: str | Path | None, n: int = 10_000, seed: int = 0,
                    device: torch.device | str = "cpu", root: str | None = None, nll_samples: int | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    show_progress: bool = False, out_name: str = "eval.json") -> dict[str, Any]:
    """Score a loaded model (``cfg`` its RunConfig, trained for ``step`` steps) with every metric of
    the registry that applies to it, on ``n`` samples where samples are scored; writes
    ``RUN_DIR/OUT_NAME`` (unless ``run_dir`` is None) and returns it.

    Returns ``{figure: value, ..., "samples", "seed", "reference", "step", "family", "dataset",
    "data_kind", "feature_space", "metrics_available": [...], "metrics_unavailable": {metric: why},
    "units": {figure: unit}}``, with ``"extractor"``, ``"floor"`` (the real-vs-real values),
    ``"notes"`` and ``"trust"`` where samples are scored in a feature space.
    ``progress(stage, done, total)`` is called before each metric."""
    if n < 2:
        raise GenforgeError(f"--n must be at least 2, not {n}")
    dataset = cfg.data.dataset
    kind = data_kind(model.capabilities, dataset)
    judging = Judging(model, dataset, kind, seed, n, torch.device(device), cfg.data, cfg.data.root or root,
                      nll_samples=nll_samples or cfg.train.eval_samples, show_progress=show_progress)
    torch.manual_seed(seed)  # the likelihood estimates draw noise from the global RNG
    with model.inference():
        values, ran = run_metrics(judging, "eval", progress)
        account = ACCOUNTS[kind](judging)
    result = {**values, **account, "step": step, "family": cfg.family, "dataset": dataset,
              **availability(model, kind, dataset, ran), "units": units_of(ran)}
    result.update(small_data_notes(result, kind))
    if run_dir is not None:
        write_json_atomic(Path(run_dir) / out_name, result)
    return result


def evaluate_real(dataset: str, n: int = 10_000, seed: int = 0, image_size: int = 28, root: str | None = None,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """The floor: ``n`` random train images scored as if they were samples, against the test split.

    A perfect generator of the training distribution would score about this. Cached as JSON.
    """
    import json

    from genforge.data.datasets import is_folder_dataset

    if is_folder_dataset(dataset):
        raise GenforgeError(f"--real scores a test split with a trained extractor, and the image folder '{dataset}' "
                            "has neither; `genforge eval RUN_DIR` of a run on it reports the folder's floor "
                            "(one half of its images against the other)")
    name = extractor_for(dataset)
    extractor = load_extractor(name, device=device)
    n = floor_size(dataset, n, root)
    path = cache_dir() / f"floor-{dataset}-{image_size}px-n{n}-seed{seed}-{extractor_key(name)}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    from genforge.data.datasets import load_images, resize_images

    real = reference_features(dataset, "test", image_size, extractor, name, root)
    train = load_images(dataset, "train", root)
    index = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(seed))[:n]
    held_out = FeatureSet(*extract(extractor, resize_images(train.images[index], image_size), with_logits=True))
    values = feature_metrics(EvalInputs(real, held_out, seed))  # only the n drawn images go through the extractor
    result = {**values, "dataset": dataset, "samples": n, "reference": f"{dataset}/test ({len(real)})",
              "extractor": name, "extractor_sha256": EXTRACTOR_SHA256[name], "seed": seed,
              "units": units_of([m for m in METRICS.values() if m.on_features and "named-images" in m.kinds])}
    write_json_atomic(path, result, indent=1)
    return result


# --- the table -------------------------------------------------------------------------------

TABLE_SKIP = {"samples", "seed", "step", "extractor_sha256", "reference_images"}


def _unit(units: dict[str, str], key: str) -> str:
    """The unit of figure ``key``; per-direction and per-domain figures share one (a2b_X, recon_a, class_share_3)."""
    for candidate in (key, key.split("_", 1)[-1], key.rsplit("_", 1)[0], "class_share_K"):
        if candidate in units and (candidate != "class_share_K" or key.startswith("class_share_")):
            return units[candidate]
    return ""


def format_table(result: dict[str, Any]) -> str:
    """The scalar figures, one per line, with the real-vs-real floor and the unit beside each; then the notes."""
    floor, units = result.get("floor") or {}, result.get("units", {})
    lines = [f"{'metric':28s} {'value':>12s} {'real floor':>12s}  unit"]
    for key, value in result.items():
        if key in TABLE_SKIP or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        other = floor.get(key)
        shown = f"{other:12.4f}" if isinstance(other, (int, float)) and math.isfinite(other) else f"{'':12s}"
        lines.append(f"{key:28s} {value:12.4f} {shown}  {_unit(units, key)}".rstrip())
    if "class_histogram" in result:
        lines.append(f"{'class_histogram':28s} " + " ".join(f"{s:.3f}" for s in result["class_histogram"]))
    lines += [f"note: {note}" for note in result.get("notes", [])]
    if result.get("notes"):
        lines.append(f"trust: {result['trust']}")
    return "\n".join(lines)
