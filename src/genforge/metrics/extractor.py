"""Feature extractors for the metrics: small CNN classifiers, one per image domain.

FID/KID/precision-recall need a feature space in which real images of the domain are
well organised. Inception-v3 weights cannot be downloaded here, and ImageNet features
are a poor fit for 28x28 grey digits anyway, so genforge trains its own classifier per
domain (``genforge evaluator train mnist|fashion-mnist``) and ships the weights inside
the package (``metrics/weights/NAME.safetensors``, ~400 KB each). The 128-d
pre-activation of the penultimate layer is the feature vector; the class logits give
the class-coverage metric.

Held-out accuracy of the shipped weights (seed 0, CPU, 2 threads, torch 2.13):

- ``mnist``: 99.1% on the 1,000 held-out digits of ``mnist-10k`` (trained on its 9,000
  train digits, random per-image shifts of up to 2 px, 20 epochs; the full MNIST is not
  available offline)
- ``fashion-mnist``: 91.3% on the 10,000 Fashion-MNIST test images (trained on the 60k
  train split, 1 px shifts and horizontal flips, 6 epochs)

(What ``genforge evaluator train NAME`` printed; see docs/evaluation.md.)
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genforge.errors import GenforgeError

FEATURE_DIM = 128
SIDE = 28  # the extractors see 28x28; 32x32 inputs (MNIST padded by 2) are centre-cropped


@dataclass(frozen=True)
class ExtractorSpec:
    """How one domain's extractor is trained: data, epochs, augmentation."""

    name: str
    train_sets: tuple[str, ...]  # the first one found is used (full MNIST, else the bundled subset)
    epochs: int
    lr: float
    shift: int  # random translation of up to this many pixels (augmentation)
    flip: bool  # random horizontal flips (clothes are symmetric, digits are not)


SPECS: dict[str, ExtractorSpec] = {
    "mnist": ExtractorSpec("mnist", ("mnist", "mnist-10k"), epochs=20, lr=4e-3, shift=2, flip=False),
    "fashion-mnist": ExtractorSpec("fashion-mnist", ("fashion-mnist",), epochs=6, lr=4e-3, shift=1, flip=True),
}

# Which extractor measures which dataset.
DOMAINS: dict[str, str] = {"mnist": "mnist", "mnist-10k": "mnist", "fashion-mnist": "fashion-mnist"}


class Classifier(nn.Module):
    """(B, 1, 28|32, 28|32) in [0, 1] -> features (B, 128); ``logits`` -> (B, 10).

    Three conv blocks (16, 32, 64 channels; BN, ReLU, 2x2 max-pool: 28 -> 14 -> 7 -> 3),
    then a linear layer to the 128-d features and, after ReLU and dropout, the classes.
    ``forward`` returns the features so torchmetrics can use the module as its
    ``feature`` network (``FrechetInceptionDistance(feature=extractor)``).
    """

    num_features = FEATURE_DIM

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                    nn.MaxPool2d(2)]

        self.body = nn.Sequential(*block(1, 16), *block(16, 32), *block(32, 64), nn.Flatten(),
                                  nn.Linear(64 * 3 * 3, FEATURE_DIM))
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(FEATURE_DIM, num_classes))

    @staticmethod
    def standardise(images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float (B, C, H, W) -> float (B, 1, 28, 28) centred at 0."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 3:  # RGB -> grey (ITU-R 601 luma)
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        height, width = x.shape[-2:]
        if (height, width) != (SIDE, SIDE):
            if height == width and height > SIDE and (height - SIDE) % 2 == 0:  # 32 = 28 padded by 2
                crop = (height - SIDE) // 2
                x = x[..., crop:crop + SIDE, crop:crop + SIDE]
            else:
                x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False)
        return (x - 0.5) / 0.5

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.standardise(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward(images))


# --- loading the shipped weights, checked against their recorded digest ----------------

def weights_path(name: str) -> Path:
    return Path(str(resources.files("genforge") / "metrics" / "weights" / f"{name}.safetensors"))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def extractor_for(dataset: str) -> str:
    """The extractor that measures ``dataset`` (a clear error for a domain without one)."""
    try:
        return DOMAINS[dataset]
    except KeyError:
        raise GenforgeError(f"no feature extractor for dataset '{dataset}'; "
                            f"evaluation supports {', '.join(DOMAINS)}") from None


