"""Run folders read back: status, lock, metrics, timeline, the run list (no training needed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genforge.errors import GenforgeError
from genforge.runs import Run, RunLock, find_runs, list_runs, lock_holder, pid_alive, read_metrics, read_status

from .conftest import planted_link


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def make_run(folder: Path, recipe: str = "ring-8", steps: int = 10, checkpoint: int | None = 10,
             rows: list[dict] | None = None, final: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"recipe": recipe, "family": "gan", "train": {"steps": steps}}))
    if checkpoint is not None:
        step_dir = folder / "checkpoints" / f"step-{checkpoint:07d}"
        step_dir.mkdir(parents=True)
        (step_dir / "state.json").write_text(json.dumps({"step": checkpoint}))
    if rows is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if final:
        (folder / "samples").mkdir(exist_ok=True)
        (folder / "samples" / "final.png").write_bytes(b"png")
    return folder


def write_lock(folder: Path, pid: int, host: str | None = None) -> None:
    (folder / "lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": 0}))


def test_pid_alive_tells_a_live_process_from_a_dead_one():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(0)


def test_a_second_lock_on_a_run_is_refused_with_who_holds_it(tmp_path):
    with RunLock(tmp_path):
        holder = lock_holder(tmp_path)
        assert holder.pid == os.getpid() and holder.alive
        with pytest.raises(GenforgeError, match=f"process {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / "lock").exists()  # released


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    write_lock(tmp_path, dead_pid())
    with RunLock(tmp_path):
        assert lock_holder(tmp_path).pid == os.getpid()
    assert not (tmp_path / "lock").exists()


def test_a_lock_that_is_a_folder_is_refused_in_one_line_and_kept(tmp_path):
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock" / "mine.txt").write_text("keep")
    with pytest.raises(GenforgeError, match=r"lock is a folder, not genforge's lock file: move it out"):
        RunLock(tmp_path).acquire()  # it was IsADirectoryError, after renaming the folder to lock.stale-PID
    assert (tmp_path / "lock" / "mine.txt").read_text() == "keep"


def test_another_hosts_lock_is_taken_at_its_word_and_says_how_to_free_it(tmp_path):
    write_lock(tmp_path, 4242, host="elsewhere")
    with pytest.raises(GenforgeError, match=r"process 4242 on elsewhere .*; stop it first, or train into another "
                                            r"--run-dir \(if no process on elsewhere trains it, e\.g\. the folder was "
                                            r"copied from there, remove .*lock\)$"):
        RunLock(tmp_path).acquire()
    write_lock(tmp_path, dead_pid())  # this host's dead holder: taken over, no hint needed
    assert "remove" not in lock_holder(tmp_path).busy(tmp_path)


def test_a_lock_file_that_is_a_link_is_not_followed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    outside = planted_link(run / "lock", tmp_path)
    with RunLock(run):  # no holder can be read from it: the link is replaced by a lock of our own
        assert not (run / "lock").is_symlink()
        assert lock_holder(run).pid == os.getpid()
    assert outside.read_text() == "keep"


@pytest.mark.parametrize("setup, expected", [
    ("live_lock", "training"),
    ("finished_status", "finished"),
    ("interrupted_status", "interrupted"),
    ("failed_status", "failed"),
    ("dead_lock_with_checkpoint", "interrupted"),
    ("dead_lock_without_checkpoint", "failed"),
    ("old_run_with_final", "finished"),
    ("old_run_without_final", "interrupted"),
])
def test_status_of_a_run_folder(tmp_path, setup, expected):
    folder = make_run(tmp_path / "r", checkpoint=None if setup == "dead_lock_without_checkpoint" else 10,
                      final=setup == "old_run_with_final")
    if setup == "live_lock":
        write_lock(folder, os.getpid())
    if setup.endswith("_status"):
        (folder / "status.json").write_text(json.dumps({"status": setup.split("_")[0], "step": 10}))
    if setup.startswith("dead_lock"):
        write_lock(folder, dead_pid())
    assert read_status(folder) == expected


def test_a_killed_training_reads_as_interrupted_even_after_an_old_finished_status(tmp_path):
    folder = make_run(tmp_path / "r", final=True)
    (folder / "status.json").write_text(json.dumps({"status": "finished", "step": 10}))
    write_lock(folder, dead_pid())  # resumed afterwards, then killed -9: the lock stayed behind
    assert read_status(folder) == "interrupted"


def test_metrics_rows_skip_a_torn_line_and_filter_by_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a"')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert [r["step"] for r in read_metrics(path, since=1)] == [2]
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_a_metrics_file_with_bytes_that_are_not_utf8_keeps_its_readable_rows_and_the_run_list_works(tmp_path):
    folder = make_run(tmp_path / "r", rows=[{"step": 1}])
    (folder / "metrics.jsonl").write_bytes(b'{"step": 1, "a": 1}\n\xcc\xff\x00garbage\n{"step": 2, "a": 2}\n')
    assert [r["step"] for r in read_metrics(folder / "metrics.jsonl")] == [1, 2]
    make_run(tmp_path / "healthy")
    assert len(list_runs(tmp_path)) == 2  # one damaged file does not hide the other runs


def test_timeline_is_in_step_order_and_ends_with_the_final_grid(tmp_path):
    folder = make_run(tmp_path / "r", rows=[{"step": 30}], final=True)
    for step in (20, 3, 100):
        (folder / "samples" / f"step-{step:07d}.png").write_bytes(b"png")
    (folder / "samples" / "step-oops.png").write_bytes(b"png")
    steps = [step for step, _ in Run(folder).timeline()]
    assert steps == [3, 20, 100, 100]
    assert Run(folder).timeline()[-1][1].name == "final.png"


def test_a_resumed_run_s_old_final_grid_stays_at_the_step_where_it_was_drawn(tmp_path):
    """Stopped at 50 (final.png drawn then), resumed and training at 170: the newest picture is step 150's
    grid, and final.png sits at step 50 (it was shown last, labelled with the live step)."""
    folder = make_run(tmp_path / "r", rows=[{"step": 170}], final=True)
    for step in (40, 100, 150):
        (folder / "samples" / f"step-{step:07d}.png").write_bytes(b"png")
    (folder / "status.json").write_text(json.dumps({"status": "interrupted", "step": 50}))
    frames = [(step, path.name) for step, path in Run(folder).timeline()]
    assert frames == [(40, "step-0000040.png"), (50, "final.png"), (100, "step-0000100.png"),
                      (150, "step-0000150.png")]
    assert Run(folder).summary().newest_sample.name == "step-0000150.png"
    (folder / "status.json").write_text(json.dumps({"status": "finished", "step": 150}))  # that training ended
    assert [path.name for _, path in Run(folder).timeline()][-2:] == ["step-0000150.png", "final.png"]


def test_summary_has_the_newest_speed_and_final_metrics(tmp_path):
    rows = [{"step": 5, "images_per_s": 100.0}, {"step": 10, "images_per_s": 120.0},
            {"step": 10, "eval/modes": 8.0, "eval/hq": 97.5}]
    summary = Run(make_run(tmp_path / "r", rows=rows, final=True)).summary(tmp_path)
    assert (summary.id, summary.recipe, summary.status, summary.step) == ("r", "ring-8", "finished", 10)
    assert summary.images_per_s == 120.0
    assert summary.headline == {"eval/modes": 8.0, "eval/hq": 97.5}
    assert json.loads(json.dumps(summary.to_dict()))["path"] == str(tmp_path / "r")


def test_the_headline_takes_genforge_eval_s_figures_and_never_the_class_shares(tmp_path):
    shares = {f"eval/class_share_{k}": 0.1 for k in range(10)}
    run = make_run(tmp_path / "dcgan", "mnist-dcgan", rows=[{"step": 10, "images_per_s": 9.0}, {"step": 10, **shares}],
                   final=True)
    assert Run(run).summary().headline == {}  # it showed class_share_0, _1 and _2
    (run / "eval.json").write_text(json.dumps({"step": 10, "fid": 12.5, "kid": 3.25, "precision": 0.5}))
    assert Run(run).summary().headline == {"eval/fid": 12.5, "eval/kid": 3.25}
    rows = [{"step": 10, "eval/fid": 40.0, **shares}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert Run(run).summary().headline == {"eval/fid": 12.5, "eval/kid": 3.25}  # eval.json is of this step
    (run / "eval.json").write_text(json.dumps({"step": 4, "fid": 99.0, "kid": 3.25}))  # of an earlier step
    assert Run(run).summary().headline == {"eval/fid": 40.0, "eval/kid": 3.25}
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "eval/other": 1.0, **shares}) + "\n")
    (run / "eval.json").write_text("[]")
    assert Run(run).summary().headline == {"eval/other": 1.0}


def test_list_runs_finds_nested_runs_newest_first_and_skips_links(tmp_path):
    old = make_run(tmp_path / "a")
    new = make_run(tmp_path / "group" / "b")
    os.utime(old, (time.time() - 100, time.time() - 100))
    elsewhere = make_run(tmp_path.parent / f"{tmp_path.name}-elsewhere")
    (tmp_path / "link").symlink_to(elsewhere)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("[1, 2")  # damaged
    os.utime(tmp_path / "broken", (time.time() - 200, time.time() - 200))
    listed = list_runs(tmp_path)
    assert [s.id for s in listed] == ["group/b", "a", "broken"]
    # listed, not hidden: it said nothing and the run was gone from the list
    assert (listed[2].status, listed[2].recipe) == ("failed", "?")
    assert "config.json: unreadable (not UTF-8 JSON); the run's config is damaged" in listed[2].problem
    assert listed[0].problem == ""
    assert new in find_runs(tmp_path)
    assert list_runs(tmp_path / "missing") == []


def test_a_folder_without_config_is_not_a_run(tmp_path):
    with pytest.raises(GenforgeError, match="no config.json"):
        Run(tmp_path)
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(GenforgeError, match="not a JSON object"):
        Run(tmp_path)


def test_a_run_folder_with_a_link_leading_out_is_refused(tmp_path):
    from genforge.runs import check_links

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run = make_run(tmp_path / "run", checkpoint=None)
    (run / "checkpoints").symlink_to(outside)
    with pytest.raises(GenforgeError, match="checkpoints: a link to .*outside the run folder"):
        check_links(run)
    (run / "checkpoints").unlink()
    make_run(run, checkpoint=10)
    (run / "checkpoints" / "latest").symlink_to("step-0000010")  # inside: fine
    check_links(run)
    (run / "samples").mkdir()
    (run / "samples" / "final.png").symlink_to(outside / "victim.png")
    with pytest.raises(GenforgeError, match="final.png"):
        check_links(run)
    link_to_run = tmp_path / "alias"
    link_to_run.symlink_to(run)
    with pytest.raises(GenforgeError, match="is a symbolic link"):
        check_links(link_to_run)


def test_a_child_that_died_before_writing_its_config_is_listed_as_failed(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "train.log").write_text("Traceback ...\n")
    (folder / "process.json").write_text(json.dumps({"pid": dead_pid(), "recipe": "ring-8", "family": "gan",
                                                      "budget": {"steps": 50}}))
    (summary,) = list_runs(tmp_path)
    assert (summary.recipe, summary.status, summary.total_steps) == ("ring-8", "failed", 50)
    with pytest.raises(GenforgeError, match="never wrote its config.json"):
        Run(folder).config
    (folder / "process.json").write_text(json.dumps({"pid": os.getpid(), "recipe": "ring-8"}))
    assert read_status(folder) == "training"
    # the same pid, but a process that began after process.json was written: another process, not the child
    (folder / "process.json").write_text(json.dumps({"pid": os.getpid(), "recipe": "ring-8",
                                                      "started": time.time() - 3600 * 24 * 365}))
    assert read_status(folder) == "failed"


def test_a_config_linked_out_of_the_run_folder_is_not_read(tmp_path):
    run = make_run(tmp_path / "runs" / "r")
    outside = tmp_path / "elsewhere.json"
    outside.write_text((run / "config.json").read_text())
    (run / "config.json").unlink()
    (run / "config.json").symlink_to(outside)
    (listed,) = list_runs(tmp_path / "runs")  # the run list followed it
    assert listed.recipe == "?" and "outside the run folder" in listed.problem
    with pytest.raises(GenforgeError, match="outside the run folder"):
        Run(run)
    (run / "config.json").unlink()
    (run / "kept.json").write_text(outside.read_text())
    (run / "config.json").symlink_to("kept.json")  # a link inside the run is its own file
    assert [s.path for s in list_runs(tmp_path / "runs")] == [run]


def test_a_stop_asked_in_writing_names_one_process(tmp_path):
    from genforge.runs import STOP_FILE, clear_stop, request_stop, stop_requested

    assert not stop_requested(tmp_path)
    request_stop(tmp_path, dead_pid())
    assert not stop_requested(tmp_path)  # another process's
    clear_stop(tmp_path, only_mine=True)
    assert (tmp_path / STOP_FILE).exists()
    request_stop(tmp_path, os.getpid())
    assert stop_requested(tmp_path)
    clear_stop(tmp_path, only_mine=True)
    assert not (tmp_path / STOP_FILE).exists()
    (tmp_path / STOP_FILE).write_text("{not json")
    assert not stop_requested(tmp_path)
    clear_stop(tmp_path)
    assert not (tmp_path / STOP_FILE).exists()


def test_a_run_stopped_before_its_first_checkpoint_is_failed_not_resumable(tmp_path):
    folder = make_run(tmp_path / "r", checkpoint=None)
    (folder / "status.json").write_text(json.dumps({"status": "interrupted", "step": 0}))
    assert read_status(folder) == "failed"


def test_a_json_file_nested_a_million_deep_is_unreadable_not_a_crash(tmp_path):
    folder = make_run(tmp_path / "r")
    (folder / "status.json").write_text("[" * 1_000_000 + "]" * 1_000_000)
    (folder / "checkpoints" / "step-0000010" / "state.json").write_text("{\"a\": " * 200_000 + "1" + "}" * 200_000)
    (summary,) = list_runs(tmp_path)
    assert summary.status == "interrupted" and summary.step == 0


def test_a_damaged_config_json_is_named_as_damaged_not_as_missing(tmp_path):
    folder = make_run(tmp_path / "r")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(GenforgeError, match=r"config.json: unreadable \(not UTF-8 JSON\); the run's config is damaged"):
        Run(folder)


# --- why a failed run failed (the run list's problem column) ------------------------------------------

def test_a_failed_run_names_the_error_its_training_recorded(tmp_path):
    from genforge.runs import write_status

    run = make_run(tmp_path / "r", checkpoint=None)
    write_status(run, "failed", 3, error="genforge: error: train.device=cuda:7: no such GPU\n")
    assert Run(run).status() == "failed"
    assert Run(run).failure() == "genforge: error: train.device=cuda:7: no such GPU"
    assert Run(run).summary(tmp_path).problem == Run(run).failure()


def test_a_run_whose_child_died_before_its_config_names_train_log_s_error_line(tmp_path):
    run = tmp_path / "child"
    run.mkdir()
    (run / "process.json").write_text(json.dumps({"recipe": "ring-8", "family": "gan", "pid": dead_pid()}))
    (run / "train.log").write_text("genforge: ring-8 on cpu\ngenforge: error: data.root /nope: no such folder\n\n")
    assert read_status(run) == "failed"
    assert Run(run).failure() == "genforge: error: data.root /nope: no such folder"


def test_a_run_killed_before_its_first_checkpoint_says_to_train_it_anew(tmp_path):
    run = make_run(tmp_path / "k", checkpoint=None)
    write_lock(run, dead_pid())
    assert read_status(run) == "failed"
    assert "before its first checkpoint" in Run(run).failure()


def test_runs_that_did_not_fail_have_no_problem(tmp_path):
    finished = make_run(tmp_path / "f", final=True)
    assert Run(finished).status() == "finished" and Run(finished).failure() == ""


def test_a_training_run_with_no_checkpoint_yet_is_told_to_wait_not_to_be_removed(tmp_path):
    from genforge.checkpoint import latest_checkpoint
    from genforge.errors import GenforgeError

    run = make_run(tmp_path / "live", checkpoint=None)
    config = json.loads((run / "config.json").read_text())
    config["train"]["checkpoint_every"] = 500
    (run / "config.json").write_text(json.dumps(config))
    write_lock(run, os.getppid())  # a live holder: another process (this one's parent)
    with pytest.raises(GenforgeError) as live:
        latest_checkpoint(run)
    assert "writes its first checkpoint at step 500" in str(live.value) and "remove" not in str(live.value)
    write_lock(run, os.getpid())  # this process's own lock: its resume was refused, nothing else trains the run
    with pytest.raises(GenforgeError) as own:
        latest_checkpoint(run)
    assert "the run is training" not in str(own.value) and "train it anew" in str(own.value)
    (run / "lock").unlink()
    with pytest.raises(GenforgeError) as stopped:
        latest_checkpoint(run)
    assert "train it anew" in str(stopped.value)


@pytest.mark.parametrize("budget", [{"steps": "abc"}, {"steps": 1e400}, {"minutes": "x"}, {"steps": True},
                                    {"steps": float("nan")}])
def test_a_damaged_budget_in_status_json_does_not_break_the_run_list(tmp_path, budget):
    run = make_run(tmp_path / "r", steps=10, final=True)
    (run / "status.json").write_text(json.dumps({"status": "finished", "step": 10, "budget": budget}))
    listed = list_runs(tmp_path)
    assert len(listed) == 1 and listed[0].total_steps == 10  # config.json's budget instead


@pytest.mark.parametrize("lock", [{"pid": 99999999999999999999, "host": "h"}, {"pid": 4194304000, "host": None},
                                  {"pid": -5, "host": "h"}, {"pid": 1, "host": "h", "started": 1e300},
                                  {"pid": 1, "host": "h", "started": "NaN"}])
def test_a_lock_with_impossible_fields_is_read_without_a_crash(tmp_path, lock):
    run = make_run(tmp_path / "r", final=True)
    text = json.dumps(lock).replace('"NaN"', "NaN")
    (run / "lock").write_text(text.replace('"host": "h"', f'"host": "{socket.gethostname()}"'))
    holder = lock_holder(run)
    assert holder is None or (holder.pid == 1 and holder.started == 0.0)
    assert read_status(run) in ("finished", "training")  # pid 1 is alive here: a live holder
    assert list_runs(tmp_path)[0].status == read_status(run)
    if holder is None:
        with RunLock(run):  # a damaged lock is taken over like a dead holder's
            assert lock_holder(run).pid == os.getpid()
