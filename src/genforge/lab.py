"""The toy lab: GAN Lab's view on genforge's own toy recipes, in memory, one step at a time.

GAN Lab (Kahng et al. 2018, poloclub/ganlab) made the GAN game visible: real and generated
points, the discriminator's decision surface, the generator's gradient on its samples and the
image of a noise grid, moving as the two networks take turns. :class:`ToyLab` gives the studio
that view, but of genforge's own recipes (``ring-8``, ``grid-25``, ``duck-cow-1d`` and the
DiscoGAN mixtures) and of points a user draws or uploads, and everything in it is the real
thing: the networks come from :func:`genforge.models.build_model` for the recipe's config, each
step is :func:`genforge.train.train_step` over the family's phases (the function ``genforge
train`` runs), the optimisers are :func:`genforge.train.make_optimizers`', and modes captured and
the high-quality share are the mode metrics training logs. Nothing here trains by itself, so what
a user sees in the lab is what a run does.

A lab keeps its own random state: batches come from a ``torch.Generator`` seeded by ``seed``, and
the global torch RNG, which the families draw G's noise from, is swapped in for the lab's steps
only (under a process-wide lock), so two labs (or a lab and the server) never disturb each other
and a seeded lab repeats itself exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from genforge.config import TRAIN_SEED_MAX, RunConfig, load_recipe, parse_value, validate
from genforge.data.datasets import load_data
from genforge.data.toy import MIXTURES
from genforge.errors import GenforgeError
from genforge.metrics.modes import SAMPLES, mode_metrics, mode_stats, translation_mode_metrics
from genforge.models import build_model
from genforge.models.base import Batch, GenerativeModel, Phase
from genforge.models.gan import BCE_LOSSES
from genforge.train import make_optimizers, train_step

LAB_RECIPES = ("ring-8", "grid-25", "duck-cow-1d", "gmm-discogan", "gmm-discogan-ring")
POINT_RECIPES = ("ring-8", "grid-25")  # the 2-D GAN toys whose data a user's points may replace
MIN_POINTS, MAX_POINTS = 8, 10_000  # a user's points: enough to learn a shape from, few enough to stay fast
MAX_COORDINATE = 1e6  # beyond this a user's coordinates are a mistake (or would overflow the networks)
REAL_SHOWN, FAKE_SHOWN = 1000, 500  # points in a state(): enough to see a density, little to send
PLANE_SIDE, LINE_POINTS = 21, 101  # the noise grid (2-D data) or line (1-D data) G's manifold is drawn from
MAX_GRID, MAX_STEPS_PER_CALL, MAX_D_STEPS = 200, 1000, 50
NOISE_REACH = {"gaussian": 2.0, "truncated": 2.0, "uniform": 1.0}  # half-width of the grid over z's own axes
NOISE_STD = {"gaussian": 1.0, "truncated": 0.88, "uniform": 1.0 / math.sqrt(3.0)}  # per coordinate of z
LOSS_KEY = {"gan": "loss", "discogan": "gan_loss"}  # the model config key that names each family's game
D_OPTIMIZER, G_OPTIMIZER = "discriminator", "generator"
WHICH = ("both", "d", "g")

LAB_THREADS = 1  # torch threads while a lab computes: its MLPs are too small to share among cores
_GLOBAL_RNG = threading.Lock()  # the global torch RNG is one per process: labs take turns with it


# --- users' points ----------------------------------------------------------------------

def check_points(points: Any, source: str = "points") -> torch.Tensor:
    """A user's 2-D points as float32 (N, 2), or one clear line on why not: (N, 2) numbers,
    finite, within +-1e6, at least MIN_POINTS and at most MAX_POINTS of them."""
    try:
        values = torch.as_tensor(points, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise GenforgeError(f"{source}: not a list of [x, y] number pairs") from None
    if values.ndim != 2 or values.shape[1] != 2:
        raise GenforgeError(f"{source}: expected [x, y] pairs, (N, 2), not shape {tuple(values.shape)}")
    count = values.shape[0]
    if count < MIN_POINTS or count > MAX_POINTS:
        raise GenforgeError(f"{source}: {count:,} points; the lab takes {MIN_POINTS} to {MAX_POINTS:,}")
    bad = ~torch.isfinite(values).all(1)
    if bad.any():
        raise GenforgeError(f"{source}: point {int(bad.nonzero()[0]) + 1} is not finite (NaN or infinity)")
    far = (values.abs() > MAX_COORDINATE).any(1)
    if far.any():
        raise GenforgeError(f"{source}: point {int(far.nonzero()[0]) + 1} lies beyond +-{MAX_COORDINATE:g}")
    return values.float()


_SEPARATORS = re.compile(r"[,;\s]+")


def _decode(data: bytes | str, source: str) -> str:
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise GenforgeError(f"{source}: not UTF-8 text (byte {e.start})") from None
    if "\x00" in text:
        raise GenforgeError(f"{source}: a binary file, not CSV text")
    return text.removeprefix("\ufeff")


def _number(field: str) -> float | None:
    try:
        return float(field)
    except ValueError:
        return None


def parse_points_csv(data: bytes | str, source: str = "upload") -> torch.Tensor:
    """CSV of 2-D points (``x,y`` a line; commas, semicolons, tabs or spaces between; ``#``
    comments, blank lines and one header line allowed) -> float32 (N, 2), checked as
    :func:`check_points`; a bad line is refused in one line that names it."""
    rows: list[tuple[float, float]] = []
    first = True
    for number, line in enumerate(_decode(data, source).splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = [f.strip("\"'") for f in _SEPARATORS.split(stripped.strip(",;")) if f]
        values = [_number(f) for f in fields]
        if first and all(v is None for v in values):  # a header such as "x,y"
            first = False
            continue
        first = False
        where = f"{source} line {number}"
        if len(fields) != 2:
            raise GenforgeError(f"{where}: expected 2 numbers (x, y), found {len(fields)} fields")
        for field, value in zip(fields, values):
            if value is None:
                raise GenforgeError(f"{where}: {field[:24]!r} is not a number")
            if not math.isfinite(value):
                raise GenforgeError(f"{where}: {field[:24]!r} is not a finite number")
            if abs(value) > MAX_COORDINATE:
                raise GenforgeError(f"{where}: {field[:24]} lies beyond +-{MAX_COORDINATE:g}")
        rows.append((values[0], values[1]))
        if len(rows) > MAX_POINTS:
            raise GenforgeError(f"{where}: more than {MAX_POINTS:,} points; the lab takes at most {MAX_POINTS:,}")
    if not rows:
        raise GenforgeError(f"{source}: no points found (expected lines of x,y)")
    return check_points(rows, source)


# --- what a state() is made of ----------------------------------------------------------

def plot_bounds(points: torch.Tensor) -> list[float]:
    """[x0, x1, y0, y1] of the view around ``points`` (N, D): a square a quarter of the data's
    extent wider on every side for 2-D; for 1-D the x range so, and y the probability axis [0, 1]."""
    lo, hi = points.min(0).values.double(), points.max(0).values.double()
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2
    half = max(1.5 * half, 1e-3)
    if points.shape[1] == 1:
        return [float(centre[0]) - half, float(centre[0]) + half, 0.0, 1.0]
    return [float(centre[0]) - half, float(centre[0]) + half, float(centre[1]) - half, float(centre[1]) + half]


def grid_points(bounds: Sequence[float], n: int, dim: int = 2) -> torch.Tensor:
    """The centres of an n x n grid of cells over ``bounds``, row-major from y0: (n*n, 2);
    for ``dim`` 1 the n cell centres along x, (n, 1). The heatmap's values are D on these."""
    x0, x1, y0, y1 = bounds
    xs = x0 + (torch.arange(n, dtype=torch.float32) + 0.5) * (x1 - x0) / n
    if dim == 1:
        return xs.unsqueeze(1)
    ys = y0 + (torch.arange(n, dtype=torch.float32) + 0.5) * (y1 - y0) / n
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def noise_plane(latent_dim: int, noise: str, dim: int, generator: torch.Generator) -> tuple[torch.Tensor, tuple[int, ...]]:
    """A regular grid (``dim`` 2) or line (``dim`` 1) of noise vectors, whose image under G is its
    manifold. Over z's own axes when z has that many (to the noise's reach), else through random
    orthonormal directions of z-space out to a typical noise vector's length. Returns (noise, shape)."""
    axes = min(dim, latent_dim)
    side = PLANE_SIDE if axes == 2 else LINE_POINTS
    coords = torch.linspace(-1.0, 1.0, side)
    if axes == 2:
        gy, gx = torch.meshgrid(coords, coords, indexing="ij")
        coords = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)  # row-major, like the heatmap
    else:
        coords = coords.unsqueeze(1)
    if latent_dim == axes:
        return coords * NOISE_REACH[noise], (side,) * axes
    directions, _ = torch.linalg.qr(torch.randn(latent_dim, axes, generator=generator))  # (latent, axes)
    reach = NOISE_STD[noise] * math.sqrt(latent_dim)
    return coords @ directions.T * reach, (side,) * axes