def load_extractor(name: str, path: str | Path | None = None, device: torch.device | str = "cpu") -> Classifier:
    """The trained extractor ``name`` in eval mode, after checking its file's SHA-256.

    ``path`` defaults to the file shipped in the package. A digest that differs from
    ``genforge.metrics.EXTRACTOR_SHA256[name]`` is an error: the file was edited or is
    from another training run, and its features would not match cached statistics.
    """
    from safetensors.torch import load_file

    from genforge.metrics import EXTRACTOR_SHA256

    if name not in SPECS:
        raise GenforgeError(f"unknown extractor '{name}'; known: {', '.join(SPECS)}")
    path = Path(path) if path else weights_path(name)
    if not path.is_file():
        raise GenforgeError(f"extractor file {path} is missing; regenerate with `genforge evaluator train {name}`")
    digest, expected = file_sha256(path), EXTRACTOR_SHA256.get(name)
    if digest != expected:
        raise GenforgeError(f"tampered or stale extractor file {path}: sha256 {digest}, expected {expected}; "
                            f"regenerate with `genforge evaluator train {name}`")
    with torch.random.fork_rng(devices=[]):  # the throw-away initialisation must not move a training run's RNG
        model = Classifier()
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def extract(extractor: Classifier, images: torch.Tensor, batch_size: int = 1000,
            with_logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Features (N, 128) float32 on the CPU of uint8 or [0, 1] images (and logits (N, 10))."""
    device = next(extractor.parameters()).device
    feats, logits = [], []
    for start in range(0, images.shape[0], batch_size):
        f = extractor(images[start:start + batch_size].to(device))
        feats.append(f.cpu())
        if with_logits:
            logits.append(extractor.head(f).cpu())
    features = torch.cat(feats) if feats else torch.empty(0, FEATURE_DIM)
    if with_logits:
        return features, (torch.cat(logits) if logits else torch.empty(0, 10))
    return features


# --- training (deterministic on the CPU) ------------------------------------------------

def _augment(x: torch.Tensor, spec: ExtractorSpec, generator: torch.Generator) -> torch.Tensor:
    """Random integer shifts per image (zero fill) and optional horizontal flips of a float batch."""
    if spec.shift:
        pad, batch = spec.shift, x.shape[0]
        padded = F.pad(x, (pad, pad, pad, pad))  # (B, 1, 28 + 2 pad, 28 + 2 pad)
        offsets = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator)
        rows = (offsets[0, :, None] + torch.arange(SIDE))[:, :, None]  # (B, 28, 1)
        cols = (offsets[1, :, None] + torch.arange(SIDE))[:, None, :]  # (B, 1, 28)
        x = padded[torch.arange(batch)[:, None, None], 0, rows, cols].unsqueeze(1)  # (B, 1, 28, 28)
    if spec.flip:
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x


@torch.no_grad()
def accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    _, logits = extract(model, images, with_logits=True)
    return float((logits.argmax(1) == labels).float().mean())


def train_extractor(name: str, out: str | Path | None = None, data_root: str | None = None, seed: int = 0,
                    threads: int = 2, progress: bool = True) -> dict:
    """Train extractor ``name`` on the CPU from ``seed`` and save it (default: the package file).

    Returns ``{"path", "sha256", "test_accuracy", "train_set", "test_set", "seconds"}``.
    Determinism: the same seed, torch version and thread count give the same file.
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    from genforge.data.datasets import load_images

    if name not in SPECS:
        raise GenforgeError(f"unknown extractor '{name}'; known: {', '.join(SPECS)}")
    spec = SPECS[name]
    train_data = None
    for dataset in spec.train_sets:
        try:
            train_data = load_images(dataset, "train", data_root)
            break
        except GenforgeError:
            if dataset == spec.train_sets[-1]:
                raise
    test_data = load_images(train_data.name, "test", data_root)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    started = time.monotonic()

    model = Classifier(len(train_data.classes))
    images = train_data.images.float() / 255.0  # (N, 1, 28, 28)
    labels = train_data.labels
    batch_size = 256
    steps_per_epoch = images.shape[0] // batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=spec.epochs * steps_per_epoch)
    bar = tqdm(total=spec.epochs * steps_per_epoch, disable=not progress, desc=f"extractor {name}", unit="step")
    for _ in range(spec.epochs):
        model.train()
        order = torch.randperm(images.shape[0], generator=generator)
        for index in range(steps_per_epoch):
            batch = order[index * batch_size:(index + 1) * batch_size]
            x = _augment(images[batch], spec, generator)
            loss = F.cross_entropy(model.logits(x), labels[batch], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    bar.close()
    test_accuracy = accuracy(model, test_data.images, test_data.labels)

    path = Path(out) if out else weights_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"extractor": name, "train_set": train_data.name, "seed": str(seed),
                                           "test_accuracy": f"{test_accuracy:.4f}"})
    return {"path": str(path), "sha256": file_sha256(path), "test_accuracy": test_accuracy,
            "train_set": f"{train_data.name}/train ({len(train_data)})",
            "test_set": f"{test_data.name}/test ({len(test_data)})", "seconds": time.monotonic() - started}
