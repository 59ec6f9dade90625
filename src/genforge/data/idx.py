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


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes into a uint8 tensor of its shape.

    Raises GenforgeError naming the file if it is missing, truncated, not gzip when
    it says so, has a wrong magic number, or its length does not match its header.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: decompress whatever the file name says
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise GenforgeError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise GenforgeError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4:
        raise GenforgeError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise GenforgeError(f"{path}: wrong magic number 0x{raw[:4].hex()}, not an IDX file")
    if raw[2] != _UBYTE:
        raise GenforgeError(f"{path}: IDX type code 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    if ndim == 0 or ndim > 4:
        raise GenforgeError(f"{path}: IDX header claims {ndim} dimensions (expected 1 to 4)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise GenforgeError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)  # Python ints: np.prod would wrap at 2**63
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise GenforgeError(
            f"{path}: {state}: header says shape {shape} ({expected} bytes), file has {len(raw)} bytes")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


def write_idx(path: str | Path, tensor: torch.Tensor, compress: bool | None = None) -> None:
    """Write a uint8 tensor as IDX (gzipped when the name ends in .gz); for tests and exports."""
    path = Path(path)
    data = tensor.to(torch.uint8).contiguous().numpy()
    header = bytes([0, 0, _UBYTE, data.ndim]) + b"".join(d.to_bytes(4, "big") for d in data.shape)
    payload = header + data.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
