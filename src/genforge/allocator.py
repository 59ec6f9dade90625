"""glibc's allocator set to keep freed memory for reuse instead of handing it back to the kernel.

With glibc's defaults a block past the mmap threshold (128 KiB, raised as blocks are freed, to
32 MiB at most) is mapped for each allocation and unmapped when freed, and the heap's free top is
trimmed back to the kernel past 128 KiB. Work that allocates and frees the same big tensors over
and over then faults all of their pages in again each time, every page zeroed by the kernel: the
VAE's importance-sampled NLL at the end of `genforge train mnist-vae` (k = 5,000 samples per test
image, in chunks far past 32 MiB) took 24 million minor page faults and a minute of system time on
a 2-core Zen 4 VM. Kept, the pages are reused, and that command ran 1.55x faster
(`bench/allocator.py` prints both settings side by side). The training steps of the shipped recipes
at their batch sizes were not changed by it, within that bench's noise. The cost: a process keeps
the memory of its peak until it exits, as PyTorch's caching allocator does on a GPU.

``GENFORGE_MALLOC=default`` leaves glibc's settings alone; other C libraries (musl, macOS) are left
alone too. No torch import: the CLI calls this before every command.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused (bigger ones are mapped)
TRIM_THRESHOLD = (1 << 31) - 1  # the heap's free top is kept (mallopt takes an int)
TOP_PAD = 64 << 20  # and grown 64 MiB at a time
ENV = "GENFORGE_MALLOC"

_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's allocator to keep and reuse freed memory (once per process); True when it was set."""
    global _tuned
    if _tuned is None:
        _tuned = _tune()
    return _tuned


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a GNU system
        return False


def _tune() -> bool:
    if os.environ.get(ENV, "").strip().lower() == "default" or not _glibc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
