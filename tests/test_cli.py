"""The ``genforge`` command, called in-process: exit codes, one-line errors, train -> sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from genforge.cli import main

from .conftest import tiny_config, tiny_overrides


def _fails_cleanly(capsys, argv) -> str:
    """Run ``genforge argv``: exit code 2 and exactly one stderr line 'genforge: error: ...'; returns it."""
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("genforge: error: ")
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_unknown_recipe(capsys):
    line = _fails_cleanly(capsys, ["train", "mnist-vea", "--dry-run"])
    assert "unknown recipe 'mnist-vea'" in line and "mnist-vae" in line


def test_unknown_key(capsys):
    line = _fails_cleanly(capsys, ["train", "mnist-vae", "train.stepz=3", "--dry-run"])
    assert "train.stepz" in line and "train.steps" in line


def test_bad_value(capsys):
    line = _fails_cleanly(capsys, ["train", "mnist-vae", "optim.lr=fast", "--dry-run"])
    assert "'optim.lr'" in line


def test_bad_choice(capsys):
    assert "adam, adamw" in _fails_cleanly(capsys, ["train", "mnist-dcgan", "optim.name=lbfgs", "--dry-run"])


def test_no_recipe_and_bad_steps(capsys):
    assert "name a recipe" in _fails_cleanly(capsys, ["train"])
    assert "--steps must be positive" in _fails_cleanly(capsys, ["train", "mnist-vae", "--steps", "0", "--dry-run"])


def test_resume_of_a_folder_without_a_run(capsys, tmp_path):
    assert "not a genforge run folder" in _fails_cleanly(capsys, ["train", "--resume", str(tmp_path)])


def test_resume_of_a_folder_without_a_checkpoint(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config("mnist-vae").to_dict()))
    line = _fails_cleanly(capsys, ["train", "--resume", str(tmp_path)])
    assert "no complete checkpoint" in line and str(tmp_path) in line


def test_resume_takes_a_run_directory_only(capsys, tmp_path):
    assert "--resume takes a run directory" in _fails_cleanly(
        capsys, ["train", "mnist-vae", "--resume", str(tmp_path)])


def test_sample_on_an_empty_directory(capsys, tmp_path):
    assert str(tmp_path) in _fails_cleanly(capsys, ["sample", str(tmp_path), "--out", str(tmp_path / "g.png")])
    assert not (tmp_path / "g.png").exists()


def test_sample_with_a_bad_count(capsys, vae_run):
    assert "--n must be 1 to 100,000" in _fails_cleanly(capsys, ["sample", str(vae_run), "--n", "0"])


def test_unknown_device(capsys, vae_run):
    assert "unknown device 'tpu'" in _fails_cleanly(capsys, ["sample", str(vae_run), "--device", "tpu"])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(capsys, vae_run):
    assert "--device cpu" in _fails_cleanly(capsys, ["sample", str(vae_run), "--device", "cuda"])


def test_dry_run_prints_the_resolved_config_as_json(capsys, tmp_path):
    code = main(["train", "mnist-dcgan", "--dry-run", "--steps", "7", "--seed", "3", "--run-dir", str(tmp_path / "r"),
                 "optim.lr=1e-4", "model.width=16"])
    out = capsys.readouterr().out
    assert code == 0
    cfg = json.loads(out)
    assert cfg["family"] == "gan" and cfg["recipe"] == "mnist-dcgan"
    assert (cfg["train"]["steps"], cfg["train"]["seed"], cfg["optim"]["lr"], cfg["model"]["width"]) == (7, 3, 1e-4, 16)
    assert not (tmp_path / "r").exists()  # a dry run writes nothing


def test_minutes_makes_the_clock_the_budget(capsys):
    assert main(["train", "mnist-vae", "--dry-run", "--minutes", "2"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["minutes"] == 2
    assert cfg["train"]["steps"] == 0 or cfg["train"]["steps"] >= 2**62  # no step limit besides the clock


def test_train_then_sample_a_4x4_grid(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code = main(["train", "mnist-vae", "--run-dir", str(run_dir), "--no-progress",
                 *tiny_overrides("mnist-vae", "train.steps=3")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "eval/test_nll" in captured.out and "done at step 3" in captured.err
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 3

    out = tmp_path / "g.png"
    assert main(["sample", str(run_dir), "--n", "16", "--out", str(out), "--device", "cpu"]) == 0
    assert "16 samples from step 3" in capsys.readouterr().err
    image = Image.open(out)
    side = (4 * (28 + 2) + 2) * 2  # 4 tiles of 28 px with 2 px padding around, enlarged 2x
    assert image.format == "PNG" and image.size == (side, side) and image.mode == "L"

    # Same seed, same picture; another seed, another one.
    again, other = tmp_path / "again.png", tmp_path / "other.png"
    main(["sample", str(run_dir), "--n", "16", "--out", str(again), "--device", "cpu"])
    main(["sample", str(run_dir), "--n", "16", "--out", str(other), "--device", "cpu", "--seed", "1"])
    capsys.readouterr()
    assert again.read_bytes() == out.read_bytes() != other.read_bytes()

    # Training into the same folder again refuses and says how to continue.
    line = _fails_cleanly(capsys, ["train", "mnist-vae", "--run-dir", str(run_dir),
                                   *tiny_overrides("mnist-vae", "train.steps=3")])
    assert f"--resume {run_dir}" in line

    # ... and --resume continues it.
    assert main(["train", "--resume", str(run_dir), "--steps", "4", "--no-progress"]) == 0
    assert "done at step 4" in capsys.readouterr().err


def test_sample_of_a_gan_run_with_ema(capsys, gan_run, tmp_path):
    out = tmp_path / "gan.png"
    assert main(["sample", str(gan_run), "--n", "6", "--out", str(out), "--device", "cpu"]) == 0
    assert Image.open(out).size == ((3 * 30 + 2) * 2, (2 * 30 + 2) * 2)  # 6 images: 3 per row, 2 rows


def test_sample_with_rejection_keeps_what_d_finds_real(capsys, gan_run, tmp_path, monkeypatch):
    from genforge.models.gan import GAN

    calls = []
    original = GAN._accept

    def spy(logits, threshold, generator):
        calls.append(logits.shape[0])
        return original(logits, threshold, generator)

    monkeypatch.setattr(GAN, "_accept", staticmethod(spy))
    out = tmp_path / "drs.png"
    assert main(["sample", str(gan_run), "--n", "6", "--reject", "0.9", "--out", str(out), "--device", "cpu"]) == 0
    assert out.is_file() and sum(calls) >= 10_000  # the logits of a 10,000-sample pool set the threshold
    capsys.readouterr()
    assert "quantile in [0, 1)" in _fails_cleanly(capsys, ["sample", str(gan_run), "--reject", "1.5"])
    assert "does not combine with --save-z" in _fails_cleanly(
        capsys, ["sample", str(gan_run), "--reject", "0.9", "--save-z", str(tmp_path / "z.npy")])


def test_sample_with_rejection_needs_a_gan(capsys, vae_run):
    assert "rejection sampling needs an unconditional GAN" in _fails_cleanly(capsys, ["sample", str(vae_run), "--reject", "0.9"])


def test_recipes_lists_and_shows(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()]
    assert "mnist-vae" in names and "mnist-dcgan" in names
    assert main(["recipes", "--show", "mnist-dcgan"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mnist-dcgan (gan)")
    assert "model.width=32" in out and "optim.lr=0.001" in out and "train.ema_decay" in out


def test_recipes_show_unknown(capsys):
    assert "unknown recipe" in _fails_cleanly(capsys, ["recipes", "--show", "nope"])


def test_data_list(capsys, isolated_data):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("mnist-10k") and "bundled" in out
    assert "missing: genforge data fetch fashion-mnist" in out
    assert main(["data"]) == 0  # list is the default action
    assert "mnist-10k" in capsys.readouterr().out


def test_a_data_root_that_is_not_a_folder_is_refused_except_by_fetch(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    typo = str(tmp_path / "datsets")
    assert "datsets: no such folder (`genforge data fetch NAME --data-root" in _fails_cleanly(
        capsys, ["data", "list", "--data-root", typo])  # it listed every dataset as missing
    assert "notes.txt: a file, not a folder of datasets" in _fails_cleanly(
        capsys, ["sample", str(tmp_path), "--data-root", str(tmp_path / "notes.txt")])
    assert "no such folder" in _fails_cleanly(capsys, ["eval", "--real", "mnist-10k", "--data-root", typo])
    assert "unknown dataset 'cifar'" in _fails_cleanly(capsys, ["data", "fetch", "cifar", "--data-root", typo])
    assert main(["data", "list", "--data-root", str(tmp_path)]) == 0


def test_data_fetch_unknown(capsys, isolated_data):
    assert "unknown dataset 'cifar'" in _fails_cleanly(capsys, ["data", "fetch", "cifar"])


def test_unrecognized_option_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "mnist-vae", "--bogus"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "genforge: error: unrecognized arguments: --bogus (see genforge --help)\n"


@pytest.mark.parametrize("argv, said", [
    (["train", "ring-8", "--steps", "5", "--minutes", "1"], "argument --minutes: not allowed with argument --steps"),
    (["train", "ring-8", "--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    (["export", "runs/a"], "the following arguments are required: --format, --out")])
def test_argparse_refusals_are_one_line_too(capsys, argv, said):
    """They printed the usage block first, and 'genforge train: error:' (README: mistakes get one line)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err == f"genforge: error: {said} (see genforge {argv[0]} --help)\n"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "genforge", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("train", "sample", "recipes", "data"):
        assert command in result.stdout
    assert "Traceback" not in result.stderr


