"""genforge.data.download.fetch against loopback HTTP servers serving the real Fashion-MNIST files.

The servers (tests/loopback.py) run on 127.0.0.1 (port 0) in a thread; they count requests
and record their Range headers, so the tests can assert what went over the wire.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from pathlib import Path

import pytest

from genforge.data.catalog import FASHION_MNIST
from genforge.data.download import fetch
from genforge.errors import GenforgeError

from ..loopback import FAST, cut, dead_url, flip, serving

_ENV = os.environ.get("GENFORGE_DATA")
DATASETS = Path(_ENV) if _ENV else Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
SOURCE = DATASETS / FASHION_MNIST.folder

if not all((SOURCE / f.name).is_file() for f in FASHION_MNIST.files):
    pytest.skip(f"Fashion-MNIST files not found in {SOURCE}", allow_module_level=True)

ORIGINALS = {f.name: (SOURCE / f.name).read_bytes() for f in FASHION_MNIST.files}
LABELS = "t10k-labels-idx1-ubyte.gz"  # 5 KB: keeps most cases fast
SMALL = dataclasses.replace(FASHION_MNIST, files=tuple(f for f in FASHION_MNIST.files if f.name == LABELS))
serve = serving(ORIGINALS)


def test_good_mirror_places_all_files_and_second_fetch_makes_no_request(serve, tmp_path):
    server = serve()
    folder = fetch(FASHION_MNIST, tmp_path, mirrors=[server.url], **FAST)
    assert folder == tmp_path / FASHION_MNIST.folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(ORIGINALS)
    for name, data in ORIGINALS.items():
        assert (folder / name).read_bytes() == data
    assert len(server.requests) == 4
    assert all(rng is None for _, rng in server.requests)

    assert fetch(FASHION_MNIST, tmp_path, mirrors=[server.url], **FAST) == folder
    assert len(server.requests) == 4


def test_connection_cut_midway_is_resumed_with_range(serve, tmp_path):
    half = len(ORIGINALS[LABELS]) // 2
    server = serve(lambda name, n, body: cut(body, half) if n == 0 else body)
    folder = fetch(SMALL, tmp_path, mirrors=[server.url], progress=True, backoff=0, timeout=5.0)
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]
    assert server.requests == [(LABELS, None), (LABELS, f"bytes={half}-")]
    assert not (folder / (LABELS + ".part")).exists()


def other_payload(body: bytes) -> bytes:
    """A valid gzip whose payload differs by one byte: only the hash can tell."""
    raw = bytearray(gzip.decompress(body))
    raw[-1] ^= 0x01
    return gzip.compress(bytes(raw))


@pytest.mark.parametrize("corrupt", [flip, other_payload], ids=["flipped-bytes", "wrong-payload"])
def test_corrupt_mirror_raises_and_leaves_nothing_complete(serve, tmp_path, corrupt):
    server = serve(lambda name, n, body: corrupt(body))
    with pytest.raises(GenforgeError) as info:
        fetch(SMALL, tmp_path, mirrors=[server.url], **FAST)
    msg = str(info.value)
    assert LABELS in msg
    assert SMALL.files[0].sha256 in msg
    assert "\n" not in msg
    if corrupt is other_payload:
        got = hashlib.sha256(gzip.decompress(corrupt(ORIGINALS[LABELS]))).hexdigest()
        assert got in msg
    assert not (tmp_path / SMALL.folder).exists()  # nothing complete, and no empty folder left


def test_corrupt_first_mirror_falls_back_to_good_second(serve, tmp_path):
    bad = serve(lambda name, n, body: flip(body))
    good = serve()
    folder = fetch(SMALL, tmp_path, mirrors=[bad.url, good.url], **FAST)
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]
    assert len(bad.requests) == 1  # a from-scratch mismatch is not retried on the same mirror
    assert good.requests == [(LABELS, None)]


def test_dead_first_mirror_falls_back_to_second(serve, tmp_path):
    good = serve()
    folder = fetch(SMALL, tmp_path, mirrors=[dead_url(), good.url], **FAST)
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]
    assert good.requests == [(LABELS, None)]


def test_only_dead_mirrors_raise_one_line_error_after_retries(tmp_path):
    url = dead_url()
    with pytest.raises(GenforgeError) as info:
        fetch(SMALL, tmp_path, mirrors=[url], retries=2, **FAST)
    msg = str(info.value)
    assert LABELS in msg and url in msg and "\n" not in msg
    assert not (tmp_path / SMALL.folder / LABELS).exists()


def test_existing_part_is_resumed_with_range(serve, tmp_path):
    n = 1000
    folder = tmp_path / SMALL.folder
    folder.mkdir()
    (folder / (LABELS + ".part")).write_bytes(ORIGINALS[LABELS][:n])
    server = serve()
    fetch(SMALL, tmp_path, mirrors=[server.url], progress=True, backoff=0, timeout=5.0)
    assert server.requests == [(LABELS, f"bytes={n}-")]
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]
    assert not (folder / (LABELS + ".part")).exists()


def test_server_ignoring_range_restarts_from_zero(serve, tmp_path):
    folder = tmp_path / SMALL.folder
    folder.mkdir()
    (folder / (LABELS + ".part")).write_bytes(b"x" * 1000)  # garbage a 200 reply must replace
    server = serve(honour_range=False)
    fetch(SMALL, tmp_path, mirrors=[server.url], **FAST)
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]
    # one request: the 200 body overwrote the .part rather than being appended to it
    assert server.requests == [(LABELS, "bytes=1000-")]


def test_oversized_part_gets_416_and_starts_over(serve, tmp_path):
    folder = tmp_path / SMALL.folder
    folder.mkdir()
    size = len(ORIGINALS[LABELS])
    (folder / (LABELS + ".part")).write_bytes(b"x" * (size + 10))
    server = serve()
    fetch(SMALL, tmp_path, mirrors=[server.url], **FAST)
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]
    assert server.requests == [(LABELS, f"bytes={size + 10}-"), (LABELS, None)]


def test_corrupt_existing_file_is_replaced(serve, tmp_path):
    folder = tmp_path / SMALL.folder
    folder.mkdir()
    (folder / LABELS).write_bytes(flip(ORIGINALS[LABELS]))
    server = serve()
    fetch(SMALL, tmp_path, mirrors=[server.url], **FAST)
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]
    assert len(server.requests) == 1


def test_stalled_server_times_out_and_is_resumed(serve, tmp_path):
    half = len(ORIGINALS[LABELS]) // 2
    server = serve(lambda name, n, body: cut(body, half, stall=1.0) if n == 0 else body)
    folder = fetch(SMALL, tmp_path, mirrors=[server.url], progress=False, backoff=0, timeout=0.3)
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]
    assert server.requests == [(LABELS, None), (LABELS, f"bytes={half}-")]


def test_a_failed_fetch_leaves_no_empty_folders_it_made(serve, tmp_path):
    server = serve(lambda name, n, body: 404)
    (tmp_path / "mine").mkdir()
    root = tmp_path / "mine" / "new" / "root"
    with pytest.raises(GenforgeError):
        fetch(SMALL, root, mirrors=[server.url], **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"] and not any((tmp_path / "mine").iterdir())
    (root / SMALL.folder).mkdir(parents=True)  # a folder that was there before the fetch is kept
    with pytest.raises(GenforgeError):
        fetch(SMALL, root, mirrors=[server.url], **FAST)
    assert (root / SMALL.folder).is_dir()


def test_http_404_raises_one_line_error_without_retrying(serve, tmp_path):
    server = serve(lambda name, n, body: 404)
    with pytest.raises(GenforgeError) as info:
        fetch(SMALL, tmp_path, mirrors=[server.url], **FAST)
    msg = str(info.value)
    assert "\n" not in msg
    assert LABELS in msg and "404" in msg
    assert str(tmp_path / SMALL.folder) in msg
    assert len(server.requests) == 1  # a missing file is not retried on the same mirror
    assert not (tmp_path / SMALL.folder / LABELS).exists()


def test_http_503_is_retried(serve, tmp_path):
    server = serve(lambda name, n, body: 503 if n == 0 else body)
    folder = fetch(SMALL, tmp_path, mirrors=[server.url], **FAST)
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]
    assert len(server.requests) == 2


def test_failed_download_keeps_only_the_part_and_next_run_resumes_it(serve, tmp_path):
    half = len(ORIGINALS[LABELS]) // 2
    flaky = serve(lambda name, n, body: cut(body, half) if n == 0 else 503)
    with pytest.raises(GenforgeError):
        fetch(SMALL, tmp_path, mirrors=[flaky.url], retries=1, **FAST)
    folder = tmp_path / SMALL.folder
    assert sorted(p.name for p in folder.iterdir()) == [LABELS + ".part"]  # never the final name
    assert (folder / (LABELS + ".part")).read_bytes() == ORIGINALS[LABELS][:half]

    good = serve()
    fetch(SMALL, tmp_path, mirrors=[good.url], **FAST)
    assert good.requests == [(LABELS, f"bytes={half}-")]
    assert sorted(p.name for p in folder.iterdir()) == [LABELS]
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]


def test_bytes_from_one_mirror_are_not_resumed_against_the_next(serve, tmp_path):
    half = len(ORIGINALS[LABELS]) // 2
    flaky = serve(lambda name, n, body: cut(body, half))
    good = serve()
    folder = fetch(SMALL, tmp_path, mirrors=[flaky.url, good.url], retries=0, **FAST)
    assert flaky.requests == [(LABELS, None)]
    assert good.requests == [(LABELS, None)]  # from zero: mirrors may compress differently
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]


def test_spliced_resume_that_fails_the_hash_is_retried_from_zero(serve, tmp_path):
    folder = tmp_path / SMALL.folder
    folder.mkdir()
    (folder / (LABELS + ".part")).write_bytes(flip(ORIGINALS[LABELS][:1000]))  # stale bytes of another copy
    server = serve()
    fetch(SMALL, tmp_path, mirrors=[server.url], **FAST)
    assert server.requests == [(LABELS, "bytes=1000-"), (LABELS, None)]
    assert (folder / LABELS).read_bytes() == ORIGINALS[LABELS]


def test_retries_are_bounded_per_mirror(serve, tmp_path):
    busy = serve(lambda name, n, body: 503)
    with pytest.raises(GenforgeError) as info:
        fetch(SMALL, tmp_path, mirrors=[busy.url], retries=2, **FAST)
    assert len(busy.requests) == 3  # the first attempt and two retries
    assert "503" in str(info.value)