def heat(scores: torch.Tensor, probability: bool, n: int) -> dict[str, Any]:
    """D's outputs on the ``n`` (x ``n``) grid as heatmap values in [0, 1]: sigmoid of BCE logits (D's
    probability that a point is real), else the critic min-max normalised over the grid."""
    scores = scores.double().reshape(-1)
    if probability:
        values = torch.sigmoid(scores)
    else:
        lo, hi = scores.min(), scores.max()
        values = (scores - lo) / (hi - lo) if hi > lo else torch.full_like(scores, 0.5)
    values = torch.nan_to_num(values, nan=0.5)
    return {"n": n, "values": _flat(values, 4),
            "scale": "probability" if probability else "critic"}


def _flat(values: torch.Tensor, decimals: int) -> list[float]:
    return values.reshape(-1).round(decimals=decimals).tolist()


def rows(points: torch.Tensor, decimals: int = 4) -> list:
    """Points (N, D) as JSON-safe lists, rows with a non-finite entry dropped: [[x, y], ...] for
    2 or more columns, plain values for one column."""
    points = points.detach().double().cpu()
    points = points[torch.isfinite(points).all(1)]
    if points.shape[1] == 1:
        return _flat(points, decimals)
    return points.round(decimals=decimals).tolist()


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` inside the block, then back. The lab's networks are
    so small that splitting a matrix product between cores costs more than it saves, and with a
    training beside it on a 2-core CPU two threads ran the lab 5 times slower than one (bench/lab_rate.py)."""
    before = torch.get_num_threads()
    if before == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _first_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, the first output ``module`` computes lands in the yielded list."""
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        if not captured:
            captured.append(output)

    handle = module.register_forward_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()


def _push_scale(tails: torch.Tensor, pushes: torch.Tensor, bounds: Sequence[float]) -> float | None:
    """A factor for drawing the arrows: the longest, times it, spans an eighth of the view's width."""
    longest = float(pushes.double().norm(dim=1).max()) if len(pushes) else 0.0
    return _finite((bounds[1] - bounds[0]) / 8 / longest) if longest > 0 else None


def _arrows(tails: torch.Tensor, pushes: torch.Tensor, bounds: Sequence[float]) -> dict[str, Any]:
    return {"arrows": rows(torch.cat([tails, pushes], dim=1), 6), "arrow_scale": _push_scale(tails, pushes, bounds)}


# --- the views: what a state() shows of each kind of toy model ---------------------------

class GanView:
    """A GAN on 1-D or 2-D toy points: G's samples of fixed noise (so they move only as G learns),
    D over the view, G's push on its samples, G's image of a noise grid, the mode metrics."""

    def __init__(self, model: GenerativeModel, points: torch.Tensor, mixture: Any, generator: torch.Generator):
        self.dim = points.shape[1]
        self.kind = f"gan{self.dim}d"
        self.mixture = mixture  # genforge.data.toy.MixtureSpec, or None for a user's points
        self.real = points[torch.randperm(len(points), generator=generator)[:REAL_SHOWN]]
        self.noise = model.sample_noise(FAKE_SHOWN, generator)
        self.metric_noise = model.sample_noise(SAMPLES, generator) if mixture is not None else None
        self.plane, self.plane_shape = noise_plane(model.cfg.latent_dim, model.cfg.noise, self.dim, generator)
        self.bounds = plot_bounds(points)

    def picture(self, model: GenerativeModel, grid: int, arrows: int) -> dict[str, Any]:
        cfg = model.cfg
        scores = model.discriminator(grid_points(self.bounds, grid, self.dim).repeat(1, cfg.pack))  # a pack of copies
        return {"real": rows(self.real), "fake": rows(model.generate(self.noise)),
                "heatmap": heat(scores, cfg.loss in BCE_LOSSES, grid), **_arrows(*self.push(model, arrows), self.bounds),
                "manifold": rows(model.generate(self.plane)), "manifold_shape": list(self.plane_shape)}

    def push(self, model: GenerativeModel, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """G's samples of the first ``count`` fixed noise vectors, and minus the gradient of G's loss
        (the family's own ``g_loss`` on exactly these fakes) w.r.t. each, times ``count`` so that it is
        the gradient of the sample's own term: where G's step moves the sample."""
        count -= count % model.cfg.pack
        fake = model.generate(self.noise[:count]).detach().requires_grad_(True)
        if count == 0:
            return fake.detach(), fake.detach()
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(model.g_loss(count, fake.device, fakes=(fake, None)), fake)
        return fake.detach(), -grad * count

    def metrics(self, model: GenerativeModel) -> dict[str, Any]:
        if self.mixture is None:  # a user's points: no modes to count
            return {"modes": None, "hq": None}
        means = torch.tensor(self.mixture.means)
        return mode_metrics(model.generate(self.metric_noise), means, self.mixture.std)


class DiscoGanView:
    """A DiscoGAN on the two-domain mixtures: A's points translated into B (over real B, with
    D_B's surface and the push of G's whole loss on each translation), G_AB's image of a grid
    over the view (its warp of the plane), and the translation mode metrics both ways."""

    kind = "discogan2d"

    def __init__(self, model: GenerativeModel, domains: tuple[torch.Tensor, ...]):
        self.a, self.labels_a, self.b, self.labels_b = domains
        self.bounds = plot_bounds(torch.cat([self.a, self.b]))
        self.targets = {"a2b": mode_stats(self.b, self.labels_b), "b2a": mode_stats(self.a, self.labels_a)}
        self.plane = grid_points(self.bounds, PLANE_SIDE)

    def picture(self, model: GenerativeModel, grid: int, arrows: int) -> dict[str, Any]:
        cfg = model.cfg
        probability = not (cfg.cyclegan or cfg.gan_loss == "least_squares")  # BCE logits, else a least-squares score
        return {"real": rows(self.b), "fake": rows(model.translate(self.a, "a2b")[0]), "source": rows(self.a),
                "source_labels": self.labels_a.tolist(),
                "heatmap": heat(model.D_B(grid_points(self.bounds, grid)), probability, grid),
                **_arrows(*self.push(model, arrows), self.bounds),
                "manifold": rows(model.translate(self.plane, "a2b")[0]), "manifold_shape": [PLANE_SIDE, PLANE_SIDE]}

    def push(self, model: GenerativeModel, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The translations A -> B of the first ``count`` A points and minus the gradient of G's
        whole loss (the family's ``g_terms``: both GAN terms and the reconstructions) w.r.t. each,
        times ``count``."""
        if count == 0:
            empty = torch.empty(0, self.a.shape[1])
            return empty, empty
        batch = Batch(self.a[:count], self.labels_a[:count], self.b[:count], self.labels_b[:count])
        with torch.enable_grad(), _first_output(model.G_AB) as translated:  # G_AB's first call: A -> B
            loss = model.g_terms(batch)["loss"]
            (grad,) = torch.autograd.grad(loss, translated[0])
        return translated[0].detach(), -grad * count

    def metrics(self, model: GenerativeModel) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for direction, source, labels in (("a2b", self.a, self.labels_a), ("b2a", self.b, self.labels_b)):
            means, std = self.targets[direction]
            result = translation_mode_metrics(model.translate(source, direction)[0], labels, means, std)
            prefix = "" if direction == "a2b" else "b2a_"
            found.update({f"{prefix}modes": result["modes_covered"], f"{prefix}hq": 100.0 * result["high_quality"],
                          f"{prefix}modes_total": result["target_modes"],
                          f"{prefix}distinct_modes": result["distinct_modes"],
                          f"{prefix}mapping_purity": result["mapping_purity"]})
        return found


# --- carrying a game over to a new config -------------------------------------------------

def carry_weights(old: nn.Module, new: nn.Module) -> None:
    """Copy into ``new`` every weight and buffer of ``old`` with the same name and shape (a layer
    the new config adds, such as WGAN-GP's layer norm, keeps its fresh initialisation)."""
    source = old.state_dict()
    merged = new.state_dict()
    merged.update({k: v for k, v in source.items() if k in merged and merged[k].shape == v.shape})
    new.load_state_dict(merged)


def carry_optimizer_state(old: nn.Module, old_optimizers: dict[str, torch.optim.Optimizer],
                          new: nn.Module, new_optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Give each parameter of ``new`` the optimiser state (Adam's moments and step count) its
    namesake in ``old`` had, where the shapes agree."""
    old_by_name = dict(old.named_parameters())
    new_names = {id(p): name for name, p in new.named_parameters()}
    for group, optimizer in new_optimizers.items():
        previous = old_optimizers.get(group)
        if previous is None:
            continue
        for param in (p for g in optimizer.param_groups for p in g["params"]):
            before = old_by_name.get(new_names.get(id(param), ""))
            if before is not None and before.shape == param.shape and before in previous.state:
                optimizer.state[param] = {k: v.clone() if torch.is_tensor(v) else v
                                          for k, v in previous.state[before].items()}


def _positive_rate(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise GenforgeError(f"{name} must be a number in (0, 1], not {value!r}")
    rate = parse_value(name, value, float)
    if not 0 < rate <= 1:
        raise GenforgeError(f"{name} must be in (0, 1], not {rate:g}")
    return rate


def _whole(name: str, value: Any, lo: int, hi: int) -> int:
    number = None if isinstance(value, bool) else parse_value(name, value, int)
    if number is None or not lo <= number <= hi:
        raise GenforgeError(f"{name} must be a whole number from {lo} to {hi}, not {value!r}")
    return number


# --- the lab ------------------------------------------------------------------------------

class ToyLab:
    """One toy GAN (or DiscoGAN) game held in memory and played a step at a time.

    ``ToyLab(recipe, overrides, points, seed)`` builds the recipe's model (``key=value``
    ``overrides`` on top) and its optimisers; ``points`` (N, 2), a user's, replace the data of the
    2-D GAN toys. ``step`` plays D's phases, G's or both through the training loop's own step;
    ``set`` changes the loss, D's and G's learning rates and D's steps between steps; ``state``
    is what the studio draws, JSON-safe. Thread-safe: a lock serialises the three.
    """

    def __init__(self, recipe: str = "ring-8", overrides: Sequence[str] = (), points: Any = None, seed: int = 0):
        if recipe not in LAB_RECIPES:
            raise GenforgeError(f"the toy lab plays {', '.join(LAB_RECIPES)}, not '{recipe}'")
        if points is not None and recipe not in POINT_RECIPES:
            raise GenforgeError(f"your own points replace the data of {' or '.join(POINT_RECIPES)}, not of {recipe}")
        self.seed = _whole("seed", seed, 0, TRAIN_SEED_MAX)  # a training seed: train.seed's range
        cfg = load_recipe(recipe, list(overrides))
        cfg.train.seed, cfg.train.device = self.seed, "cpu"
        self._lock = threading.RLock()
        self._batches = torch.Generator().manual_seed(self.seed)  # batch indices
        self._rng_state = torch.Generator().manual_seed(self.seed).get_state()  # the global RNG, while the lab steps
        self.steps = 0
        self._latest: dict[str, float | None] = {}
        self._domains, classes, mixture = self._load(cfg, points)
        self.cfg, self.model = cfg, self._build(cfg, classes)
        self._classes = classes
        self.optimizers = make_optimizers(self.model, cfg.optim)
        self._rates = {name: cfg.optim.lr for name in (D_OPTIMIZER, G_OPTIMIZER)}
        if set(self.optimizers) != set(self._rates):
            raise GenforgeError(f"recipe {recipe}: the lab needs a generator and a discriminator to play")
        self._d_steps = 1  # used only where the family's config has no d_steps of its own
        self.phases = self._phases()
        view = torch.Generator().manual_seed(self.seed + 1)  # the shown points and the fixed noise
        self.view = (DiscoGanView(self.model, self._domains) if self.model.capabilities.translator
                     else GanView(self.model, self._domains[0], mixture, view))

    @staticmethod
    def _load(cfg: RunConfig, points: Any) -> tuple[tuple, int, Any]:
        """(domains (a, labels_a, b, labels_b), class count, mixture spec or None) of the lab's data."""
        if points is not None:
            a = check_points(points)
            return (a, torch.zeros(len(a), dtype=torch.long), None, None), 0, None
        data = load_data(cfg.data, "train")
        if data.images.ndim != 2:
            raise GenforgeError(f"the toy lab plays on points; data.dataset={cfg.data.dataset} holds images")
        b = None if data.images_b is None else data.images_b.float()
        return (data.images.float(), data.labels, b, data.labels_b), len(data.classes), MIXTURES.get(data.name)

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        """The global torch RNG holds this lab's state inside the block (G's noise is drawn from it),
        and the caller's outside; labs take turns."""
        with _GLOBAL_RNG:
            outside = torch.get_rng_state()
            torch.set_rng_state(self._rng_state)
            try:
                yield
            finally:
                self._rng_state = torch.get_rng_state()
                torch.set_rng_state(outside)

    def _build(self, cfg: RunConfig, classes: int) -> GenerativeModel:
        """The family's networks for ``cfg``, after every check training makes (one line if refused)."""
        shape = (self._domains[0].shape[1],)
        validate(cfg, shape, classes)
        with self._own_rng():
            model = build_model(cfg, shape, classes)
        if model.capabilities.data != "points":
            raise GenforgeError(f"recipe {cfg.recipe} does not train on points; the toy lab needs a toy")
        return model.train()

    def _d_steps_in_config(self, cfg: RunConfig | None = None) -> bool:
        return "d_steps" in {f.name for f in dataclasses.fields((cfg or self.cfg).model)}

    def _phases(self) -> list[Phase]:
        """The family's phases; D's repeated ``d_steps`` times where its config cannot say so itself."""
        phases = self.model.phases()
        if self._d_steps_in_config():
            return phases
        return [dataclasses.replace(p, repeats=self._d_steps) if p.optimizer == D_OPTIMIZER else p for p in phases]

    def _next_batch(self) -> Batch:
        """A batch drawn by index (with replacement) from the data tensors on the lab's generator."""
        a, labels_a, b, labels_b = self._domains
        size = self.cfg.train.batch_size
        index = torch.randint(len(a), (size,), generator=self._batches)
        batch = Batch(a[index], labels_a[index])
        if b is not None:
            index_b = torch.randint(len(b), (size,), generator=self._batches)
            batch.images_b, batch.labels_b = b[index_b], labels_b[index_b]
        return batch

    # --- playing -------------------------------------------------------------------------
    def step(self, which: str = "both", n: int = 1) -> dict[str, float | None]:
        """Play ``n`` training steps of D's phases (``"d"``), G's (``"g"``) or all of them (``"both"``),
        each through :func:`genforge.train.train_step`; the latest losses as floats (one host sync)."""
        if which not in WHICH:
            raise GenforgeError(f"step which must be one of {', '.join(WHICH)}, not {which!r}")
        n = _whole("step n", n, 1, MAX_STEPS_PER_CALL)
        with self._lock:
            wanted = {"d": D_OPTIMIZER, "g": G_OPTIMIZER}.get(which)
            only = None if wanted is None else {p.name for p in self.phases if p.optimizer == wanted}
            with self._own_rng(), _threads(LAB_THREADS):
                for _ in range(n):
                    logged = train_step(self.model, self.optimizers, self.phases, self._next_batch, only=only)
                    self.steps += 1
            latest = {key: _finite(value) for key, value in logged.items()}
            self._latest.update(latest)
            return latest

    def set(self, loss: str | None = None, lr_d: float | None = None, lr_g: float | None = None,
            d_steps: int | None = None) -> dict[str, Any]:
        """Change the game between steps; every value is checked before any is applied (one
        GenforgeError line names the bad one). A new loss (or D steps the family's config holds)
        rebuilds the model from the new config, keeping every weight and optimiser state that fits."""
        with self._lock:
            cfg = copy.deepcopy(self.cfg)
            if loss is not None:
                key = self._loss_key()
                setattr(cfg.model, key, parse_value(f"model.{key}", loss, str, self._loss_choices()))
            rates = {name: _positive_rate(label, value)
                     for name, label, value in ((D_OPTIMIZER, "lr_d", lr_d), (G_OPTIMIZER, "lr_g", lr_g))
                     if value is not None}
            if d_steps is not None:
                d_steps = _whole("d_steps", d_steps, 1, MAX_D_STEPS)
                if self._d_steps_in_config(cfg):
                    cfg.model.d_steps = d_steps
            if cfg != self.cfg:
                self._rebuild(cfg)
            if d_steps is not None and not self._d_steps_in_config():
                self._d_steps = d_steps
                self.phases = self._phases()
            self._rates.update(rates)
            self._apply_rates()
            return self.config

    def _rebuild(self, cfg: RunConfig) -> None:
        model = self._build(cfg, self._classes)  # the family refuses a config that does not fit first
        carry_weights(self.model, model)
        optimizers = make_optimizers(model, cfg.optim)
        carry_optimizer_state(self.model, self.optimizers, model, optimizers)
        self.cfg, self.model, self.optimizers = cfg, model, optimizers
        self.phases = self._phases()
        self._apply_rates()

    def _apply_rates(self) -> None:
        for name, rate in self._rates.items():
            for group in self.optimizers[name].param_groups:
                group["lr"] = rate

    def _loss_key(self) -> str:
        key = LOSS_KEY.get(self.cfg.family)
        if key is None:
            raise GenforgeError(f"the {self.cfg.family} family has no loss the lab can change")
        return key

    def _loss_choices(self) -> tuple[str, ...]:
        fields = {f.name: f for f in dataclasses.fields(self.cfg.model)}
        return tuple(fields[self._loss_key()].metadata.get("choices", ()))

    @property
    def d_steps(self) -> int:
        return self.cfg.model.d_steps if self._d_steps_in_config() else self._d_steps

    @property
    def config(self) -> dict[str, Any]:
        """The game as it stands: loss (and the losses it may change to), learning rates, D steps."""
        return {"loss": getattr(self.cfg.model, self._loss_key()), "lr_d": self._rates[D_OPTIMIZER],
                "lr_g": self._rates[G_OPTIMIZER], "d_steps": self.d_steps, "losses": list(self._loss_choices()),
                "recipe": self.cfg.recipe, "seed": self.seed, "batch_size": self.cfg.train.batch_size}

    # --- looking -------------------------------------------------------------------------
    def state(self, grid: int = 40, arrows: int = 100) -> dict[str, Any]:
        """What the studio draws, JSON-safe (see docs in lab-contract): real and generated points,
        D's heatmap on a ``grid`` x ``grid`` of cells, ``arrows`` of G's push, G's manifold, the
        mode metrics and the latest losses, the config. Reads the model only (no training RNG)."""
        grid = _whole("grid", grid, 2, MAX_GRID)
        arrows = _whole("arrows", arrows, 0, FAKE_SHOWN)
        with self._lock, _threads(LAB_THREADS), self.model.inference():
            picture = self.view.picture(self.model, grid, arrows)
            metrics = self.view.metrics(self.model)
        metrics.update(self._losses())
        return {"step": self.steps, "kind": self.view.kind, "bounds": list(self.view.bounds), **picture,
                "metrics": {k: None if v is None else _finite(v) for k, v in metrics.items()}, "config": self.config}

    def _losses(self) -> dict[str, float | None]:
        """d_loss and g_loss (the first D and G phase's latest loss) and every latest logged term."""
        found: dict[str, float | None] = {"d_loss": None, "g_loss": None}
        for phase in self.phases:
            slot = "d_loss" if phase.optimizer == D_OPTIMIZER else "g_loss"
            if found[slot] is None:
                found[slot] = self._latest.get(f"{phase.name}/loss")
        return {**found, **{key.replace("/", "_"): value for key, value in self._latest.items()}}