def test_output_piped_into_a_reader_that_leaves_is_no_traceback(monkeypatch):
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left: every write now fails with EPIPE
    with os.fdopen(write_end, "w", buffering=1) as gone:
        monkeypatch.setattr("sys.stdout", gone)
        assert main(["recipes"]) == 0


def test_a_bug_shows_its_traceback_and_asks_for_a_report(capsys, monkeypatch):
    import genforge.cli as cli

    def broken(args):
        raise RuntimeError("an internal bug")

    monkeypatch.setitem(cli.COMMANDS, "recipes", broken)
    assert main(["recipes"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: an internal bug" in err
    assert err.strip().splitlines()[-1].startswith("genforge: internal error: this is a bug in genforge")


TOY = ["model.hidden=16", "model.layers=1", "train.batch_size=32", "train.threads=1", "train.device=cpu",
       "train.log_every=5", "train.sample_every=1000", "train.checkpoint_every=1000"]


@pytest.fixture(scope="module")
def toy_cli_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "ring"
    assert main(["train", "ring-8", *TOY, "--steps", "20", "--run-dir", str(run_dir), "--no-progress"]) == 0
    return run_dir


def test_toy_runs_sample_interpolate_and_arithmetic_as_pictures(capsys, toy_cli_run, tmp_path):
    assert main(["sample", str(toy_cli_run), "--n", "300", "--out", str(tmp_path / "s.png"), "--reject", "0.5"]) == 0
    assert main(["interpolate", str(toy_cli_run), "--rows", "3", "--out", str(tmp_path / "i.png")]) == 0
    z = tmp_path / "z.safetensors"
    assert main(["sample", str(toy_cli_run), "--n", "3", "--save-z", str(z), "--out", str(tmp_path / "z.png")]) == 0
    assert main(["arithmetic", str(toy_cli_run), "--a", str(z), "--b", str(z), "--c", str(z),
                 "--out", str(tmp_path / "a.png")]) == 0
    for name in ("s.png", "i.png", "a.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 100 and image.getextrema() != ((255, 255), (255, 255), (255, 255))
    assert "kept by rejection" in capsys.readouterr().err


def test_runs_lists_the_run_as_a_table_and_as_json(capsys, toy_cli_run):
    assert main(["runs", str(toy_cli_run.parent)]) == 0
    table = capsys.readouterr().out
    assert "ring-8" in table and "finished" in table and "20/20" in table
    assert main(["runs", str(toy_cli_run.parent), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["id"], row["status"], row["step"]) == ("ring", "finished", 20)


def test_runs_lists_a_run_with_a_damaged_config_with_the_reason(capsys, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{cut sh")
    assert main(["runs", str(tmp_path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()[1:]
    assert line.startswith("bad ") and " failed " in line and "config.json: unreadable (not UTF-8 JSON)" in line


def test_resume_with_a_key_that_changes_the_model_is_refused(capsys, toy_cli_run):
    line = _fails_cleanly(capsys, ["train", "--resume", str(toy_cli_run), "model.hidden=8", "--steps", "30"])
    assert "cannot change 'model.hidden'" in line


def test_resume_with_a_step_budget_below_the_checkpoint_is_refused_and_the_run_left_as_it_was(capsys, toy_cli_run):
    before = {p.name: p.stat().st_mtime_ns for p in toy_cli_run.iterdir()}
    line = _fails_cleanly(capsys, ["train", "--resume", str(toy_cli_run), "--steps", "10"])
    assert "a budget of 10 steps is below the step step-0000020 is at (20)" in line and "give more than 20" in line
    assert {p.name: p.stat().st_mtime_ns for p in toy_cli_run.iterdir()} == before


def test_resume_says_where_it_starts(capsys, toy_cli_run, tmp_path):
    import shutil

    copy = tmp_path / "ring"
    shutil.copytree(toy_cli_run, copy, symlinks=True)
    assert main(["train", "--resume", str(copy), "train.log_every=2", "--steps", "24", "--no-progress"]) == 0
    assert f"resuming ring-8 (gan) in {copy} from step 20" in capsys.readouterr().err
    # a plain resume (the hint after Ctrl-C) keeps the budget the last one set: it went back to config.json's
    from genforge.api import resume_config

    assert json.loads((copy / "config.json").read_text())["train"]["steps"] == 20
    assert resume_config(copy).train.steps == 24
    assert resume_config(copy, minutes=1.5).train.minutes == 1.5  # a budget given still wins
    status = json.loads((copy / "status.json").read_text())
    (copy / "status.json").write_text(json.dumps({**status, "budget": {"steps": 7}}))  # below the checkpoint
    assert resume_config(copy).train.steps == 20  # config.json's, as before


def test_resume_of_a_run_in_training_before_its_first_checkpoint_names_who_trains_it(capsys, tmp_path):
    import os

    (tmp_path / "config.json").write_text(json.dumps(tiny_config("mnist-vae").to_dict()))
    (tmp_path / "lock").write_text(json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname(),
                                               "started": 0}))
    line = _fails_cleanly(capsys, ["train", "--resume", str(tmp_path), "--steps", "9"])
    assert f"is being trained by process {os.getpid()}" in line  # it said: no checkpoint, remove the folder


def test_a_run_folder_with_links_out_is_refused_and_what_they_point_to_is_untouched(capsys, toy_cli_run, tmp_path):
    import hashlib
    import shutil

    copy = tmp_path / "sent"
    shutil.copytree(toy_cli_run, copy, symlinks=True)
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    (copy / "plots" / "losses.png").unlink()
    (copy / "plots" / "losses.png").symlink_to(victim)
    before = hashlib.sha256(victim.read_bytes()).hexdigest()
    line = _fails_cleanly(capsys, ["train", "--resume", str(copy), "--steps", "30"])
    assert "losses.png: a link to" in line
    line = _fails_cleanly(capsys, ["eval", str(copy), "--n", "50"])
    assert "outside the run folder" in line
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == before


def test_evaluator_train_never_writes_into_the_package(capsys, monkeypatch, tmp_path):
    import hashlib
    from importlib import resources

    import genforge.metrics.extractor as extractor

    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    shipped = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
               for p in (resources.files("genforge") / "metrics" / "weights").iterdir()}
    written = []

    def fake_train(name, out, *args):  # the training itself is tested in tests/metrics; here: where it writes
        written.append(out)
        out.write_bytes(b"weights")
        return {"path": out, "sha256": "0" * 64, "test_accuracy": 0.99, "train_set": "mnist-10k",
                "test_set": "mnist-10k/test", "seconds": 1.0}

    monkeypatch.setattr(extractor, "train_extractor", fake_train)
    assert main(["evaluator", "train", "mnist"]) == 0
    assert written == [tmp_path / "cache" / "extractors" / "mnist.safetensors"]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (resources.files("genforge") / "metrics" / "weights").iterdir()} == shipped


def test_a_gan_on_a_two_domain_toy_is_refused_in_one_line_and_leaves_no_run_folder(capsys, tmp_path):
    run_dir = tmp_path / "r"
    code = main(["train", "ring-8", *TOY, "data.dataset=gmm-discogan", "--steps", "2", "--run-dir", str(run_dir),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not run_dir.exists()
    assert err[-1].startswith("genforge: error: data.dataset=gmm-discogan has two domains (A and B)"), err
    assert not any("training ring-8" in line for line in err), err  # no banner for a run that never started


def test_the_training_banner_comes_once_the_run_has_passed_its_checks(capsys, tmp_path):
    run_dir = tmp_path / "r"
    assert main(["train", "ring-8", *TOY, "--steps", "2", "--run-dir", str(run_dir), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count(f"genforge: training ring-8 (gan) into {run_dir}") == 1
    assert err.index("genforge: training ring-8") < err.index("genforge: done at step 2")


def test_ctrl_c_during_seeds_exits_130_and_says_which_seed_to_resume(capsys, tmp_path, monkeypatch):
    from genforge import bench

    def stopped(cfg, run_dir, *args, **kwargs):
        raise bench.SeedsInterrupted(Path(run_dir) / "seed-1", 2, 3)

    monkeypatch.setattr(bench, "train_seeds", stopped)
    assert main(["train", "ring-8", *TOY, "--seeds", "3", "--run-dir", str(tmp_path / "s"), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted in {tmp_path / 's' / 'seed-1'} (2 of 3 seeds begun" in err
    assert f"genforge train --resume {tmp_path / 's' / 'seed-1'}" in err and "no best seed chosen" in err


@pytest.mark.parametrize("out, message", [
    ("s.jpgx", "--out s.jpgx: the file name must end in .png, .jpg"),
    ("{tmp}", "is a folder: name a file in it"),
    ("{run}/config.json.png", None),  # a picture beside the run's files is the user's choice
    ("{run}/checkpoints/x.png", "would overwrite the run"),
    ("{run}/samples/final.png", "would overwrite the run"),  # it was overwritten
    ("{run}/plots/losses.png", "would overwrite the run"),
])
def test_sample_refuses_outputs_it_cannot_or_must_not_write_before_any_work(capsys, tmp_path, out, message):
    from genforge import cli

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    path = out.format(tmp=tmp_path, run=run)
    if message is None:
        cli.check_output(path, "out", cli.IMAGE_SUFFIXES)
        return
    assert main(["sample", str(tmp_path / "no-such-run"), "--out", path]) == 2  # refused before the run is opened
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_save_z_onto_a_runs_checkpoint_is_refused_and_the_checkpoint_kept(capsys, tmp_path):
    run_dir = tmp_path / "r"
    assert main(["train", "ring-8", *TOY, "--steps", "2", "--run-dir", str(run_dir), "--no-progress"]) == 0
    weights = next((run_dir / "checkpoints").glob("step-*/model.safetensors"))
    before = weights.read_bytes()
    capsys.readouterr()
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "s.png"), "--save-z", str(weights)]) == 2
    assert "would overwrite the run" in capsys.readouterr().err and weights.read_bytes() == before


def test_an_os_refusal_is_one_line_naming_the_path_and_ctrl_c_in_an_import_is_an_interruption(capsys, tmp_path,
                                                                                              monkeypatch):
    from genforge import cli

    (tmp_path / "afile").write_text("")
    assert main(["train", "ring-8", *TOY, "--steps", "2", "--run-dir", str(tmp_path / "afile" / "sub"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"genforge: error: {tmp_path / 'afile' / 'sub'}: Not a directory" and "Traceback" not in "".join(err)

    def read_only(args):
        raise OSError(30, "Read-only file system", str(tmp_path / ".s.123-abcd.tmp.png"))

    monkeypatch.setitem(cli.COMMANDS, "runs", read_only)
    assert main(["runs", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"genforge: error: cannot write into {tmp_path}: Read-only file system"

    def interrupted_import(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("initialization failed")

    monkeypatch.setitem(cli.COMMANDS, "runs", interrupted_import)
    assert main(["runs", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "genforge: interrupted"


def test_the_cli_knows_the_latent_file_kinds_latent_writes():
    from genforge import cli, latent

    assert cli.LATENT_SUFFIXES == latent.LATENT_SUFFIXES


@pytest.mark.parametrize("count", ["0", "-3"])
def test_eval_refuses_an_impossible_nll_sample_count_in_one_line(capsys, tmp_path, count):
    line = _fails_cleanly(capsys, ["eval", str(tmp_path), "--nll-samples", count])
    assert "--nll-samples must be 1 to" in line and f"not {count}" in line


def test_an_override_without_its_value_gets_the_key_value_line_not_the_usage(capsys):
    line = _fails_cleanly(capsys, ["train", "ring-8", "--steps", "2", "optim.lr", "--dry-run"])
    assert line == "genforge: error: override 'optim.lr' is not of the form key=value (e.g. optim.lr=1e-4)"


def test_runs_of_a_folder_that_is_not_there_is_an_error_but_no_runs_folder_yet_is_not(capsys, tmp_path, monkeypatch):
    line = _fails_cleanly(capsys, ["runs", str(tmp_path / "missing")])
    assert line == f"genforge: error: {tmp_path / 'missing'}: no such folder"
    monkeypatch.chdir(tmp_path)  # a new user's first `genforge runs`: the default runs/ does not exist yet
    assert main(["runs"]) == 0 and "no runs under runs" in capsys.readouterr().err


def test_a_key_set_below_a_value_says_so(capsys):
    line = _fails_cleanly(capsys, ["train", "ring-8", "optim.lr.x=3", "--dry-run"])
    assert line == "genforge: error: config key 'optim.lr' is a value, not a section: set it as optim.lr=VALUE " \
                   "(not optim.lr.x=...)"


def test_sample_eval_and_export_take_an_earlier_checkpoint_with_from(capsys, tmp_path):
    run_dir = tmp_path / "r"
    assert main(["train", "ring-8", *TOY, "--steps", "10", "--run-dir", str(run_dir), "--no-progress",
                 "train.checkpoint_every=5"]) == 0
    capsys.readouterr()
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "s.png"), "--from", "step-0000005"]) == 0
    assert "4 samples from step 5 ->" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--format", "folder", "--out", str(tmp_path / "ex"), "--from",
                 "step-0000005"]) == 0
    assert "of step 5)" in capsys.readouterr().err
    # eval of an earlier checkpoint has a file of its own: eval.json is the run's final figures (the run list's)
    assert main(["eval", str(run_dir), "--from", "step-0000005", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 5
    assert json.loads((run_dir / "eval-step-0000005.json").read_text())["step"] == 5
    assert not (run_dir / "eval.json").exists()
    assert main(["eval", str(run_dir)]) == 0
    assert f"-> {run_dir / 'eval.json'}" in capsys.readouterr().err
    assert json.loads((run_dir / "eval.json").read_text())["step"] == 10
    line = _fails_cleanly(capsys, ["eval", str(run_dir), "--from", "step-9"])
    assert "one of: step-0000005, step-0000010" in line
    line = _fails_cleanly(capsys, ["eval", "--real", "mnist", "--from", "step-0000005"])
    assert "--real scores real images" in line
    line = _fails_cleanly(capsys, ["sample", str(run_dir), "--out", str(tmp_path / "t.png"), "--from", "step-9"])
    assert "one of: step-0000005, step-0000010" in line
    line = _fails_cleanly(capsys, ["sample", str(tmp_path / "ex"), "--out", str(tmp_path / "t.png"), "--from",
                                   "step-0000005"])
    assert "an exported model has no checkpoints to choose from" in line


def test_a_training_answers_sigint_even_when_started_with_it_ignored(tmp_path):
    """Python leaves SIGINT ignored in a process started with it ignored (a background job, the studio's
    children when the studio was): `genforge train` takes it back at once, so Ctrl-C and Stop reach it."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert main(["train", "ring-8", "--dry-run"]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        main(["runs", str(tmp_path)])  # other commands leave it as they found it
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("extra, named", [(["--class", "7"], "--class"), (["--save-z", "z.npy"], "--save-z"),
                                          (["--reject", "0.9"], "--reject")])
def test_sample_by_class_refuses_what_it_would_drop(capsys, tmp_path, extra, named):
    """--by-class dropped --save-z and --class without a word (and drew every class for --class 7)."""
    line = _fails_cleanly(capsys, ["sample", str(tmp_path), "--by-class", "--out", str(tmp_path / "g.png"),
                                   *[str(tmp_path / e) if e.endswith(".npy") else e for e in extra]])
    assert "--by-class draws --n samples of every class" in line and named in line


def test_a_model_too_large_for_memory_is_refused_in_one_line(capsys, tmp_path):
    # 100 billion latent dimensions: a 51 TB first layer (a RuntimeError traceback before)
    line = _fails_cleanly(capsys, ["train", "ring-8", "--steps", "2", "--run-dir", str(tmp_path / "huge"),
                                   "train.threads=1", "model.latent_dim=99999999999"])
    assert "do not fit in memory" in line and "make the model smaller" in line
    assert not (tmp_path / "huge").exists()


def test_a_budget_flag_beside_its_key_is_refused_not_dropped(capsys):
    line = _fails_cleanly(capsys, ["train", "ring-8", "--steps", "50", "train.steps=60", "--dry-run"])
    assert "train.steps=60 and a budget of 50 steps both say how long to train: give one of them" in line
    assert "train.minutes=2 and a budget of 50 steps" in _fails_cleanly(
        capsys, ["train", "ring-8", "train.minutes=2", "--steps", "50", "--dry-run"])
