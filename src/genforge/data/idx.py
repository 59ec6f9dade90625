"""Reader for IDX files (the MNIST / Fashion-MNIST format), gzipped or raw.

Format (LeCun): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions, then each dimension as a big-endian uint32, then the data.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from genforge.errors import GenforgeError

_UBYTE = 0x08


MAX_BYTES = 1 << 30  # 1 GiB of pixels at most (the 60,000 MNIST training digits are 47 MB)


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes into a uint8 tensor of its shape.

    The data are streamed: the header is read first, and no more than the bytes it announces
    (at most MAX_BYTES) are ever decompressed, so a gzip bomb costs nothing before its error.
    Raises GenforgeError naming the file if it is missing, truncated, not gzip when it says
    so, has a wrong magic number, or its length does not match its header.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw_file:
            gzipped = raw_file.read(2) == b"\x1f\x8b"  # gzip magic: decompress whatever the file name says
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as stream:
            shape, header = _read_header(path, stream)
            size = math.prod(shape)  # Python ints: np.prod would wrap at 2**63
            if size > MAX_BYTES:
                raise GenforgeError(f"{path}: header says shape {shape} ({size:,} bytes), over genforge's limit of "
                                    f"{MAX_BYTES:,}; not an MNIST-style file")
            data = bytearray(size)
            got = stream.readinto(data) if size else 0
            while got < size:
                more = stream.readinto(memoryview(data)[got:])
                if not more:
                    break
                got += more
            extra = len(stream.read(1)) if got == size else 0
    except FileNotFoundError:
        raise GenforgeError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise GenforgeError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if got != size or extra:
        state = "truncated" if got < size else "longer than its header says"
        raise GenforgeError(f"{path}: {state}: header says shape {shape} ({header + size} bytes), "
                            f"file has {'more' if extra else header + got} bytes")
    array = np.frombuffer(data, dtype=np.uint8).reshape(shape)
    return torch.from_numpy(array.copy())


def _read_header(path: Path, stream) -> tuple[tuple[int, ...], int]:
    """(shape, header length) from the start of an IDX stream; GenforgeError if it is not one."""
    start = stream.read(4)
    if len(start) < 4:
        raise GenforgeError(f"{path}: too short to be an IDX file ({len(start)} bytes)")
    if start[0] != 0 or start[1] != 0:
        raise GenforgeError(f"{path}: wrong magic number 0x{start.hex()}, not an IDX file")
    if start[2] != _UBYTE:
        raise GenforgeError(f"{path}: IDX type code 0x{start[2]:02x} is not unsigned byte (0x08)")
    ndim = start[3]
    if ndim == 0 or ndim > 4:
        raise GenforgeError(f"{path}: IDX header claims {ndim} dimensions (expected 1 to 4)")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise GenforgeError(f"{path}: truncated IDX header")
    return tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim)), 4 + 4 * ndim


def write_idx(path: str | Path, tensor: torch.Tensor, compress: bool | None = None) -> None:
    """Write a uint8 tensor as IDX (gzipped when the name ends in .gz); for tests and exports."""
    path = Path(path)
    data = tensor.to(torch.uint8).contiguous().numpy()
    header = bytes([0, 0, _UBYTE, data.ndim]) + b"".join(d.to_bytes(4, "big") for d in data.shape)
    payload = header + data.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
