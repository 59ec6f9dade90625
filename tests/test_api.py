"""The application layer: configs, run folders, training in and out of process, using a model."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from genforge import api
from genforge.errors import GenforgeError

TOY = ["train.threads=1", "train.device=cpu", "train.log_every=5", "train.sample_every=1000",
       "train.checkpoint_every=1000", "model.hidden=16", "model.layers=1", "train.batch_size=32"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("api") / "ring"
    api.train_run(api.check_config("ring-8", TOY, steps=20), run_dir, progress=False)
    return run_dir


def test_recipes_list_every_builtin_with_its_family():
    listed = {r.name: r.family for r in api.recipes()}
    assert listed["mnist-vae"] == "vae" and listed["ring-8"] == "gan" and listed["gmm-discogan"] == "discogan"


def test_recipe_schema_gives_types_defaults_choices_and_help():
    schema = api.recipe_schema("mnist-dcgan")
    fields = {f.key: f for f in schema.fields}
    assert fields["optim.lr"].type == "float" and fields["optim.lr"].default == pytest.approx(1e-3)
    assert fields["train.steps"].type == "int"
    assert fields["optim.fused"].type == "bool"
    assert "wgan-gp" in fields["model.loss"].choices and fields["model.loss"].help
    assert json.loads(json.dumps(schema.to_dict()))["name"] == "mnist-dcgan"


def test_check_config_names_the_bad_key_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GenforgeError, match="optim.lrr"):
        api.check_config("mnist-dcgan", ["optim.lrr=1"])
    with pytest.raises(GenforgeError, match="--steps must be positive"):
        api.check_config("mnist-dcgan", steps=0)
    with pytest.raises(GenforgeError, match="not both"):
        api.check_config("mnist-dcgan", steps=3, minutes=1.0)
    assert list(tmp_path.iterdir()) == []
    cfg = api.check_config("mnist-dcgan", {"optim.lr": "1e-4"}, minutes=2.5, seed=3)
    assert (cfg.optim.lr, cfg.train.minutes, cfg.train.steps, cfg.train.seed) == (1e-4, 2.5, 0, 3)


def test_new_run_dirs_are_unique_and_an_existing_run_is_refused(tmp_path, toy_run):
    cfg = api.check_config("ring-8")
    first = api.new_run_dir(cfg, root=tmp_path)
    first.mkdir()
    assert api.new_run_dir(cfg, root=tmp_path) != first
    with pytest.raises(GenforgeError, match="already holds a run"):
        api.new_run_dir(cfg, toy_run)


def test_a_finished_run_reads_back_with_status_budget_and_metrics(toy_run):
    run = api.open_run(toy_run)
    assert run.status() == "finished"
    summary = run.summary()
    assert (summary.step, summary.total_steps) == (20, 20)
    assert "eval/modes" in summary.headline
    assert run.metrics() and run.timeline()[-1][1].name == "final.png"
    assert not (toy_run / "lock").exists()


def test_resume_accepts_how_it_runs_and_refuses_what_it_trains(toy_run):
    cfg = api.resume_config(toy_run, steps=30, overrides=["train.threads=1", "train.log_every=3"])
    assert (cfg.train.steps, cfg.train.log_every) == (30, 3)
    with pytest.raises(GenforgeError, match="cannot change 'model.hidden'"):
        api.resume_config(toy_run, overrides=["model.hidden=8"])
    with pytest.raises(GenforgeError, match="no config.json"):
        api.resume_config(toy_run / "samples")


def test_sample_interpolate_and_arithmetic_on_points(toy_run):
    loaded = api.load(toy_run)
    assert loaded.capabilities.data == "points" and loaded.step == 20
    points = api.sample(loaded, 50, seed=1)
    assert points.shape == (50, 2)
    assert torch.equal(points, api.sample(loaded, 50, seed=1))
    walk = api.interpolate(loaded, steps=5, rows=2)
    assert walk.shape == (10, 2)
    z = api.noise(loaded, 3, seed=2)
    strip = api.arithmetic(loaded, z, z, z)
    assert strip.shape == (4, 2)
    picture = api.picture(loaded, walk, paths=2)
    assert picture.shape[0] == 3 and picture.std() > 0
    assert api.png_bytes(picture)[:8] == b"\x89PNG\r\n\x1a\n"


def test_rejection_sampling_keeps_the_asked_count(toy_run):
    loaded = api.load(toy_run)
    assert api.sample(loaded, 40, seed=0, reject=0.5).shape == (40, 2)


@pytest.mark.parametrize("call, message", [
    (lambda m: api.sample(m, 10**9), "must be 1 to"),
    (lambda m: api.sample(m, 0), "must be 1 to"),
    (lambda m: api.sample(m, 4, label=1), "needs a conditional GAN"),
    (lambda m: api.class_grid(m, 4), "needs a conditional GAN"),
    (lambda m: api.translate(m, torch.zeros(2, 2)), "needs a DiscoGAN run"),
    (lambda m: api.encode(m, torch.zeros(1, 1, 28, 28)), "needs a VAE run"),
    (lambda m: api.decode_image_bytes(b"x", m), "needs a run on images"),
    (lambda m: api.interpolate(m, rows=0), "--rows must be positive"),
])
def test_what_a_model_cannot_do_is_one_line(toy_run, call, message):
    with pytest.raises(GenforgeError, match=message):
        call(api.load(toy_run))


def test_vae_encode_reconstruct_and_uploads(vae_run):
    loaded = api.load(vae_run)
    buffer = io.BytesIO()
    Image.new("L", (40, 30), 255).save(buffer, format="PNG")
    image = api.decode_image_bytes(buffer.getvalue(), loaded)
    assert image.shape == (1, 1, 28, 28) and 0 <= float(image.min()) <= float(image.max()) <= 1
    assert api.encode(loaded, image).shape == (1, loaded.cfg.model.latent_dim)
    assert api.reconstruct(loaded, image).shape == (1, 1, 28, 28)
    with pytest.raises(GenforgeError, match="'bad.png': not an image"):
        api.decode_image_bytes(b"not an image at all", loaded, "bad.png")


def test_a_refused_child_training_leaves_no_folder(tmp_path):
    with pytest.raises(GenforgeError, match="optim.lrr"):
        api.start_training("ring-8", ["optim.lrr=1"], run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_child_training_stops_with_a_checkpoint_and_resumes(tmp_path):
    run_dir = tmp_path / "child"
    overrides = [*TOY, "train.checkpoint_every=50"]
    process = api.start_training("ring-8", overrides, run_dir=run_dir, steps=10**6)
    wait_for(lambda: api.open_run(run_dir).status() == "training" if (run_dir / "config.json").is_file() else False)
    wait_for(lambda: (api.open_run(run_dir).checkpoint_step() or 0) > 0)
    assert api.running_trainings(tmp_path) == [run_dir]
    with pytest.raises(GenforgeError, match="being trained by process"):
        api.resume_training(run_dir)
    assert api.stop_training(run_dir)
    assert process.wait(60) == 130
    run = api.open_run(run_dir)
    assert run.status() == "interrupted"
    stopped_at = run.checkpoint_step()
    assert not api.stop_training(run_dir)  # nothing to stop now
    again = api.resume_training(run_dir, steps=stopped_at + 5)
    assert again.wait(120) == 0, api.open_run(run_dir).log_tail()
    assert api.open_run(run_dir).status() == "finished"
    assert api.open_run(run_dir).checkpoint_step() == stopped_at + 5
    assert any("resuming" in line for line in api.open_run(run_dir).log_tail())


def test_a_stop_at_once_reaches_a_child_that_started_with_sigint_ignored(tmp_path):
    """A studio started with SIGINT ignored (a background job, a service) hands that on to its children,
    and Python leaves it ignored: a Stop during the child's start-up was lost and the run trained on.
    The stop is asked in writing too (stop.json), read once the loop's handler is in place."""
    run_dir = tmp_path / "early"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = api.start_training("ring-8", TOY, run_dir=run_dir, steps=10**6)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert api.stop_training(run_dir)  # at once: the child is still starting
        # nobody waits on it here: the studio's children are reaped as they end (they stayed zombies)
        wait_for(lambda: not Path(f"/proc/{process.pid}").exists(), timeout=90)
    finally:
        if process.popen.poll() is None:
            process.popen.kill()
    assert process.popen.returncode == 130, api.open_run(run_dir).log_tail()
    assert api.open_run(run_dir).status() in ("interrupted", "failed")  # stopped at step 0, or before it began
    assert not (run_dir / "stop.json").exists()  # the child that was asked took the request away


