"""Many seeds as one batched model (genforge.batched): each seed's run is the run it trains alone."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from genforge.batched import train_batched, why_not_batched
from genforge.checkpoint import latest_checkpoint, load_checkpoint
from genforge.config import load_recipe
from genforge.api import resume_config
from genforge.train import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

QUIET = ["train.threads=1", "train.device=cpu", "train.sample_every=1000", "train.checkpoint_every=1000",
         "train.log_every=2", "train.steps=4"]
# The toy bench's best configuration's options (batch-norm G, top-k G updates, the decayed learning rate) on tiny MLPs.
GAN_TINY = ["model.hidden=16", "model.layers=2", "model.latent_dim=2", "train.batch_size=32", "model.g_norm=batch",
            "model.top_k=0.5", "optim.schedule=linear", *QUIET]
DISCO_TINY = ["model.hidden=16", "model.g_steps=2", "train.batch_size=16", *QUIET]


def seed_configs(recipe: str, overrides: list[str], seeds=(0, 1, 2)):
    return [load_recipe(recipe, [*overrides, f"train.seed={seed}"]) for seed in seeds]


def assert_same_run(batched_dir: Path, alone_dir: Path, tolerance: float = 1e-5) -> None:
    """Weights, optimiser moments within float tolerance; RNG stream and data order exactly equal."""
    mine, alone = load_checkpoint(latest_checkpoint(batched_dir)), load_checkpoint(latest_checkpoint(alone_dir))
    assert mine.step == alone.step and mine.model.keys() == alone.model.keys()
    for key in alone.model:
        torch.testing.assert_close(mine.model[key], alone.model[key], atol=tolerance, rtol=tolerance, msg=key)
    for group, state in alone.optimizers.items():
        for index, moments in state["state"].items():
            for name, value in moments.items():
                torch.testing.assert_close(mine.optimizers[group]["state"][index][name], value, atol=tolerance,
                                           rtol=1e-3, msg=f"{group} {index} {name}")
    assert torch.equal(mine.rng["torch"], alone.rng["torch"])  # the seed's own stream, drawn as alone
    assert mine.extra["data_order"] == alone.extra["data_order"]


@pytest.mark.parametrize("recipe,overrides", [("ring-8", GAN_TINY), ("gmm-discogan", DISCO_TINY)])
def test_a_batched_seed_matches_that_seed_trained_alone(tmp_path, recipe, overrides):
    cfgs = seed_configs(recipe, overrides)
    lines = []
    results = train_batched(cfgs, [tmp_path / f"seed-{s}" for s in (0, 1, 2)], progress=False, log=lines.append)
    assert "batched model" in lines[0] and [r.step for r in results] == [4, 4, 4]
    train(copy.deepcopy(cfgs[1]), tmp_path / "alone", progress=False)
    assert_same_run(tmp_path / "seed-1", tmp_path / "alone")
    rows = [line for line in (tmp_path / "seed-1" / "metrics.jsonl").read_text().splitlines() if '"images_per_s"' in line]
    assert len(rows) == 2  # its own metrics, logged at steps 2 and 4
    first, second = (load_checkpoint(latest_checkpoint(tmp_path / f"seed-{s}")).model for s in (0, 1))
    assert any(not torch.equal(first[k], second[k]) for k in first)  # independent seeds


def test_a_batched_seed_resumes_alone(tmp_path):
    cfgs = seed_configs("ring-8", GAN_TINY, seeds=(0, 1))
    train_batched(cfgs, [tmp_path / "seed-0", tmp_path / "seed-1"], progress=False, log=lambda _: None)
    train(copy.deepcopy(cfgs[1]), tmp_path / "alone", progress=False)
    for folder in (tmp_path / "seed-1", tmp_path / "alone"):  # both continued alone, by 2 more steps
        train(resume_config(folder, steps=6), folder, resume=True, progress=False)
    assert_same_run(tmp_path / "seed-1", tmp_path / "alone")


def test_a_batched_seed_stopped_between_log_steps_keeps_its_loss_window_as_alone(tmp_path):
    cfgs = seed_configs("ring-8", [*GAN_TINY, "train.checkpoint_every=3"], seeds=(0, 1))  # logs at 2 and 4
    train_batched(cfgs, [tmp_path / "seed-0", tmp_path / "seed-1"], progress=False, log=lambda _: None)
    train(copy.deepcopy(cfgs[1]), tmp_path / "alone", progress=False)
    mine, alone = (load_checkpoint(latest_checkpoint(tmp_path / name, "step-0000003")).extra["loss_window"]
                   for name in ("seed-1", "alone"))
    assert mine["counts"] == alone["counts"] and set(mine["counts"].values()) == {1}
    assert mine["sums"] == pytest.approx(alone["sums"], rel=1e-5, abs=1e-6)


def test_configurations_the_batched_step_does_not_take_train_one_by_one(tmp_path):
    cfgs = seed_configs("ring-8", [*GAN_TINY, "model.loss=wgan-gp", "train.steps=2"], seeds=(0, 1))
    assert "gradient penalties" in why_not_batched(cfgs)
    lines = []
    results = train_batched(cfgs, [tmp_path / "a", tmp_path / "b"], progress=False, log=lines.append)
    assert lines == ["genforge: training the 2 seeds one by one: gradient penalties differentiate inside the step, "
                     "which vmap does not take"]
    assert [r.step for r in results] == [2, 2]
    assert why_not_batched(seed_configs("ring-8", ["model.reuse_fakes=true", *GAN_TINY], seeds=(0, 1))).startswith(
        "model.reuse")
    assert why_not_batched(seed_configs("mnist-dcgan", ["model.hidden=8"], seeds=(0, 1))).startswith("model.arch=dcgan")
    assert why_not_batched([cfgs[0], load_recipe("ring-8", ["train.seed=1", "optim.lr=0.1"])]) is not None
    assert why_not_batched(cfgs[:1]) == "one seed"
    assert "bound by arithmetic" in why_not_batched(seed_configs("gmm-discogan", [], seeds=(0, 1)))  # hidden 256


@pytest.mark.parametrize("name,options", [("Adam", {"fused": True}), ("Adam", {"foreach": False}),
                                          ("AdamW", {"fused": True, "weight_decay": 0.1}),
                                          ("RMSprop", {"foreach": True, "weight_decay": 0.01})])
def test_one_optimiser_over_stacked_weights_makes_each_seeds_own_updates(name, options):
    """The claim the batched step rests on: these optimisers are elementwise, so one over (N, ...)
    weights equals N of them over each seed's own."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(3, 4, generator=generator) for _ in range(3)]
    grads = [[torch.randn(3, 4, generator=generator) for _ in range(3)] for _ in range(4)]  # 4 steps x 3 seeds
    kind = getattr(torch.optim, name)
    alone = [w.clone().requires_grad_() for w in weights]
    alone_opts = [kind([w], lr=1e-2, **options) for w in alone]
    stacked = torch.stack(weights).requires_grad_()
    stacked_opt = kind([stacked], lr=1e-2, **options)
    for step_grads in grads:
        for w, opt, g in zip(alone, alone_opts, step_grads):
            w.grad = g.clone()
            opt.step()
        stacked.grad = torch.stack(step_grads)
        stacked_opt.step()
    torch.testing.assert_close(stacked.detach(), torch.stack([w.detach() for w in alone]), atol=1e-7, rtol=1e-6)
