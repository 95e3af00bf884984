"""Relaying a large response body from the upstream's socket to the client's inside the kernel (Linux splice(2)
through a pipe), as HAProxy's `option splice-response` does: the bytes never enter Python, which saves the
two copies a relayed body otherwise costs (kernel to user space, and back) and half of the CPU of a 1 MiB
response (bench/RESULTS.md).

The relay offers it and the edge server does it: the app sends one message of type SPLICE_MESSAGE
(`{"type": SPLICE_MESSAGE, "source": SpliceSource, "count": int}`) in place of the rest of the body, only when
the edge set `scope[gateway.scope.SPLICE]`, which it does for plain TCP connections to an app whose middleware all
know the message. The server writes in `message["sent"]` the bytes it delivered, also when it stops early.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
from typing import Protocol

from gateway.errors import ClientGone

SPLICE_MESSAGE = "gateway.response.splice"
# Bodies with less than this left to read go through Python: below it the pipe and the readiness waits cost more
# than the two copies they save.
MIN_SPLICE_BYTES = 64 * 1024
AVAILABLE = hasattr(os, "splice")

# A pipe holds what one splice call moves; 1 MiB is Linux's default ceiling for an unprivileged process
# (/proc/sys/fs/pipe-max-size). Idle pipes are kept for the next body, up to a bound.
_PIPE_BYTES = 1024 * 1024
_MAX_IDLE_PIPES = 64
_SET_PIPE_SIZE = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_CLIENT_GONE_ERRORS = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN})
_idle_pipes: list[tuple[int, int]] = []


class SpliceSource(Protocol):
    """The upstream side of a spliced body: its socket, and what the relay must learn of the transfer."""

    def fileno(self) -> int: ...

    async def readable(self) -> None:
        """Return once the socket may have bytes; raise the upstream's read timeout if none come in time."""

    def took(self, count: int) -> None:
        """`count` more body bytes left the socket."""

    def ended_early(self) -> Exception:
        """The error for an upstream that closed before the whole body came."""


async def splice_body(source: SpliceSource, sink: int, count: int, sent: list[int]) -> None:
    """Move exactly `count` bytes from `source` to the socket `sink` (both non-blocking), adding what the client
    was given to `sent[0]` as it goes. Raises the source's errors, or ClientGone when the client's connection
    breaks."""
    reader, writer = _take_pipe()
    loop = asyncio.get_running_loop()
    source_fd = source.fileno()
    left = count  # still in the upstream's socket
    in_pipe = 0
    try:
        while left or in_pipe:
            source_blocked = sink_blocked = False
            if left:
                try:
                    taken = os.splice(source_fd, writer, left, flags=_FLAGS)
                except BlockingIOError:
                    source_blocked = True
                else:
                    if not taken:
                        raise source.ended_early()
                    left -= taken
                    in_pipe += taken
                    source.took(taken)
            if in_pipe:
                try:
                    given = os.splice(reader, sink, in_pipe, flags=_FLAGS)
                except BlockingIOError:
                    sink_blocked = True
                except OSError as exc:
                    if exc.errno in _CLIENT_GONE_ERRORS:
                        raise ClientGone from exc
                    raise
                else:
                    in_pipe -= given
                    sent[0] += given
            if sink_blocked:
                await _writable(loop, sink)
            elif source_blocked and not in_pipe:
                await source.readable()
    finally:
        _give_back(reader, writer, empty=not in_pipe)


async def readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until `fd` is readable."""
    await _ready(loop, fd, writing=False)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    await _ready(loop, fd, writing=True)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, writing: bool) -> None:
    # A duplicate is watched: the loop refuses to watch an fd that one of its transports owns.
    duplicate = os.dup(fd)
    ready: asyncio.Future[None] = loop.create_future()
    try:
        if writing:
            loop.add_writer(duplicate, _settle, ready)
        else:
            loop.add_reader(duplicate, _settle, ready)
        await ready
    finally:
        if writing:
            loop.remove_writer(duplicate)
        else:
            loop.remove_reader(duplicate)
        os.close(duplicate)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _take_pipe() -> tuple[int, int]:
    if _idle_pipes:
        return _idle_pipes.pop()
    reader, writer = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # over the user's pipe quota: the default 64 KiB pipe still works
        fcntl.fcntl(writer, _SET_PIPE_SIZE, _PIPE_BYTES)
    return reader, writer


def _give_back(reader: int, writer: int, *, empty: bool) -> None:
    """Keep an empty pipe for the next body; one with bytes left in it (a transfer cut short) is closed."""
    if empty and len(_idle_pipes) < _MAX_IDLE_PIPES:
        _idle_pipes.append((reader, writer))
        return
    os.close(reader)
    os.close(writer)
