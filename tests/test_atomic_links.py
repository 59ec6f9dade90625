"""The atomic writer as a run folder's boundary: whole files or none, never through a planted link."""

from __future__ import annotations

import json

import pytest

from genforge.atomic import atomic_output, write_atomic, write_json_atomic


def test_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"x": 1})
    write_json_atomic(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_link_at_the_target_is_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").symlink_to(outside)
    write_atomic(run / "eval.json", "new")
    assert outside.read_text() == "keep"
    assert not (run / "eval.json").is_symlink() and (run / "eval.json").read_text() == "new"


def test_a_planted_temporary_link_is_refused_not_followed(tmp_path, monkeypatch):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    monkeypatch.setattr("os.getpid", lambda: 7)
    monkeypatch.setattr("secrets.token_hex", lambda n: "beef")
    (tmp_path / ".m.7-beef.tmp.json").symlink_to(outside)  # the temporary name it will use
    with pytest.raises(FileExistsError):
        write_atomic(tmp_path / "m.json", b"{}")
    assert outside.read_text() == "keep"
    assert not (tmp_path / "m.json").exists()


def test_an_error_midway_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "grid.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    with atomic_output(target) as tmp:
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