def test_ctrl_c_before_a_new_run_began_leaves_no_folder_behind(tmp_path, monkeypatch):
    """It left a folder holding only status.json ("interrupted" at step 0): not listed, not resumable."""
    import genforge.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(genforge.train, "prepare_run", interrupted)
    cfg = api.check_config("ring-8", TOY, steps=5)
    with pytest.raises(KeyboardInterrupt):
        api.train_run(cfg, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_relative_folders_are_kept_as_absolute_paths(tmp_path, monkeypatch):
    """A run trained on folder:imgs/some kept the relative name, and broke from any other folder."""
    monkeypatch.chdir(tmp_path)
    cfg = api.check_config("pokemon-dcgan", ["data.dataset=folder:imgs/some"])
    assert cfg.data.dataset == f"folder:{tmp_path / 'imgs' / 'some'}"
    cfg = api.check_config("pokemon-art2sprite", ["data.path=a", "data.path_b=../b"])
    assert (cfg.data.path, cfg.data.path_b) == (str(tmp_path / "a"), str(tmp_path.parent / "b"))
    assert api.check_config("mnist-vae").data.dataset == "mnist-10k"  # names stay names


def test_genforge_load_gives_a_model_with_methods(toy_run, vae_run):
    import genforge

    model = genforge.load(toy_run)
    assert torch.equal(model.sample(16, seed=0), api.sample(model, 16, seed=0))
    assert model.interpolate(steps=4).shape == (4, 2)
    assert model.generate(api.noise(model, 2)).shape == (2, 2)
    vae = genforge.load(vae_run)
    assert vae.encode(vae.sample(3)).shape == (3, vae.cfg.model.latent_dim)
    with pytest.raises(GenforgeError, match="needs a DiscoGAN run"):
        model.translate(torch.zeros(1, 2))


def test_status_records_training_time_and_the_machine(toy_run):
    from genforge.runs import recorded_status

    status = recorded_status(toy_run)
    assert status["train_seconds"] > 0 and status["machine"]["torch"] and status["machine"]["cores"] >= 1


def test_a_model_card_names_the_recorded_training_time_and_machine(toy_run, tmp_path):
    api.export(toy_run, "folder", tmp_path / "card")
    card = (tmp_path / "card" / "README.md").read_text()
    assert "Training time:" in card and "minutes of wall clock" in card and "not recorded" not in card


def test_a_file_given_for_a_run_folder_names_the_folder_to_give(tmp_path):
    from genforge.errors import GenforgeError

    run = tmp_path / "run"
    (run / "checkpoints" / "step-2").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "checkpoints" / "step-2" / "state.json").write_text("{}")
    for path in (run / "config.json", run / "checkpoints" / "step-2" / "state.json"):
        with pytest.raises(GenforgeError, match=f"^{path}: a file of the run {run}, not a run folder; give the "
                                                f"folder: {run}$"):
            api.open_run(path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(GenforgeError, match="notes.txt: a file, not a run folder$"):
        api.resume_config(tmp_path / "notes.txt")
    with pytest.raises(GenforgeError, match="nowhere: no such run folder$"):
        api.open_run(tmp_path / "nowhere")


@pytest.mark.parametrize("minutes", [float("inf"), float("nan"), 0.0, -1.0])
def test_a_minutes_budget_must_be_positive_and_finite(minutes):
    with pytest.raises(GenforgeError, match="--minutes must be a positive, finite number"):
        api.check_config("ring-8", [], minutes=minutes)


@pytest.mark.parametrize("key, budget", [("train.steps=60", {"steps": 50}), ("train.minutes=3", {"steps": 50}),
                                         ("train.steps=60", {"minutes": 2.0}), (" train.minutes = 1", {"minutes": 2.0})])
def test_a_budget_given_twice_is_refused_naming_both(key, budget):
    # the budget replaced the recipe's train.steps and train.minutes, so the key was silently dropped
    given = f"{budget['steps']} steps" if "steps" in budget else f"{budget['minutes']:g} minutes"
    with pytest.raises(GenforgeError, match=f"^{key.strip()} and a budget of {given} both say how long to train"):
        api.check_config("ring-8", [key], **budget)
    assert api.check_config("ring-8", [key]).train is not None  # either alone is fine
    assert api.check_config("ring-8", ["train.log_every=3"], **budget).train.log_every == 3


def test_a_resume_refuses_a_budget_given_twice(toy_run):
    with pytest.raises(GenforgeError, match="^train.steps=40 and a budget of 30 steps both say"):
        api.resume_config(toy_run, steps=30, overrides=["train.steps=40"])
    assert api.resume_config(toy_run, overrides=["train.steps=40"]).train.steps == 40


def test_a_resume_budget_key_replaces_the_old_budget_as_the_flags_do(toy_run, tmp_path):
    cfg = api.resume_config(toy_run, overrides=["train.minutes=2"])
    assert (cfg.train.steps, cfg.train.minutes) == (0, 2.0)
    cfg = api.resume_config(toy_run, overrides=["train.steps=40"])
    assert (cfg.train.steps, cfg.train.minutes) == (40, 0.0)
    with pytest.raises(GenforgeError, match=r"^train.steps=10 is below the step step-\d+ is at \(20\)"):
        api.resume_config(toy_run, overrides=["train.steps=10"])
    timed = tmp_path / "timed"  # a run on a minutes budget: train.steps replaces it, as --steps does
    shutil.copytree(toy_run, timed, symlinks=True)
    config = json.loads((timed / "config.json").read_text())
    config["train"].update(steps=0, minutes=5.0)
    (timed / "config.json").write_text(json.dumps(config))
    cfg = api.resume_config(timed, overrides=["train.steps=40"])
    assert (cfg.train.steps, cfg.train.minutes) == (40, 0.0)


def test_check_config_refuses_what_training_would_on_this_machine():
    # --dry-run passed train.precision=fp16 on a CPU; the run then refused it
    if not torch.cuda.is_available():
        with pytest.raises(GenforgeError, match="train.precision=fp16 needs a CUDA device"):
            api.check_config("mnist-dcgan", ["train.precision=fp16", "train.device=auto"])
        with pytest.raises(GenforgeError, match="no CUDA GPU"):
            api.check_config("ring-8", ["train.device=cuda"])
    with pytest.raises(GenforgeError, match="train.precision=fp16 needs a CUDA device"):
        api.check_config("mnist-dcgan", ["train.precision=fp16", "train.device=cpu"])
    assert api.check_config("mnist-dcgan", ["train.precision=fp32", "train.device=cpu"]).train.precision == "fp32"
