"""Pinned numbers, as diffusers' tests pin a seeded output: four steps of a tiny DCGAN, VAE, WGAN-GP
and DiscoGAN at seed 0 on the CPU (float32, one thread) log these losses. A change of
initialisation, data order, augmentation, noise or loss arithmetic moves them and fails here;
a change that means to move them updates the table and says why in its commit.

The tolerance is 1e-6 relative (1e-6 absolute near zero): float32 sums may round differently on
another CPU's vector unit, but no real change of the numbers stays that close.
"""

from __future__ import annotations

import json

import pytest

from genforge.config import load_recipe
from genforge.train import train

COMMON = ["train.batch_size=16", "train.threads=1", "train.device=cpu", "train.precision=fp32", "train.seed=0",
          "train.steps=4", "train.log_every=1", "train.sample_every=1000", "train.checkpoint_every=1000"]
CASES = {  # name -> (recipe, overrides, the logged terms of step 4)
    "dcgan": ("mnist-dcgan", ["model.width=8", "model.latent_dim=16"],
              {"d/loss": 0.9934107661247253, "g/loss": 0.6371976137161255}),
    "vae": ("mnist-vae", ["model.hidden=32", "model.latent_dim=4", "train.eval_samples=5"],
            {"vae/loss": 546.49267578125, "vae/recon": 546.1509399414062, "vae/kl": 0.34172266721725464}),
    "wgan-gp": ("mnist-dcgan", ["model.width=8", "model.latent_dim=16", "model.loss=wgan-gp", "model.d_steps=2"],
                {"d/loss": -3.2698440551757812, "d/gp": 0.8851505517959595, "g/loss": 1.8958475589752197}),
    "discogan": ("gmm-discogan", ["model.hidden=16", "model.g_steps=2"],
                 {"d/loss": 2.7710366249084473, "g/loss": 1.7476842403411865}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_four_seeded_steps_log_the_pinned_losses(tmp_path, name):
    recipe, overrides, pinned = CASES[name]
    train(load_recipe(recipe, [*overrides, *COMMON]), tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = next(row for row in rows if row["step"] == 4 and set(pinned) <= set(row))
    assert {key: logged[key] for key in pinned} == pytest.approx(pinned, rel=1e-6, abs=1e-6)
