"""gateway.ops.heap: freed body buffers stay in the worker's heap for reuse instead of going back to the kernel."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.ops import heap

REPO = Path(__file__).resolve().parents[2]

# Allocates and frees body-sized pieces the way a relay does, then prints how many bytes the heap holds free
# (glibc's mallinfo2). Run in a fresh interpreter, so that the tuning is the only difference.
PROBE = """
import ctypes, sys
from gateway.ops import heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert heap.keep_freed_memory()
for _ in range(20):
    pieces = [bytes(256 * 1024) for _ in range(16)]
    del pieces
print(libc.mallinfo2().fordblks)
"""

glibc_only = pytest.mark.skipif(
    sys.platform != "linux" or not os.confstr("CS_GNU_LIBC_VERSION"), reason="the tuning is glibc's mallopt"
)


def free_bytes_after_relay(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return int(result.stdout)


@glibc_only
def test_freed_pieces_stay_in_the_heap_once_tuned() -> None:
    held = 16 * 256 * 1024
    assert free_bytes_after_relay("default") < held  # glibc's own behaviour: the top of the heap is given back
    assert free_bytes_after_relay("tuned") >= held


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(name: str) -> str:
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(os, "confstr", no_such_name)
    assert heap.keep_freed_memory() is False


def test_a_settled_worker_collects_young_objects_less_often() -> None:
    saved = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, saved[1], saved[2])
        assert gc.get_freeze_count() > 0  # what start-up built is out of the collector's sight
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
