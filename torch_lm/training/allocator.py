"""Keep freed memory in the process, so that a training step's fresh tensors do not page-fault.

Every training step allocates and frees the same activation-sized tensors (2 MiB each for the
default model's first hidden layer) and NumPy arrays (the CPU dropout words). glibc's malloc
serves blocks above its mmap threshold with fresh ``mmap`` pages and gives them back on ``free``,
and it trims the top of its heap once more than its trim threshold is free; either way the next
step touches new pages and the kernel faults and zeroes each of them (the page faults per step,
with and without the setting, are in ``reports/BENCH.md``).

``keep_freed_memory`` raises both thresholds (the equivalent of ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` in the environment): blocks up to 32 MiB (glibc's ceiling for the mmap
threshold on 64-bit systems) come from the heap, and the heap keeps up to 1 GiB of freed memory
for reuse. The cost is that the process's resident memory stays at its peak instead of shrinking
between steps. It changes no number a computation produces. It is called by the command-line
entry points that train or benchmark (``torch_lm.cli.train``, ``torch_lm.cli.bench``), not on
import: a library should not retune the allocator of the program that imports it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit systems (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Raise glibc malloc's mmap and trim thresholds; True if both were set.

    False, with nothing changed, where there is no glibc ``mallopt`` (macOS, Windows, musl) or
    glibc refused a value.
    """
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    mmap_set = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return mmap_set and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _glibc_mallopt():
    """glibc's ``int mallopt(int, int)``, or None if this process does not run on glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version  # absent from musl: not glibc
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt
