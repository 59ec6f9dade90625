"""read_idx / write_idx: the MNIST file format, and every way a file can be broken."""

from __future__ import annotations

import gzip
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genforge.data.idx import read_idx, write_idx
from genforge.errors import GenforgeError

IMAGES = torch.arange(2 * 3 * 4, dtype=torch.uint8).view(2, 3, 4)
HEADER = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
PAYLOAD = HEADER + IMAGES.numpy().tobytes()


def _error(path) -> str:
    """The message of the GenforgeError that reading ``path`` raises (checked to be one line, naming it)."""
    with pytest.raises(GenforgeError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["x-idx3-ubyte.gz", "x-idx3-ubyte"])
def test_write_then_read_round_trips(tmp_path, name):
    path = tmp_path / name
    write_idx(path, IMAGES)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == torch.uint8 and back.shape == (2, 3, 4)
    assert torch.equal(back, IMAGES)


def test_reads_hand_written_raw_and_gzip(tmp_path):
    raw, gz = tmp_path / "a-ubyte", tmp_path / "b-ubyte.gz"
    raw.write_bytes(PAYLOAD)
    gz.write_bytes(gzip.compress(PAYLOAD))
    assert torch.equal(read_idx(raw), IMAGES)
    assert torch.equal(read_idx(gz), IMAGES)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    path = tmp_path / "unzipped-ubyte"  # no .gz, but gzipped bytes
    path.write_bytes(gzip.compress(PAYLOAD))
    assert torch.equal(read_idx(path), IMAGES)


def test_labels_one_dimension(tmp_path):
    labels = torch.tensor([7, 2, 1, 0], dtype=torch.uint8)
    write_idx(tmp_path / "l.gz", labels)
    assert torch.equal(read_idx(tmp_path / "l.gz"), labels)


def test_missing_file(tmp_path):
    assert "no such file" in _error(tmp_path / "nope.gz")


def test_wrong_magic(tmp_path):
    path = tmp_path / "magic"
    path.write_bytes(b"\x01\x00" + PAYLOAD[2:])
    assert "magic" in _error(path)


def test_wrong_type_code(tmp_path):
    path = tmp_path / "float-idx"
    path.write_bytes(PAYLOAD[:2] + b"\x0d" + PAYLOAD[3:])
    assert "type code 0x0d" in _error(path)


@pytest.mark.parametrize("ndim", [0, 5, 200])
def test_bad_dimension_count(tmp_path, ndim):
    path = tmp_path / "dims"
    path.write_bytes(bytes([0, 0, 8, ndim]) + b"\x00" * 64)
    assert "dimensions" in _error(path)


def test_too_short(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00")
    assert "too short" in _error(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "header"
    path.write_bytes(HEADER[:9])
    assert "truncated IDX header" in _error(path)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_data(tmp_path, compress):
    path = tmp_path / "trunc"
    data = PAYLOAD[:-5]
    path.write_bytes(gzip.compress(data) if compress else data)
    message = _error(path)
    assert "truncated" in message and "(2, 3, 4)" in message


def test_longer_than_header(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(PAYLOAD + b"\x00\x01")
    assert "longer than its header says" in _error(path)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(PAYLOAD)[:-12])
    assert "gzip" in _error(path)


def test_corrupt_gzip_stream(tmp_path):
    blob = bytearray(gzip.compress(PAYLOAD * 20))
    blob[len(blob) // 2] ^= 0xFF
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(blob))
    _error(path)


def test_header_whose_size_overflows_int64(tmp_path):
    """4 dims of 2**16 claim 2**64 bytes: must be reported, not wrapped to 0 by 64-bit arithmetic."""
    path = tmp_path / "huge"
    path.write_bytes(bytes([0, 0, 8, 4]) + (1 << 16).to_bytes(4, "big") * 4)
    assert "18,446,744,073,709,551,616 bytes), over genforge's limit" in _error(path)


def test_bundled_digits_have_the_mnist_layout():
    from genforge.data.datasets import bundled_folder

    images = read_idx(bundled_folder() / "images-idx3-ubyte.gz")
    labels = read_idx(bundled_folder() / "labels-idx1-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert int(labels.max()) == 9 and int(images.max()) == 255


# --- hypothesis: any bytes at all -> a tensor or GenforgeError -------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read_or_genforge_error(path):
    try:
        return read_idx(path)
    except GenforgeError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return None


@_FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(tmp_path, blob):
    path = tmp_path / "fuzz"
    path.write_bytes(blob)
    _read_or_genforge_error(path)


@_FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_behind_gzip_magic(tmp_path, blob):
    path = tmp_path / "fuzz.gz"
    path.write_bytes(b"\x1f\x8b" + blob)
    _read_or_genforge_error(path)


@_FUZZ
@given(st.booleans(), st.integers(0, 10_000), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                       max_size=4))
def test_truncated_or_mutated_valid_files(tmp_path, compress, cut, edits):
    blob = bytearray(gzip.compress(PAYLOAD, mtime=0) if compress else PAYLOAD)
    for position, value in edits:
        blob[position % len(blob)] = value
    blob = blob[:cut % (len(blob) + 1)]
    path = tmp_path / "mutated"
    path.write_bytes(bytes(blob))
    result = _read_or_genforge_error(path)
    if result is not None:
        assert result.dtype == torch.uint8


@_FUZZ
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4).flatmap(
    lambda shape: st.lists(st.integers(0, 255), min_size=int(torch.tensor(shape).prod()),
                           max_size=int(torch.tensor(shape).prod())).map(
        lambda values: torch.tensor(values, dtype=torch.uint8).view(*shape))), st.booleans())
def test_valid_write_round_trips(tmp_path, tensor, compress):
    path = tmp_path / ("t.gz" if compress else "t")
    write_idx(path, tensor)
    back = read_idx(path)
    assert back.shape == tensor.shape and torch.equal(back, tensor)


def _gzip_of_zeros(header: bytes, zeros: int) -> bytes:
    """A gzip stream of ``header`` followed by ``zeros`` zero bytes, compressed as it is made."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    chunk = bytes(1 << 20)
    parts = [packer.compress(header)]
    for _ in range(zeros // len(chunk)):
        parts.append(packer.compress(chunk))
    return b"".join(parts) + packer.flush()


def test_a_gzip_bomb_is_refused_from_its_header_without_decompressing_it(tmp_path):
    path = tmp_path / "bomb-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + (2_000_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2  # 1.57 GB claimed
    path.write_bytes(_gzip_of_zeros(header, 1 << 20))
    assert "over genforge's limit" in _error(path)


def test_a_gzip_bomb_behind_a_small_header_stops_after_the_announced_bytes(tmp_path):
    import tracemalloc

    path = tmp_path / "bomb-labels.gz"
    path.write_bytes(_gzip_of_zeros(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big"), 64 << 20))  # 64 MB of zeros
    tracemalloc.start()
    try:
        assert "longer than its header says" in _error(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # it read the 10 announced bytes and one more, not the 64 MB
