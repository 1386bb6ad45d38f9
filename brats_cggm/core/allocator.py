"""The C heap: a fixed mmap threshold keeps a run's peak memory from creeping up case after case; a trim hands
freed heap pages back.

glibc serves a ``malloc`` of at least the *mmap threshold* with its own ``mmap`` (returned to the kernel on
``free``) and smaller ones from its heaps (kept by the process once freed). By default the threshold is
dynamic: each time a block served by ``mmap`` is freed, the threshold rises to that block's size (up to
32 MiB). After the first whole-volume validation case, the sliding window's blocks of a few MiB therefore
come from the heaps, where freed blocks fragment and are kept, and the validation peak creeps up from case to
case. A fixed threshold turns the dynamic one off (``mallopt(M_MMAP_THRESHOLD)``), so every block of at least
the threshold is mapped and unmapped on its own and the peak stays flat. It costs training time (each such
block is zero-filled by the kernel), so the bundle leaves glibc's default unless ``malloc_mmap_threshold`` is
set. The measurements of both effects are in ``docs/performance.md`` (Scale section).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["M_MMAP_THRESHOLD", "set_mmap_threshold", "trim_heap"]

#: glibc's ``mallopt`` parameter number of the mmap threshold (``<malloc.h>``).
M_MMAP_THRESHOLD = -3


def _glibc(function: str):
    """A function of glibc, or None without glibc (musl, macOS, Windows) or without that function."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), function, None) if name else None
    except OSError:
        return None


def set_mmap_threshold(nbytes: int | None) -> bool:
    """Fix glibc's mmap threshold for the rest of the process (no effect without glibc or with None).

    Args:
        nbytes: the threshold in bytes (glibc accepts 0 to 32 MiB on 64-bit systems); None leaves glibc's
            dynamic threshold.

    Returns:
        Whether the threshold was set (False: None, no glibc, or a value glibc refused).
    """
    if nbytes is None:
        return False
    mallopt = _glibc("mallopt")
    # mallopt returns 1 on success, 0 for a value out of range
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, int(nbytes)))


def trim_heap() -> bool:
    """Return the freed pages of glibc's heaps to the kernel (``malloc_trim(0)``).

    Returns:
        Whether there was a glibc to ask.
    """
    malloc_trim = _glibc("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)
    return malloc_trim is not None
