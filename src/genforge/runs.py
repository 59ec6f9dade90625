"""Reading a finished (or running) run directory back: its config and trained model."""

from __future__ import annotations

from pathlib import Path

import torch

from genforge.checkpoint import latest_checkpoint, load_checkpoint
from genforge.config import RunConfig
from genforge.errors import GenforgeError
from genforge.models import build_model
from genforge.models.base import GenerativeModel
from genforge.train import attach_ema, resume_config


def load_model(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[RunConfig, GenerativeModel, int]:
    """The run's config, its model with the newest complete checkpoint's weights (eval mode), and the step."""
    cfg = resume_config(run_dir)
    folder = latest_checkpoint(Path(run_dir))
    ckpt = load_checkpoint(folder, map_location=device, weights_only=True)
    saved_family = ckpt.extra.get("config", {}).get("family")
    if saved_family != cfg.family:
        raise GenforgeError(f"{folder}: checkpoint of family '{saved_family}', but config.json says '{cfg.family}'")
    shape = tuple(ckpt.extra["image_shape"])
    model = build_model(cfg, shape, int(ckpt.extra["num_classes"]))
    attach_ema(model, cfg.train.ema_decay)
    try:
        model.load_state_dict(ckpt.model)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise GenforgeError(f"{folder}: weights do not fit the '{cfg.family}' model of config.json ({first})") from None
    return cfg, model.to(device).eval(), ckpt.step
