"""The one training loop: updates, run-directory layout, exact resume, schedules, Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from genforge.checkpoint import latest_checkpoint, load_checkpoint
from genforge.config import load_recipe
from genforge.data.datasets import load_images
from genforge.models import build_model
from genforge.models.base import Batch
from genforge.models.gan import GAN
from genforge.models.vae import VAE
from genforge.api import resume_config
from genforge.train import make_optimizers, train, train_step

from .conftest import step_phases, synthetic_folder, tiny_config, tiny_overrides


def _model_and_optimizers(recipe: str, *extra: str):
    cfg = tiny_config(recipe, *extra)
    torch.manual_seed(0)
    model = build_model(cfg, (1, 28, 28), 10)
    return model, make_optimizers(model, cfg.optim)


def _batch(model, n: int = 16) -> Batch:
    data = load_images("mnist-10k", "train")
    return Batch(model.prepare(data.images[:n]), data.labels[:n])


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_vae_train_step_changes_every_weight():
    model, optimizers = _model_and_optimizers("mnist-vae")
    before = _snapshot(model)
    step_phases(model, optimizers, _batch(model))
    assert _changed(before, model) == set(before)


def test_gan_train_step_changes_generator_and_discriminator():
    model, optimizers = _model_and_optimizers("mnist-dcgan")
    params = {name for name, _ in model.named_parameters()}
    before = _snapshot(model)
    step_phases(model, optimizers, _batch(model))
    changed = _changed(before, model) & params
    assert {k for k in params if k.startswith("generator.")} <= changed
    assert {k for k in params if k.startswith("discriminator.")} <= changed


def test_make_optimizers_gives_one_optimiser_per_group_the_family_names():
    model, optimizers = _model_and_optimizers("mnist-dcgan", "optim.lr=1e-3")
    assert set(optimizers) == {"generator", "discriminator"}
    assert all(isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-3 for opt in optimizers.values())
    g_params = {id(p) for p in optimizers["generator"].param_groups[0]["params"]}
    assert g_params == {id(p) for p in model.generator.parameters()}


def test_train_step_draws_a_fresh_batch_per_repeat_and_logs_the_mean():
    model, optimizers = _model_and_optimizers("mnist-dcgan", "model.d_steps=3")
    batches = [_batch(model) for _ in range(4)]
    drawn = iter(batches)
    logged = train_step(model, optimizers, model.phases(), lambda: next(drawn))
    assert next(drawn, None) is None  # 3 critic repeats + 1 generator step, each on its own batch
    assert {"d/loss", "g/loss"} <= set(logged)
    assert all(not value.requires_grad and value.dim() == 0 for value in logged.values())
    seen = []
    critic = model.phases()[0]
    spy = dataclasses.replace(critic, step=lambda batch: seen.append(critic.step(batch)) or seen[-1])
    logged = train_step(model, optimizers, [spy], lambda: batches[len(seen)])
    assert len(seen) == 3 and torch.allclose(logged["d/loss"], torch.stack([terms["loss"] for terms in seen]).mean())


def test_train_step_runs_only_the_phases_asked_for():
    model, optimizers = _model_and_optimizers("mnist-dcgan")
    params = {name for name, _ in model.named_parameters()}
    before = _snapshot(model)
    batch = _batch(model)
    logged = train_step(model, optimizers, model.phases(), lambda: batch, only={"d"})
    assert {key.split("/", 1)[0] for key in logged} == {"d"}
    changed = _changed(before, model) & params
    assert changed and all(key.startswith("discriminator.") for key in changed)


def test_a_false_gate_skips_the_update_and_its_hook():
    model, optimizers = _model_and_optimizers("mnist-vae")
    phase, = model.phases()
    hooks = []
    gated = dataclasses.replace(phase, step=lambda batch: {**phase.step(batch), "gate": torch.tensor(False)},
                                after=lambda: hooks.append(1))
    before = _snapshot(model)
    batch = _batch(model)
    logged = train_step(model, optimizers, [gated], lambda: batch)
    assert not _changed(before, model) and not hooks and "vae/gate" not in logged
    train_step(model, optimizers, [dataclasses.replace(gated, step=phase.step)], lambda: batch)
    assert _changed(before, model) and hooks == [1]


@pytest.mark.parametrize("recipe", ["mnist-vae", "mnist-dcgan"])
def test_eval_and_sampling_leave_weights_and_buffers_alone(recipe):
    model, _ = _model_and_optimizers(recipe)
    before = _snapshot(model)
    model.eval()
    with torch.no_grad():
        images = model.generate(model.sample_noise(8))
    model.train()
    samples = model.sample(8, torch.Generator().manual_seed(0))  # called in train mode: must switch to eval
    assert images.shape == samples.shape == (8, 1, 28, 28)
    assert model.training
    assert not _changed(before, model)


# --- the loop, end to end --------------------------------------------------------------

def test_gan_run_directory_layout(gan_run):
    assert json.loads((gan_run / "config.json").read_text())["family"] == "gan"
    keys = set(load_file(gan_run / "checkpoints" / "latest" / "model.safetensors"))
    assert any(k.startswith("generator.") for k in keys) and any(k.startswith("discriminator.") for k in keys)
    assert any(k.startswith("ema.generator.") for k in keys)
    assert all(k.split(".", 1)[0] in ("generator", "discriminator", "ema") for k in keys)
    assert {k.removeprefix("ema.") for k in keys if k.startswith("ema.")} == {
        k for k in keys if k.startswith("generator.")}
    assert {p.name for p in (gan_run / "samples").iterdir()} == {"step-0000002.png", "step-0000004.png", "final.png",
                                                               "progress.gif"}
    assert (gan_run / "plots" / "losses.png").stat().st_size > 0
    assert list(gan_run.glob("events.out.tfevents.*"))


def test_vae_run_directory_layout_and_metrics(vae_run):
    keys = set(load_file(vae_run / "checkpoints" / "latest" / "model.safetensors"))
    assert keys and all(k.split(".", 1)[0] in ("encoder", "decoder") for k in keys)
    assert (vae_run / "samples" / "final.png").is_file()
    for name in ("losses.png", "reconstructions.png", "prior_samples.png", "latent_scatter.png", "elbo_curves.png"):
        assert (vae_run / "plots" / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (vae_run / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("step" in row for row in rows)
    assert [row["step"] for row in rows if "vae/loss" in row] == [2, 4]
    final = rows[-1]
    assert final["step"] == 4 and final["eval/nll_importance_samples"] == 5
    assert final["eval/test_nll"] > 0 and final["eval/test_neg_elbo"] > 0


def test_no_ema_keys_without_ema(vae_run):
    assert not any(k.startswith("ema.") for k in load_file(vae_run / "checkpoints" / "latest" / "model.safetensors"))


def test_ema_weights_differ_from_live_ones(gan_run):
    weights = load_file(gan_run / "checkpoints" / "latest" / "model.safetensors")
    live = "generator.project.0.weight"
    assert not torch.equal(weights[live], weights[f"ema.{live}"])


def _final_weights(run_dir):
    return load_file(latest_checkpoint(run_dir) / "model.safetensors")


@pytest.mark.parametrize("recipe, extra", [("mnist-vae", ()), ("mnist-dcgan", ("train.ema_decay=0.5",))])
def test_resume_is_bit_identical(tmp_path, recipe, extra):
    settings = (*extra, "train.log_every=5", "train.sample_every=4")
    straight = train(tiny_config(recipe, "train.steps=12", *settings), tmp_path / "straight", progress=False)
    half = train(tiny_config(recipe, "train.steps=6", *settings), tmp_path / "halves", progress=False)
    assert (straight.step, half.step) == (12, 6)
    resumed = train(resume_config(tmp_path / "halves", steps=12), tmp_path / "halves", resume=True, progress=False)
    assert resumed.step == 12

    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "halves")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    opt_a = load_checkpoint(latest_checkpoint(tmp_path / "straight")).optimizers
    opt_b = load_checkpoint(latest_checkpoint(tmp_path / "halves")).optimizers
    for name in opt_a:
        for index, state in opt_a[name]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, opt_b[name]["state"][index][key]), (name, index, key)


def test_the_final_metrics_row_is_marked_beside_the_last_checkpoints_and_a_resume_drops_it(tmp_path):
    def eval_rows(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [row for row in rows if any(key.startswith("eval/") for key in row)]

    settings = ("model.hidden=16", "train.threads=1", "train.log_every=5", "train.checkpoint_every=5",
                "train.sample_every=100", "train.device=cpu")
    train(load_recipe("ring-8", ["train.steps=10", *settings]), tmp_path / "straight", progress=False)
    train(load_recipe("ring-8", ["train.steps=5", *settings]), tmp_path / "halves", progress=False)
    first = eval_rows(tmp_path / "halves")
    assert [(row["step"], row.get("stage")) for row in first] == [(5, None), (5, "final")]  # one of each at step 5
    train(resume_config(tmp_path / "halves", steps=10), tmp_path / "halves", resume=True, progress=False)
    straight, resumed = eval_rows(tmp_path / "straight"), eval_rows(tmp_path / "halves")
    assert [(row["step"], row.get("stage")) for row in resumed] == [(5, None), (10, None), (10, "final")]
    assert resumed == straight  # the earlier end's final row is gone: the log reads as one training


def test_interrupted_run_with_a_schedule_resumes_bit_identical(tmp_path, monkeypatch):
    settings = ("train.steps=10", "optim.schedule=cosine", "optim.final_lr=0.1", "train.log_every=5")
    train(tiny_config("mnist-dcgan", *settings), tmp_path / "straight", progress=False)
    original, calls = GAN.g_loss, {"n": 0}

    def interrupting(self, n, device, fakes=None):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, n, device, fakes)

    with monkeypatch.context() as patch:
        patch.setattr(GAN, "g_loss", interrupting)
        assert train(tiny_config("mnist-dcgan", *settings), tmp_path / "halves", progress=False).step == 4
    assert "loss_window" in load_checkpoint(latest_checkpoint(tmp_path / "halves", "step-0000004")).extra
    assert train(resume_config(tmp_path / "halves"), tmp_path / "halves", resume=True, progress=False).step == 10
    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "halves")
    assert all(torch.equal(a[key], b[key]) for key in a)
    # the row of step 5 averages steps 1-5 as the straight run's does (it averaged step 5 alone)
    assert _loss_rows(tmp_path / "halves") == _loss_rows(tmp_path / "straight")
    assert [row["step"] for row in _loss_rows(tmp_path / "straight")] == [5, 10]


def _loss_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if "/" in key and not key.startswith("eval/") or key == "step"}
            for row in rows if any(key.startswith(("g/", "d/")) for key in row)]


def test_checkpoint_every_and_data_order_saved(tmp_path):
    train(tiny_config("mnist-vae", "train.steps=5", "train.checkpoint_every=2"), tmp_path, progress=False)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert ckpts == ["step-0000004", "step-0000005"]  # 2, 4, and the final 5; two kept
    ckpt = load_checkpoint(latest_checkpoint(tmp_path))
    assert ckpt.step == 5 and ckpt.extra["data_order"] == {"epoch": 0, "position": 5 * 16, "size": 9000}
    assert ckpt.extra["config"]["train"]["steps"] == 5 and ckpt.extra["image_shape"] == [1, 28, 28]


@pytest.mark.parametrize("extra", [("model.schedule=threshold",), ("model.arch=livestream",),
                                   ("model.arch=livestream", "model.schedule=threshold", "data.image_size=32"),
                                   ("model.loss=minimax", "model.d_steps=2", "model.noise=uniform")])
def test_gan_variants_train(tmp_path, extra):
    result = train(tiny_config("mnist-dcgan", "train.steps=2", *extra), tmp_path, progress=False)
    assert result.step == 2 and not result.interrupted
    ckpt = load_checkpoint(latest_checkpoint(tmp_path))
    assert ckpt.step == 2 and all(torch.isfinite(v).all() for v in ckpt.model.values())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2


def test_threshold_schedule_logs_its_three_phases(tmp_path):
    train(tiny_config("mnist-dcgan", "train.steps=2", "model.schedule=threshold"), tmp_path, progress=False)
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"d_fake/loss", "g/loss", "d_real/loss"} <= set(row)


def test_data_image_size_32_reaches_the_model(tmp_path):
    train(tiny_config("mnist-dcgan", "train.steps=1", "data.image_size=32"), tmp_path, progress=False)
    assert load_checkpoint(latest_checkpoint(tmp_path), weights_only=True).extra["image_shape"] == [1, 32, 32]


@pytest.mark.parametrize("recipe, cls, method", [("mnist-vae", VAE, "loss_terms"), ("mnist-dcgan", GAN, "g_loss")])
def test_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint(tmp_path, monkeypatch, recipe, cls, method):
    """Ctrl-C during step 3 (from inside a phase): step 3 finishes, is saved, and the run reports it."""
    original = getattr(cls, method)
    calls = {"n": 0}

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, interrupting)
    handler = signal.getsignal(signal.SIGINT)
    result = train(tiny_config(recipe, "train.steps=50"), tmp_path, progress=False)
    assert result.interrupted and result.step == 3 and result.metrics == {}
    assert load_checkpoint(latest_checkpoint(tmp_path)).step == 3
    assert (tmp_path / "samples" / "final.png").is_file()
    assert signal.getsignal(signal.SIGINT) is handler  # the previous handler is back

    monkeypatch.setattr(cls, method, original)
    resumed = train(resume_config(tmp_path, steps=5), tmp_path, resume=True, progress=False)
    assert resumed.step == 5 and not resumed.interrupted


def test_ctrl_c_through_the_cli_exits_130(tmp_path, monkeypatch, capsys):
    from genforge.cli import main

    original = VAE.loss_terms
    calls = {"n": 0}

    def interrupting(self, x):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, x)

    monkeypatch.setattr(VAE, "loss_terms", interrupting)
    run_dir = tmp_path / "run"
    code = main(["train", "mnist-vae", "--run-dir", str(run_dir), "--no-progress",
                 *tiny_overrides("mnist-vae", "train.steps=40")])
    err = capsys.readouterr().err
    assert code == 130
    assert "interrupted at step 2" in err and f"--resume {run_dir}" in err
    assert load_checkpoint(latest_checkpoint(run_dir)).step == 2


def test_a_stop_asked_in_writing_stops_the_loop_before_its_first_step(tmp_path):
    """RUN_DIR/stop.json naming this process (the studio's Stop, for a child that could not take the
    signal yet) stops a resume at its checkpoint, and is taken away; one naming another process is not."""
    from genforge.runs import STOP_FILE, request_stop

    train(tiny_config("mnist-vae", "train.steps=3"), tmp_path, progress=False)
    request_stop(tmp_path, os.getpid())
    result = train(resume_config(tmp_path, steps=6), tmp_path, resume=True, progress=False)
    assert result.interrupted and result.step == 3
    assert not (tmp_path / STOP_FILE).exists()
    request_stop(tmp_path, os.getpid() + 1_000_000)  # another process's
    result = train(resume_config(tmp_path, steps=6), tmp_path, resume=True, progress=False)
    assert not result.interrupted and result.step == 6
    assert (tmp_path / STOP_FILE).exists()  # not this process's to take away


def test_minutes_budget_stops_the_run(tmp_path):
    result = train(tiny_config("mnist-vae", "train.steps=1000000", "train.minutes=0.02"), tmp_path, progress=False)
    assert 0 < result.step < 1000000 and not result.interrupted
    assert load_checkpoint(latest_checkpoint(tmp_path)).step == result.step


@pytest.mark.parametrize("change", ["remove", "add"])
def test_a_resume_on_an_image_folder_that_changed_says_so(tmp_path, private_cache, change):
    from genforge.errors import GenforgeError

    folder = synthetic_folder(tmp_path / "imgs", count=40)
    cfg = tiny_config("mnist-dcgan", f"data.dataset=folder:{folder}", "data.channels=3", "data.image_size=32",
                      "train.steps=2")
    train(cfg, tmp_path / "run", progress=False)
    before = sorted((tmp_path / "run" / "checkpoints").iterdir())
    if change == "remove":  # it was blamed on a damaged state.json
        for path in sorted(folder.iterdir())[:10]:
            path.unlink()
    else:
        synthetic_folder(tmp_path / "more", count=3, seed=1)
        for index, path in enumerate(sorted((tmp_path / "more").iterdir())):
            path.rename(folder / f"new-{index}.png")
    now = 30 if change == "remove" else 43
    with pytest.raises(GenforgeError, match=f"^{tmp_path / 'run'}: the run's data has {now} items now and had 40 "
                                            rf"when step-0000002 was written \(were images added to or removed from "
                                            rf"{folder}\?\); resume with the data as it was"):
        train(resume_config(tmp_path / "run", steps=4), tmp_path / "run", resume=True, progress=False)
    assert sorted((tmp_path / "run" / "checkpoints").iterdir()) == before


def test_the_advice_for_a_moved_image_folder_can_be_followed_on_resume(tmp_path, private_cache):
    from genforge.errors import GenforgeError

    folder = synthetic_folder(tmp_path / "imgs", count=20)
    cfg = tiny_config("mnist-dcgan", f"data.dataset=folder:{folder}", "data.channels=3", "data.image_size=32",
                      "train.steps=2")
    train(cfg, tmp_path / "run", progress=False)
    folder.rename(tmp_path / "moved")
    with pytest.raises(GenforgeError, match=f"link them there: ln -s NEW_PLACE {folder}\\)$"):
        # (data.path is a key a resume may not change: the advice had said to set it)
        train(resume_config(tmp_path / "run", steps=3), tmp_path / "run", resume=True, progress=False)
    folder.symlink_to(tmp_path / "moved")
    assert train(resume_config(tmp_path / "run", steps=3), tmp_path / "run", resume=True, progress=False).step == 3


def test_dataset_smaller_than_a_batch_trains_with_the_batch_cut(tmp_path, private_cache, capsys):
    folder = synthetic_folder(tmp_path / "nine", count=9)
    cfg = tiny_config("mnist-dcgan", f"data.dataset=folder:{folder}", "data.channels=3", "data.image_size=32",
                      "train.steps=3")
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.step == 3
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "9 items, fewer than train.batch_size=16: training with batches of 9" in err
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert ckpt.extra["data_order"] == {"epoch": 5, "position": 9, "size": 9}  # D's and G's phase: a whole-dataset batch each
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(row["d/loss"])) for row in rows if "d/loss" in row)


def test_a_cut_batch_still_resumes_bit_identical(tmp_path, private_cache):
    folder = synthetic_folder(tmp_path / "nine", count=9)
    settings = (f"data.dataset=folder:{folder}", "data.channels=3", "data.image_size=32", "data.flip=true",
                "train.log_every=3")
    train(tiny_config("mnist-dcgan", *settings, "train.steps=6"), tmp_path / "straight", progress=False)
    train(tiny_config("mnist-dcgan", *settings, "train.steps=3"), tmp_path / "halves", progress=False)
    train(resume_config(tmp_path / "halves", steps=6), tmp_path / "halves", resume=True, progress=False)
    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "halves")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_the_pokemon_recipe_trains_on_a_folder_of_nine_images(tmp_path, private_cache, capsys):
    from genforge.cli import main

    folder = synthetic_folder(tmp_path / "nine", count=9)
    code = main(["train", "pokemon-dcgan", "--steps", "3", "--run-dir", str(tmp_path / "run"), "--no-progress",
                 f"data.path={folder}", "model.width=4", "train.threads=1", "train.device=cpu"])
    assert code == 0, capsys.readouterr().err
    assert load_checkpoint(latest_checkpoint(tmp_path / "run")).step == 3


@pytest.mark.parametrize("bad, key", [("model.top_k=5", "model.top_k"), ("optim.lr=-1", "optim.lr"),
                                      ("train.log_every=0", "train.log_every"),
                                      ("data.image_size=30", "data.image_size=30")])
def test_a_refused_config_leaves_no_run_folder(tmp_path, bad, key):
    from genforge.errors import GenforgeError

    with pytest.raises(GenforgeError, match=key.replace(".", r"\.")):
        train(tiny_config("mnist-dcgan", bad), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_no_budget_is_refused_before_anything_is_written(tmp_path):
    from genforge.errors import GenforgeError

    cfg = tiny_config("mnist-vae", "train.steps=0", "train.minutes=0")
    with pytest.raises(GenforgeError, match="no budget"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("schedule, halfway", [("constant", 1.0), ("linear", 0.55), ("cosine", 0.55)])
def test_lr_factor_decays_from_one_to_final_lr(schedule, halfway):
    from genforge.config import OptimConfig
    from genforge.train import lr_factor

    cfg = OptimConfig(schedule=schedule, final_lr=0.1)
    assert lr_factor(cfg, 0.0) == 1.0
    assert lr_factor(cfg, 0.5) == pytest.approx(halfway)  # 0.1 + 0.9 * 0.5 for both decays
    assert lr_factor(cfg, 1.0) == pytest.approx(1.0 if schedule == "constant" else 0.1)
    if schedule == "cosine":
        assert lr_factor(cfg, 0.25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + 2 ** -0.5))


def test_schedule_sets_the_optimisers_learning_rate(tmp_path):
    train(tiny_config("mnist-dcgan", "train.steps=4", "optim.lr=1e-3", "optim.schedule=linear"), tmp_path,
          progress=False)
    groups = [g for opt in load_checkpoint(latest_checkpoint(tmp_path)).optimizers.values() for g in opt["param_groups"]]
    assert groups and all(g["lr"] == pytest.approx(1e-3 * 1 / 4) for g in groups)  # the last step ran at 3 of 4


def test_schedule_without_steps_is_refused_before_anything_is_written(tmp_path):
    from genforge.errors import GenforgeError

    cfg = tiny_config("mnist-vae", "train.steps=0", "train.minutes=1", "optim.schedule=linear")
    with pytest.raises(GenforgeError, match="give a budget in steps \\(train.steps\\)"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_inference_block_restores_training_mode_and_turns_off_grad():
    cfg = tiny_config("mnist-dcgan")
    model = build_model(cfg, (1, 28, 28), 10)
    model.train()
    with model.inference():
        assert not model.training and not torch.is_grad_enabled()
    assert model.training and torch.is_grad_enabled()


def test_ema_ramps_up_so_early_averages_follow_the_live_weights():
    from genforge.train import attach_ema, update_ema

    model = build_model(tiny_config("mnist-dcgan", "train.ema_decay=0.999"), (1, 28, 28), 10)
    attach_ema(model, 0.999)
    live = next(model.generator.parameters())
    average = next(model.ema["generator"].parameters())
    with torch.no_grad():
        start = average.clone()
        live.add_(1.0)
    update_ema(model, 0.999, step=0)  # decay min(0.999, 1/10) = 0.1: 90% of the way
    assert torch.allclose(average, start + 0.9, atol=1e-5)
    update_ema(model, 0.999, step=100_000)  # ramped up: the full decay
    assert torch.allclose(average, start + 0.9 + 0.1 * 0.001, atol=1e-5)


def test_augmentation_jitters_a_second_domain_like_the_first():
    """data.flip on a two-domain set flips B's images too (it once reached A's alone)."""
    from types import SimpleNamespace

    from genforge.config import load_recipe
    from genforge.runtime import Distributed
    from genforge.train import BatchStream

    cfg = load_recipe("fashion-discogan", ["model.width=4", "data.flip=true", "train.batch_size=32"])
    model = build_model(cfg, (1, 32, 32), 2)
    half = torch.zeros(64, 1, 32, 32, dtype=torch.uint8)
    half[..., :16] = 255  # bright left half: a flip moves it right
    data = SimpleNamespace(images=half.clone(), labels=torch.zeros(64, dtype=torch.long), images_b=half.clone(),
                           labels_b=torch.zeros(64, dtype=torch.long))
    torch.manual_seed(0)
    batch = BatchStream(data, cfg, model, Distributed(), torch.device("cpu"), torch.contiguous_format)()
    for images in (batch.images, batch.images_b):
        bright_left = images[..., :16].mean((1, 2, 3)) > images[..., 16:].mean((1, 2, 3))
        assert 0 < int(bright_left.sum()) < len(images)  # some flipped, some not, in either domain
