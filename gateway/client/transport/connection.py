"""One upstream HTTP/1.1 connection: an asyncio protocol that writes requests and parses responses with
httptools (llhttp), with back-pressure both ways.

Everything that changes shared state runs synchronously (no await between deciding and doing), so a task
cancelled at any await leaves the connection either reusable or closed, never half-used.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools
import httpx

from gateway.edge import splice
from gateway.edge.deadline import Deadline

# Pause reading from the upstream once this much body is buffered and unread by the client side.
READ_HIGH_WATER = 256 * 1024
# Interim responses handed on to the caller: Processing and Early Hints (RFC 9110 15.2; RFC 8297).
RELAYED_INTERIM = frozenset({102, 103})
InterimHandler = Callable[[int, list[tuple[bytes, bytes]]], None]
# An idle connection is given up this long before the upstream said it would close it (`Keep-Alive:
# timeout=N`), so that a request is not sent just as the upstream's own timer closes the connection.
KEEP_ALIVE_MARGIN = 1.0
# Lengths of the header names the connection acts on (Keep-Alive, Content-Length, Transfer-Encoding): one set
# lookup per header picks out the candidates.
_NOTED_LENGTHS = frozenset({len(b"keep-alive"), len(b"content-length"), len(b"transfer-encoding")})


class _TimedOut(Exception):
    pass


class _Unacceptable(Exception):
    """Raised from a parser callback; httptools raises a parser error in its place (this one as its context)."""


class _UnknownCoding(_Unacceptable):
    def __init__(self, coding: bytes) -> None:
        super().__init__(f"a transfer coding the gateway cannot decode ({coding.decode('latin-1')[:40]})")


class _InvalidStatus(_Unacceptable):
    def __init__(self, status: int) -> None:
        super().__init__(f"an invalid status code ({status})")


async def wait_until(
    future: asyncio.Future[None], timeout: float | None, timeout_error: type[httpx.TimeoutException], what: str
) -> None:
    """Await `future`, failing it with `timeout_error(what)` after `timeout` seconds (one timer, no task)."""
    if timeout is None:
        await future
        return
    handle = future.get_loop().call_later(timeout, _expire, future)
    try:
        await future
    except _TimedOut:
        raise timeout_error(what) from None
    finally:
        handle.cancel()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(_TimedOut())


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection carrying one exchange at a time.

    `reusable` is true once a response was read to its end on a connection both sides keep open.
    """

    def __init__(self, on_lost: Callable[[UpstreamConnection], None]) -> None:
        self._on_lost = on_lost
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.active = False
        self.reused = False
        self.idle_until = 0.0  # set by the pool when the connection goes idle
        self.keep_alive_hint = math.inf  # seconds the upstream keeps an idle connection, from `Keep-Alive`
        self._parser = httptools.HttpResponseParser(self)
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._read_deadline = Deadline(self.loop, self._read_timed_out)
        self._splice_fd: int | None = None
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.received_any = False
        self.head_only = False
        self.hold_for_splice = False  # the caller will offer a long body to splice(2): stop reading at its head
        self._held = False  # reading stopped for that
        self.head_done = False
        self.complete = False
        self.keep_alive = True
        self.error: Exception | None = None
        self._declared_length: bytes | None = None
        self._chunked = False
        self._unparsed = 0  # body bytes still due on a Content-Length response, taken past the parser
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._on_interim: InterimHandler | None = None
        self._interim_status = 0

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self._splice_fd = sock.fileno()  # plain TCP: bodies can be spliced from this socket

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self.close()  # bytes nobody asked for: the connection can no longer be trusted
            return
        self.received_any = True
        if self._unparsed:
            self._take_body(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("upstream switched protocols unasked"))
        except httptools.HttpParserError as exc:
            if self.complete:
                self._out_of_step()
            else:
                reason = exc.__context__ if isinstance(exc.__context__, _Unacceptable) else exc
                self._fail(httpx.RemoteProtocolError(f"invalid response from upstream: {reason}"))

    def _take_body(self, data: bytes) -> None:
        """The rest of a Content-Length body, as it arrives: handed on as received rather than through
        httptools, whose on_body copies every piece (a MiB relayed cost one more copy than nginx makes)."""
        surplus = len(data) > self._unparsed
        self.on_body(data[: self._unparsed] if surplus else data)
        if self._unparsed:
            return
        # The parser still expects this body: the next response on the connection gets a new one.
        self._parser = httptools.HttpResponseParser(self)
        self.complete = True
        self._wake()
        if surplus:
            self._out_of_step()

    def _out_of_step(self) -> None:
        """Bytes after a complete response (a body longer than its Content-Length, say): the response stands, as
        nginx has it, but the connection can carry no other one."""
        self.keep_alive = False
        self.close()

    def eof_received(self) -> bool:
        if self.head_done and not self.complete and self._close_delimited():
            self.complete = True  # RFC 9112 6.3: a body without length ends when the connection does
            self.keep_alive = False
            self._wake()
        elif not self.complete:
            self._fail(httpx.RemoteProtocolError("upstream closed the connection before the response ended"))
        return False

    def _close_delimited(self) -> bool:
        """Whether the body runs until the connection closes: no length and not chunked (only asked at EOF)."""
        return self.status not in (204, 304) and self._declared_length is None and not self._chunked

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._read_deadline.cancel()
        if not self.complete:
            self._fail(httpx.ReadError("upstream connection lost"))
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self._on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # a trailer field (after a chunked body): not relayed, and the head's list is the response's now
        self.headers.append((name, value))
        if len(name) in _NOTED_LENGTHS:
            self._note_header(name.lower(), value)

    def _note_header(self, name: bytes, value: bytes) -> None:
        if name == b"keep-alive":
            self._note_keep_alive(value)
        elif name == b"content-length":
            self._declared_length = value  # llhttp refuses a second one, or one that is not a number
        elif name == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                # llhttp would read a body in an unknown coding until the connection closes and hand it on as if
                # it were plain; like nginx, the gateway refuses it (RFC 9112 6.1 lists no coding it could undo).
                raise _UnknownCoding(value)
            self._chunked = True

    def _note_keep_alive(self, value: bytes) -> None:
        for parameter in value.split(b","):
            name, _, seconds = parameter.partition(b"=")
            if name.strip().lower() == b"timeout" and seconds.strip().isdigit():
                self.keep_alive_hint = max(int(seconds) - KEEP_ALIVE_MARGIN, 0.0)

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            self._interim_status = status  # interim (1xx) response: handed on or dropped in on_message_complete
            return
        if status > 599:
            # RFC 9110 15: outside 100-599 a status is invalid, to be treated as a server error.
            raise _InvalidStatus(status)
        self.status = status
        self.head_done = True
        self.keep_alive = self._parser.should_keep_alive()
        if self.head_only:
            # llhttp cannot be told that a HEAD response has no body; end here and never reuse.
            self.complete = True
            self.keep_alive = False
        elif self._declared_length is not None and status not in (204, 304):
            self._unparsed = int(self._declared_length)
            if self.hold_for_splice and self._splice_fd is not None and self._unparsed >= splice.MIN_SPLICE_BYTES:
                # The rest stays in the socket for splice_source; read_chunk reads on if it is not spliced after all.
                cast(asyncio.Transport, self.transport).pause_reading()
                self._held = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._unparsed:  # a Content-Length body (chunked ones are counted by the parser alone)
            self._unparsed -= len(body)
        if self._buffered > READ_HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            # An interim response: 102 and 103 go to whoever asked for them (100 and 101 are the transport's).
            if self._on_interim is not None and self._interim_status in RELAYED_INTERIM:
                self._on_interim(self._interim_status, self.headers)
            self.headers = []
            self._declared_length = None
            self._chunked = False
            return
        self._unparsed = 0
        self.complete = True
        self.keep_alive = self.keep_alive and self._parser.should_keep_alive()
        if self._held:  # the whole body came in the head's read after all: read on, for the next exchange
            self._held = False
            cast(asyncio.Transport, self.transport).resume_reading()
        self._wake()

    # -- the exchange -----------------------------------------------------------------------------

    def start_exchange(
        self, head_only: bool, hold_for_splice: bool = False, on_interim: InterimHandler | None = None
    ) -> None:
        self._reset_exchange()
        self.active = True
        self.head_only = head_only
        self.hold_for_splice = hold_for_splice
        self._on_interim = on_interim

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise httpx.WriteError("upstream connection closed while sending the request")
        self.transport.write(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        """Several pieces in one system call (writev), without joining them first."""
        if self.transport is None or self.closed:
            raise httpx.WriteError("upstream connection closed while sending the request")
        self.transport.writelines(parts)

    async def drain(self, timeout: float | None) -> None:
        if not self._write_paused or self.closed:
            return
        self._drain_waiter = self.loop.create_future()
        try:
            await wait_until(self._drain_waiter, timeout, httpx.WriteTimeout, "upstream did not take the body in time")
        finally:
            self._drain_waiter = None

    async def read_head(self, timeout: float | None) -> None:
        while not self.head_done:
            await self._wait(timeout)

    def take_body(self) -> bytes:
        """The whole body of a complete response, all of it already received."""
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    def splice_source(self, timeout: float | None) -> SplicedBody | None:
        """Hand the rest of a Content-Length body over to splice(2) (gateway.edge.splice), or None when it cannot go
        that way: a TLS connection, another framing, or too little left to read. Reading stops until it is all
        spliced."""
        transport = self.transport
        fd = self._splice_fd
        if fd is None or transport is None or self._unparsed < splice.MIN_SPLICE_BYTES or self.error or self.closed:
            return None
        if not self._held:
            transport.pause_reading()
        self._held = False
        received = list(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return SplicedBody(self, fd, received, self._unparsed, timeout)

    def took_spliced(self, count: int) -> None:
        self._unparsed -= count
        if not self._unparsed:
            self._parser = httptools.HttpResponseParser(self)  # as in _take_body: this one still expects the body
            self.complete = True
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    async def read_chunk(self, timeout: float | None) -> bytes:
        """The next piece of body, or b"" at its end."""
        while not self._chunks:
            if self.complete:
                return b""
            if self._held and self.transport is not None and not self.closed:
                self._held = False
                self.transport.resume_reading()
            await self._wait(timeout)
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered <= READ_HIGH_WATER // 4 and self.transport is not None and not self.closed:
            self.transport.resume_reading()
        return chunk

    async def _wait(self, timeout: float | None) -> None:
        if self.error is not None:
            raise self.error
        self._waiter = self.loop.create_future()
        if timeout is not None:
            self._read_deadline.set(timeout)
        try:
            await self._waiter
        except _TimedOut:
            raise httpx.ReadTimeout("upstream did not answer in time") from None
        finally:
            self._waiter = None
            self._read_deadline.clear()
        if self.error is not None:
            raise self.error

    def _read_timed_out(self) -> None:
        if self._waiter is not None:
            _expire(self._waiter)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self.keep_alive = False
        self._wake()
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class SplicedBody:
    """The rest of a response body, to be spliced from the upstream's socket (a splice.SpliceSource): `received`
    holds the pieces that came before, and `count` the bytes still in the socket."""

    def __init__(
        self, conn: UpstreamConnection, fd: int, received: list[bytes], count: int, timeout: float | None
    ) -> None:
        self._conn = conn
        self._fd = fd
        self.read_timeout = timeout
        self.received = received
        self.count = count

    def fileno(self) -> int:
        """The socket's descriptor, while the connection still owns it (checked at once before it is duplicated:
        a closed connection's number may already belong to another)."""
        transport = self._conn.transport
        if transport is None or transport.is_closing():
            raise self._failed(httpx.ReadError("upstream connection lost"))
        return self._fd

    def took(self, count: int) -> None:
        self._conn.took_spliced(count)

    def ended_early(self) -> Exception:
        return self._failed(httpx.RemoteProtocolError("upstream closed the connection before the response ended"))

    def timed_out(self) -> Exception:
        return self._failed(httpx.ReadTimeout("upstream did not answer in time"))

    def _failed(self, error: Exception) -> Exception:
        self._conn._fail(error)
        return error
