"""set_mmap_threshold: freed mid-size blocks go back to the kernel instead of staying in glibc's heap."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from brats_cggm.core.allocator import set_mmap_threshold, trim_heap

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)

# Frees one 16 MiB block (glibc's dynamic threshold rises to 16 MiB), then allocates 20 blocks of 2 MiB and a
# small one after them (it pins the heap's top), frees the 2 MiB blocks and prints how much anonymous memory
# they left behind, in MiB.
_PROBE = """
import ctypes, ctypes.util, sys
from brats_cggm.core.allocator import set_mmap_threshold
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
threshold = None if sys.argv[1] == "none" else int(sys.argv[1])
print("set", set_mmap_threshold(threshold))
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
def touched(size):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block
libc.free(touched(16 << 20))
before = anon()
blocks = [touched(2 << 20) for _ in range(20)]
pin = touched(60000)  # larger than any free heap chunk: it lands on top of the blocks
for block in blocks:
    libc.free(block)
print("left", anon() - before)
"""


def _left_behind(threshold: str) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", _PROBE, threshold], capture_output=True, text=True, check=True)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    return lines["set"] == "True", float(lines["left"])


@glibc_only
def test_a_fixed_threshold_returns_freed_blocks_the_dynamic_one_keeps():
    was_set, left = _left_behind("none")
    # glibc's default: the 2 MiB blocks came from the heap and stay there (40 MiB)
    assert not was_set and left > 30
    was_set, left = _left_behind("65536")
    assert was_set and left < 10


def test_none_changes_nothing():
    assert set_mmap_threshold(None) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_heap_finds_glibcs_malloc_trim():
    assert trim_heap() is True
