"""How a worker holds memory once it has started: the start-up heap out of the garbage collector's sight, young
objects collected less often, and freed body buffers kept for reuse instead of being handed back to the kernel
after every response."""

from __future__ import annotations

import ctypes
import gc
import os

# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Relayed bodies pass through as pieces of up to 256 KiB. glibc's defaults give the top of the heap back to the
# kernel (brk) whenever more than about twice the largest recent piece is free, so the next pieces fault in
# fresh zeroed pages again: a quarter of the kernel time of a 1 MiB relay. Free memory up to this much is kept.
TRIM_THRESHOLD = 64 * 1024 * 1024
# Pieces up to this size come from the heap, where freed ones are reused; larger ones get mappings of their own.
# Setting the trim threshold stops glibc from raising this one by itself, so it is set too.
MMAP_THRESHOLD = 4 * 1024 * 1024
# Net allocations of tracked objects between young-generation collections (CPython's default: 700). Each
# exchange in flight holds a few dozen such objects (frames, futures, dicts) for its whole duration, so at 128
# concurrent exchanges the default threshold ran a collection every few requests, each walking live objects only
# to promote them: bench.pipeline at 128 connections spent 21 µs a request in the collector, and 185 against 137
# µs a request in all. Reference cycles still go within ten thousand allocations.
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Called once a worker is ready to serve."""
    _freeze_start_up_objects()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    keep_freed_memory()


def _freeze_start_up_objects() -> None:
    """Move everything built at start-up (modules, settings models, route stacks: over half a million
    objects) out of the garbage collector's sight, so that its full collections stop walking them all again
    (with the client's per-exchange cycles gone too, bench/pipeline.py went from 215 to 160 µs a request)."""
    gc.collect()
    gc.freeze()


def keep_freed_memory() -> bool:
    """Tune glibc's allocator as above; True if it took. Other C libraries (musl, macOS) are left alone."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (ValueError, OSError):
        return False
    libc = ctypes.CDLL(None)  # the C library the interpreter runs on
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
