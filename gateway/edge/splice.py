"""Relaying a large response body from the upstream's socket to the client's inside the kernel (Linux splice(2)
through a pipe), as HAProxy's `option splice-response` does: the bytes never enter Python, which saves the
two copies a relayed body otherwise costs (kernel to user space, and back) and a third of the CPU of a 1 MiB
response (bench/RESULTS.md).

The relay offers it and the edge server does it: the app sends one message of type SPLICE_MESSAGE
(`{"type": SPLICE_MESSAGE, "source": SpliceSource, "count": int}`) in place of the rest of the body, only when
the edge's offer says `splice` (gateway.edge.offer), which it does for plain TCP connections to an app whose
middleware all know the message. The server writes in `message["sent"]` the bytes it delivered, also when it
stops early.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
from typing import Protocol

from gateway.errors import ClientGone, ClientTooSlow

SPLICE_MESSAGE = "gateway.response.splice"
# Bodies with less than this left to read after their head go through Python, where copying so few bytes costs
# about what the pipe's extra system calls would: at 64 and 128 KiB the two ways were within this machine's noise.
MIN_SPLICE_BYTES = 64 * 1024
AVAILABLE = hasattr(os, "splice")

# A pipe holds what one splice call moves; 1 MiB is Linux's default ceiling for an unprivileged process
# (/proc/sys/fs/pipe-max-size), and 256 KiB pipes cost 4-20% more CPU per relayed MiB. Idle pipes are kept for
# the next body, few enough that all of a worker's take a quarter of a user's default pipe quota (64 MiB,
# pipe-user-pages-soft); past the quota a pipe keeps the kernel's default size, which still works.
_PIPE_BYTES = 1024 * 1024
_MAX_IDLE_PIPES = 16
_SET_PIPE_SIZE = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_CLIENT_GONE_ERRORS = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN})
_idle_pipes: list[tuple[int, int]] = []


class SpliceSource(Protocol):
    """The upstream side of a spliced body: its socket, and what the relay must learn of the transfer."""

    read_timeout: float | None  # seconds the upstream may leave the socket empty

    def fileno(self) -> int:
        """The socket's descriptor; raises the upstream's error if the connection is closing."""

    def took(self, count: int) -> None:
        """`count` more body bytes left the socket."""

    def ended_early(self) -> Exception:
        """The error for an upstream that closed before the whole body came."""

    def timed_out(self) -> Exception:
        """The error for an upstream that sent nothing for `read_timeout`."""


async def splice_body(
    source: SpliceSource, sink: int, count: int, sent: list[int], *, sink_timeout: float | None = None
) -> None:
    """Move exactly `count` bytes from `source` to the socket `sink` (both non-blocking), adding what the client
    was given to `sent[0]` as it goes. Raises the source's errors, ClientGone when the client's connection
    breaks, or ClientTooSlow when the client takes nothing for `sink_timeout` seconds.

    Both sockets are used through duplicates of their descriptors: if a transport closes its own meanwhile (a
    lost client, a shutdown), the number cannot be reused for another connection under this transfer, and the
    event loop refuses to watch a descriptor that one of its transports owns.
    """
    loop = asyncio.get_running_loop()
    reader, writer = _take_pipe()
    duplicates: list[int] = []  # closed at the end, whatever happens (descriptors may be running out)
    left = count  # still in the upstream's socket
    in_pipe = 0
    try:
        duplicates.append(os.dup(source.fileno()))
        duplicates.append(os.dup(sink))
        source_fd, sink_fd = duplicates
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
                    given = os.splice(reader, sink_fd, in_pipe, flags=_FLAGS)
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
                if not await _ready(loop, sink_fd, writing=True, timeout=sink_timeout):
                    raise ClientTooSlow
            elif source_blocked and not in_pipe:
                if not await _ready(loop, source_fd, writing=False, timeout=source.read_timeout):
                    raise source.timed_out()
            else:
                await asyncio.sleep(0)  # both sides kept up: let other connections have a turn
    finally:
        for fd in duplicates:
            os.close(fd)
        _give_back(reader, writer, empty=not in_pipe)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, writing: bool, timeout: float | None = None) -> bool:
    """Wait until `fd` can be written (or read); False if `timeout` seconds pass first."""
    ready: asyncio.Future[bool] = loop.create_future()
    if writing:
        loop.add_writer(fd, _settle, ready, True)
    else:
        loop.add_reader(fd, _settle, ready, True)
    timer = loop.call_later(timeout, _settle, ready, False) if timeout is not None else None
    try:
        return await ready
    finally:
        if writing:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()


def _settle(future: asyncio.Future[bool], result: bool) -> None:
    if not future.done():
        future.set_result(result)


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
