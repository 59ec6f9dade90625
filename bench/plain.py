"""The plain reference: how most published DCGAN / VAE code trains, written by us in a few lines.

Float32 eager, a per-item ``Dataset`` (PIL image -> resize -> ToTensor -> Normalize, one
image at a time) behind a ``DataLoader``, the default (per-parameter) Adam, and every loss
read back with ``.item()`` each step. It trains genforge's own networks for the recipe
(fresh copies, same architecture and batch), so images/s compare pipelines, not models.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from genforge.config import RunConfig
from genforge.data.datasets import load_data
from genforge.models import build_model


class PerItemImages(torch.utils.data.Dataset):
    """One image per ``__getitem__``, decoded and normalised the torchvision way."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int, tanh_range: bool):
        self.images, self.labels = images.numpy(), labels.numpy()
        self.size, self.tanh_range = size, tanh_range

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        pixels = self.images[i]  # (C, H, W) uint8
        image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))  # grey or RGB
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BILINEAR)  # transforms.Resize
        array = np.asarray(image, dtype=np.float32) / 255.0
        x = torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())  # ToTensor
        if self.tanh_range:
            x = (x - 0.5) / 0.5  # Normalize((0.5,), (0.5,))
        return x, int(self.labels[i])


def supports(cfg: RunConfig) -> bool:
    """The plain reference covers the unconditional BCE DCGAN and the MLP VAE."""
    if cfg.family == "vae":
        return True
    return (cfg.family == "gan" and cfg.model.arch == "dcgan" and cfg.model.conditional == "none"
            and cfg.model.loss in ("nonsaturating", "minimax") and cfg.model.d_steps == 1)


class PlainTrainer:
    """``run(steps)`` trains that many steps the plain way and returns images/s."""

    def __init__(self, cfg: RunConfig, root: str | None = None, seed: int = 0, device: str = "cpu"):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        data = load_data(cfg.data, "train", root)  # at data.image_size; folders decoded like the loop's
        shape = tuple(data.images.shape[1:])
        self.cfg, self.model = cfg, build_model(cfg, shape, len(data.classes)).to(self.device)
        self.gan = cfg.family == "gan"
        dataset = PerItemImages(data.images, data.labels, cfg.data.image_size, tanh_range=self.gan)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True,
                                                  drop_last=True, num_workers=0)
        self.batches = iter(self.loader)
        o = cfg.optim
        if self.gan:
            self.opt_g = torch.optim.Adam(self.model.generator.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
            self.opt_d = torch.optim.Adam(self.model.discriminator.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
        else:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
        self.last_losses: tuple[float, ...] = ()

    def next_batch(self) -> torch.Tensor:
        try:
            return next(self.batches)[0].to(self.device)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)[0].to(self.device)

    def step(self) -> None:
        x = self.next_batch()
        if self.gan:
            G, D = self.model.generator, self.model.discriminator
            ones, zeros = torch.ones(x.shape[0], device=x.device), torch.zeros(x.shape[0], device=x.device)
            fake = G(torch.randn(x.shape[0], self.cfg.model.latent_dim, device=x.device))
            self.opt_d.zero_grad()
            loss_d = (F.binary_cross_entropy_with_logits(D(x), ones)
                      + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
            loss_d.backward()
            self.opt_d.step()
            self.opt_g.zero_grad()
            loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
            loss_g.backward()
            self.opt_g.step()
            self.last_losses = (loss_d.item(), loss_g.item())
        else:
            x = torch.round(x)
            mu, logvar = self.model.encode(x)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            recon = F.binary_cross_entropy_with_logits(self.model.decode_logits(z), x, reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (recon + kl) / x.shape[0]
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.last_losses = (loss.item(),)

    def run(self, steps: int) -> float:
        """Train ``steps`` steps; images/s over them."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step()  # .item() each step: the host sync published loops make
        return steps * self.cfg.train.batch_size / (time.perf_counter() - start)
