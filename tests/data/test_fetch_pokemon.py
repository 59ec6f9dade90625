"""`genforge data fetch pokemon` (download.fetch of a folder set) against loopback mirrors.

The mirrors serve a few real artworks read from the shared datasets folder (never copied
into the repository); the file checks, manifest, resume and failure handling are the
download machinery's, shared with the IDX datasets.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from genforge.cli import main
from genforge.data.catalog import POKEMON
from genforge.data.download import GIVE_UP_AFTER, fetch, read_manifest
from genforge.errors import GenforgeError

from ..conftest import SHARED_DATASETS
from ..loopback import FAST, cut, dead_url, flip, serving

ARTWORK = SHARED_DATASETS / "pokemon" / "artwork"
if not all((ARTWORK / f"{n}.png").is_file() for n in range(1, 5)):
    pytest.skip(f"Pokemon artwork not found in {ARTWORK}", allow_module_level=True)

FILES = {f"{n}.png": (ARTWORK / f"{n}.png").read_bytes() for n in range(1, 5)}
COUNT = len(FILES)
serve = serving(FILES)


def folder_of(root):
    return root / POKEMON.folder


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_files_are_placed_with_a_manifest_and_a_second_fetch_asks_nothing(serve, tmp_path):
    server = serve()
    folder = fetch(POKEMON, tmp_path, count=COUNT, mirrors=[server.url], **FAST)
    assert folder == folder_of(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FILES, POKEMON.manifest])
    for name, data in FILES.items():
        assert (folder / name).read_bytes() == data
    manifest = (folder / POKEMON.manifest).read_text().splitlines()
    assert manifest == [f"{sha(FILES[name])}  {name}" for name in ("1.png", "2.png", "3.png", "4.png")]
    assert sorted(name for name, _ in server.requests) == sorted(FILES)

    assert fetch(POKEMON, tmp_path, count=COUNT, mirrors=[server.url], **FAST) == folder
    assert len(server.requests) == COUNT


def test_cut_connection_is_resumed_with_range(serve, tmp_path):
    half = len(FILES["2.png"]) // 2
    server = serve(lambda name, n, body: cut(body, half) if name == "2.png" and n == 0 else body)
    folder = fetch(POKEMON, tmp_path, count=COUNT, mirrors=[server.url], **FAST)
    assert (folder / "2.png").read_bytes() == FILES["2.png"]
    assert [rng for name, rng in server.requests if name == "2.png"] == [None, f"bytes={half}-"]
    assert not list(folder.glob("*.part"))


@pytest.mark.parametrize("corrupt, problem", [
    (flip, "corrupt or truncated"),
    (lambda body: b"<html><body>rate limited</body></html>", "not an image"),
    (lambda body: body[: len(body) // 3], "corrupt or truncated"),
    (lambda body: b"", "empty file"),
], ids=["flipped-bytes", "html", "short-body", "empty"])
def test_corrupt_file_is_refused_the_others_kept_and_a_rerun_completes(serve, tmp_path, corrupt, problem):
    bad = serve(lambda name, n, body: corrupt(body) if name == "2.png" else body)
    with pytest.raises(GenforgeError) as info:
        fetch(POKEMON, tmp_path, count=COUNT, mirrors=[bad.url], **FAST)
    message = str(info.value)
    assert "\n" not in message
    assert "could not download 1 file(s) of pokemon (2.png)" in message and problem in message
    # the retry it names fetches the same again: this data root, this mirror, this count
    assert f"`genforge data fetch pokemon --data-root {tmp_path} --mirror {bad.url} --count {COUNT}` again" in message
    folder = folder_of(tmp_path)
    assert not (folder / "2.png").exists() and not list(folder.glob("*.part"))
    assert sorted(read_manifest(folder / POKEMON.manifest)) == ["1.png", "3.png", "4.png"]
    assert len([1 for name, _ in bad.requests if name == "2.png"]) == 1  # a bad copy from scratch: next mirror

    good = serve()
    fetch(POKEMON, tmp_path, count=COUNT, mirrors=[good.url], **FAST)
    assert good.requests == [("2.png", None)]
    assert (folder / "2.png").read_bytes() == FILES["2.png"]
    assert read_manifest(folder / POKEMON.manifest)["2.png"] == sha(FILES["2.png"])


def test_missing_file_is_reported_and_the_others_fetched(serve, tmp_path):
    server = serve(lambda name, n, body: 404 if name == "3.png" else body)
    with pytest.raises(GenforgeError, match=r"\(3.png\).*HTTP 404.*the 3 good files"):
        fetch(POKEMON, tmp_path, count=COUNT, mirrors=[server.url], **FAST)
    assert sorted(p.name for p in folder_of(tmp_path).glob("*.png")) == ["1.png", "2.png", "4.png"]


def test_dead_mirror_gives_up_after_a_run_of_failures(tmp_path):
    big = dataclasses.replace(POKEMON, count=GIVE_UP_AFTER + 3)
    with pytest.raises(GenforgeError) as info:
        fetch(big, tmp_path, mirrors=[dead_url()], retries=0, **FAST)
    message = str(info.value)
    assert f"could not download {GIVE_UP_AFTER} file(s)" in message
    assert f"stopped after {GIVE_UP_AFTER} failures in a row" in message and "\n" not in message


def test_changed_or_broken_local_files_are_fetched_again(serve, tmp_path):
    server = serve()
    folder = fetch(POKEMON, tmp_path, count=COUNT, mirrors=[server.url], **FAST)
    (folder / "1.png").write_bytes(FILES["1.png"][:-10] + b"0123456789")  # differs from the manifest
    (folder / POKEMON.manifest).write_text((folder / POKEMON.manifest).read_text().replace("  3.png", "  x.png"))
    (folder / "3.png").write_bytes(b"junk")  # unknown to the manifest and not an image
    server.requests.clear()
    fetch(POKEMON, tmp_path, count=COUNT, mirrors=[server.url], **FAST)
    assert sorted(name for name, _ in server.requests) == ["1.png", "3.png"]
    assert (folder / "1.png").read_bytes() == FILES["1.png"] and (folder / "3.png").read_bytes() == FILES["3.png"]


def test_good_image_placed_by_hand_is_kept_and_recorded(serve, tmp_path):
    folder = folder_of(tmp_path)
    folder.mkdir(parents=True)
    (folder / "4.png").write_bytes(FILES["1.png"])  # decodes: kept, as an interrupted run's file would be
    server = serve()
    fetch(POKEMON, tmp_path, count=COUNT, mirrors=[server.url], progress=True, backoff=0, timeout=5.0)
    assert sorted(name for name, _ in server.requests) == ["1.png", "2.png", "3.png"]
    assert read_manifest(folder / POKEMON.manifest)["4.png"] == sha(FILES["1.png"])


def test_cli_fetch_and_its_errors(serve, tmp_path, capsys):
    server = serve()
    argv = ["data", "fetch", "pokemon", "--count", "2", "--mirror", server.url, "--data-root", str(tmp_path),
            "--no-progress"]
    assert main(argv) == 0
    assert f"pokemon ready in {folder_of(tmp_path)}" in capsys.readouterr().out
    assert sorted(p.name for p in folder_of(tmp_path).glob("*.png")) == ["1.png", "2.png"]

    for args, problem in ((["--count", "0"], "--count must be positive"),
                          (["--count", "5", "--mirror", server.url], "could not download 1 file(s) of pokemon (5.png)")):
        code = main(["data", "fetch", "pokemon", "--data-root", str(tmp_path), "--no-progress", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and problem in err[0], err
    assert main(["data", "fetch", "mnist", "--count", "3", "--data-root", str(tmp_path)]) == 2
    assert "--count is for image folders, not mnist" in capsys.readouterr().err
    assert not (tmp_path / "mnist").exists()
