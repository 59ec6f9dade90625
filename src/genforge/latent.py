"""Latent-space tools: saved noise vectors, interpolation (linear and spherical), arithmetic.

Works for any family with ``sample_noise``/``generate`` (GANs, VAEs). Noise vectors are saved
as safetensors (key ``z``) or ``.npy`` (read with ``allow_pickle=False``), never as pickles.
Radford et al. 2015 (DCGAN, sec. 6.3) for the arithmetic on averaged z of three samples per
concept; White 2016 ("Sampling generative networks", arXiv 1609.04468) for slerp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genforge.atomic import atomic_output
from genforge.errors import GenforgeError

LATENT_SUFFIXES = (".safetensors", ".npy")


def save_latents(z: torch.Tensor, path: str | Path) -> Path:
    """Write noise vectors ``z`` (N, latent) to ``.safetensors`` (key "z") or ``.npy``."""
    path = Path(path)
    if path.suffix not in LATENT_SUFFIXES:
        raise GenforgeError(f"{path}: save latent vectors as .safetensors or .npy")
    z = z.detach().float().cpu().contiguous()
    with atomic_output(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({"z": z}, str(tmp))
        else:
            np.save(tmp, z.numpy(), allow_pickle=False)
    return path


def load_latents(path: str | Path) -> torch.Tensor:
    """Noise vectors (N, latent) float32 from a file written by :func:`save_latents`."""
    path = Path(path)
    if path.suffix not in LATENT_SUFFIXES:
        raise GenforgeError(f"{path}: latent vectors are read from .safetensors or .npy files")
    if not path.is_file():
        raise GenforgeError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if "z" not in tensors:
                raise GenforgeError(f"{path}: no tensor named 'z' (found {', '.join(tensors) or 'none'})")
            z = tensors["z"]
        else:
            z = torch.from_numpy(np.load(path, allow_pickle=False))
    except GenforgeError:
        raise
    except Exception as e:  # a corrupt or foreign file
        raise GenforgeError(f"{path}: not a latent-vector file ({e})") from None
    z = z.float()
    if z.ndim == 1:
        z = z.unsqueeze(0)
    if z.ndim != 2:
        raise GenforgeError(f"{path}: expected latent vectors (N, latent), got shape {tuple(z.shape)}")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise GenforgeError(f"{path}: holds no latent vectors (shape {tuple(z.shape)}); save some with "
                            "genforge sample RUN --save-z FILE")
    if not torch.isfinite(z).all():
        bad = int((~torch.isfinite(z)).any(1).sum())
        raise GenforgeError(f"{path}: {bad} of its {z.shape[0]} latent vectors hold NaN or infinite entries")
    return z


def check_width(model, z: torch.Tensor, what: str = "z") -> torch.Tensor:
    """``z`` on the model's device after checking it has the width the model's noise has."""
    expected = model.sample_noise(1, torch.Generator().manual_seed(0)).shape[1]
    if z.shape[1] != expected:
        raise GenforgeError(f"{what} has {z.shape[1]} entries per vector; this model's noise has {expected}")
    return z.to(next(model.parameters()).device)


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 - t) a + t b for each t: a, b (D,), t (T,) -> (T, D)."""
    t = t.unsqueeze(1)
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the great circle from a to b (their norms interpolated linearly);
    falls back to lerp when a and b are (anti)parallel. a, b (D,), t (T,) -> (T, D)."""
    norm_a, norm_b = a.norm(), b.norm()
    cos = torch.dot(a / norm_a, b / norm_b).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if omega < 1e-4 or torch.pi - omega < 1e-4:
        return lerp(a, b, t)
    t = t.unsqueeze(1)
    direction = (torch.sin((1 - t) * omega) * a / norm_a + torch.sin(t * omega) * b / norm_b) / torch.sin(omega)
    return direction * ((1 - t) * norm_a + t * norm_b)


@torch.no_grad()
def generate(model, z: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (N, C, H, W) on the CPU from noise ``z``, in eval mode."""
    was_training = model.training
    model.eval()
    images = model.generate(check_width(model, z)).cpu()
    model.train(was_training)
    return images


def interpolation_noise(model, steps: int, rows: int = 1, spherical: bool = False,
                        generator: torch.Generator | None = None,
                        ends: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``rows`` paths of ``steps`` noise vectors each, (rows * steps, latent), from random end points
    (or ``ends`` = (a, b), each (rows, latent) or (latent,))."""
    if steps < 2:
        raise GenforgeError(f"--steps must be at least 2, not {steps}")
    if ends is None:
        start, stop = model.sample_noise(rows, generator), model.sample_noise(rows, generator)
    else:
        start, stop = (e.reshape(-1, e.shape[-1]).expand(rows, -1) for e in ends)
    t = torch.linspace(0.0, 1.0, steps)
    path = slerp if spherical else lerp
    return torch.cat([path(start[r].cpu().float(), stop[r].cpu().float(), t) for r in range(rows)])


def arithmetic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """mean(a) - mean(b) + mean(c): one vector (1, latent) from three sets of noise vectors (N, latent)."""
    if not (a.shape[1] == b.shape[1] == c.shape[1]):
        raise GenforgeError(f"latent widths differ: {a.shape[1]}, {b.shape[1]}, {c.shape[1]}")
    return (a.mean(0) - b.mean(0) + c.mean(0)).unsqueeze(0)


def arithmetic_strip(model, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The DCGAN figure as one row of images: each vector of A, B and C, their means, and the result."""
    result = arithmetic(a, b, c)
    noise = torch.cat([a.mean(0, keepdim=True), b.mean(0, keepdim=True), c.mean(0, keepdim=True), result])
    return generate(model, noise)
