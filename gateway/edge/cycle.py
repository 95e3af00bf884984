"""The response cycle of one request: uvicorn's `RequestResponseCycle` with a cheaper `send` and `receive`.

uvicorn's `send` is the largest Python function on the gateway's path. For every field of every response head
it lowers the name and runs two regular expressions (an invalid name, a control character in a value); for a
cache hit's ten fields that is a fifth of the hit. This one writes the same bytes and refuses the same heads:

- a field name is checked once per distinct name (the names a gateway writes are few), and an empty name is
  refused too (uvicorn writes one, making a head line with no name);
- the values are checked together, in C, on the joined head: past the allowed bytes, only the CRLF that ends
  each line may be left.

The request body reaches the app as the parser's own pieces: uvicorn copies each into a bytearray and copies
that again for `receive`, two copies of every uploaded byte.

It also takes one message uvicorn does not know, where the protocol offers it: `gateway.response.splice`, the
rest of a Content-Length body moved from the upstream's socket to the client's by splice(2) (gateway.edge.splice).

Everything else (`run_asgi`, the 500 answer, uvicorn's access log when it is on, the connection state
the protocol reads) is uvicorn's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.httptools_impl import HEADER_RE, STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from gateway.edge.offer import EdgeListener
from gateway.edge.splice import SPLICE_MESSAGE, splice_body
from gateway.errors import ClientGone, ClientTooSlow

# Bytes allowed anywhere in a written head but for the CRLFs that end its lines: all but uvicorn's forbidden
# value bytes (NUL to BS, LF to US, DEL); names are held to the stricter HEADER_RE on their own.
_ALLOWED_IN_HEAD = bytes(byte for byte in range(256) if not (byte <= 0x08 or 0x0A <= byte <= 0x1F or byte == 0x7F))
# A checked field name as apps send it -> as it is written (lower case); bounded, so odd names cannot grow it.
_CHECKED_NAMES: dict[bytes, bytes] = {}
_CHECKED_NAMES_LIMIT = 1024
_FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# The scope's reason for an exchange whose client took none of its response for `limits.send_timeout`.
SEND_TIMEOUT = "send_timeout"

logger = logging.getLogger("gateway.server")


def _checked_name(name: bytes) -> bytes:
    if not name or HEADER_RE.search(name):
        raise RuntimeError("Invalid HTTP header name.")
    lowered = name.lower()
    if len(_CHECKED_NAMES) < _CHECKED_NAMES_LIMIT:
        _CHECKED_NAMES[name] = lowered
    return lowered


class MessageEvent:
    """`asyncio.Event` (the part a cycle uses), as a flag until something waits on it.

    uvicorn makes an Event per request, and an Event allocates a waiter deque (~800 bytes per exchange in
    flight, `bench.inflight`): most requests carry no body, and nothing ever waits on theirs. The real Event is
    made at the first wait.
    """

    __slots__ = ("_event", "_flag")

    def __init__(self) -> None:
        self._flag = False
        self._event: asyncio.Event | None = None

    def set(self) -> None:
        self._flag = True
        if self._event is not None:
            self._event.set()

    def clear(self) -> None:
        self._flag = False
        if self._event is not None:
            self._event.clear()

    def is_set(self) -> bool:
        return self._flag

    async def wait(self) -> bool:
        if self._flag:
            return True
        if self._event is None:
            self._event = asyncio.Event()
        return await self._event.wait()


class EdgeCycle(RequestResponseCycle):
    def __init__(
        self,
        scope: Any,
        transport: asyncio.Transport,
        flow: FlowControl,
        logger: logging.Logger,
        access_logger: logging.Logger,
        access_log: bool,
        default_headers: list[tuple[bytes, bytes]],
        expect_100_continue: bool,
        keep_alive: bool,
        on_response: Callable[[], None],
        send_timeout: float,
    ) -> None:
        # uvicorn's attributes, passed positionally: its keyword call costs more per request.
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.logger = logger
        self.access_logger = access_logger
        self.access_log = access_log
        self.default_headers = default_headers
        self.message_event = cast(asyncio.Event, MessageEvent())  # uvicorn's attribute is typed as an Event
        self.on_response = on_response
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.more_body = True
        self._body: list[bytes] = []  # request body received and not yet handed to the app
        self._body_bytes = 0
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0
        self._head_request = scope["method"] == "HEAD"
        self._send_timeout = send_timeout
        self.listener: EdgeListener | None = None  # the app's exchange, once it attaches (gateway.edge.offer)

    def add_body(self, piece: bytes) -> None:
        """A piece of the request body from the parser (uvicorn's on_body, without the copy)."""
        self._body.append(piece)
        self._body_bytes += len(piece)
        if self._body_bytes > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        self.message_event.set()

    async def receive(self) -> Any:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        pieces = self._body
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._body = []
        self._body_bytes = 0
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{message['type']}'.")
            self.response_started = True
            self.waiting_for_100_continue = False
            if self.access_log:
                self._log_access(message["status"])
            self.transport.write(self._head(message["status"], message.get("headers", ())))
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                if message["type"] == SPLICE_MESSAGE:
                    await self._splice(message)
                    return
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{message['type']}'.")
            more_body = message.get("more_body", False)
            self._write_body(message.get("body", b""), more_body)
            if not more_body:
                if self.expected_content_length != 0:
                    raise RuntimeError("Response content shorter than Content-Length")
                self._complete()
        else:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}' sent, after response already completed.")

    def drop_slow_client(self) -> None:
        """The client took none of what was written for it for `send_timeout` seconds (nginx's send_timeout): the
        connection is dropped with the rest unsent, and an exchange still running ends as for a client that left
        (the server's connection_lost tells the relay, which frees its upstream connection)."""
        if not self.response_complete:
            if self.listener is not None:
                self.listener.edge_ended(SEND_TIMEOUT)
            self.disconnected = True
        logger.info(
            "dropped the connection of %s: it took none of its response for %g s",
            get_client_addr(self.scope),
            self._send_timeout,
        )
        self.transport.abort()  # close() would wait for the buffered bytes the client does not take

    def _complete(self) -> None:
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    async def _splice(self, message: Any) -> None:
        """The rest of a Content-Length body, moved from the upstream's socket by splice(2) (gateway.edge.splice): the
        connection's writes are flushed first, and nothing else writes on it until the transfer ends."""
        count = message["count"]
        if self.chunked_encoding or self._head_request or count != self.expected_content_length:
            raise RuntimeError("A spliced body must be all that is left of a Content-Length response.")
        sent = [0]
        try:
            await self._drain_all()
            if self.disconnected or self.transport.is_closing():
                return
            sink = self.transport.get_extra_info("socket").fileno()
            await splice_body(message["source"], sink, count, sent, sink_timeout=self._send_timeout)
        except ClientTooSlow:
            self.drop_slow_client()
            raise
        except ClientGone:
            self.disconnected = True
            self.transport.close()
            raise  # the app learns of it here, before the server notices the connection is gone
        finally:
            message["sent"] = sent[0]
        self.expected_content_length = 0
        self._complete()

    async def _drain_all(self) -> None:
        """Wait until the transport's buffer is empty, not just under its high-water mark."""
        transport = cast(Any, self.transport)
        transport.flush()  # a response head held for the body's first write
        if not transport.get_write_buffer_size():
            return
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0)  # pauses writing now, resumes once the buffer is empty
        try:
            await self.flow.drain()
        finally:
            transport.set_write_buffer_limits(high=high, low=low)

    def _head(self, status: int, headers: Any) -> bytes:
        content = [STATUS_LINE[status]]
        names = _CHECKED_NAMES
        framing = _FRAMING_NAMES
        has_connection_close = False
        lines = 2  # the status line and the empty line that ends the head
        for fields in (self.default_headers, headers):
            for name, value in fields:
                lowered = names.get(name) or _checked_name(name)
                if lowered in framing and self._note_framing(lowered, value):
                    has_connection_close = True
                content += (lowered, b": ", value, b"\r\n")
                lines += 1
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
            lines += 1
        if self.chunked_encoding is None and not self._head_request and status != 204 and status != 304:
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
            lines += 1
        content.append(b"\r\n")
        head = b"".join(content)
        if head.translate(None, _ALLOWED_IN_HEAD) != b"\r\n" * lines:
            raise RuntimeError("Invalid HTTP header value.")
        return head

    def _log_access(self, status: int) -> None:
        scope = self.scope
        self.access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(scope),
            scope["method"],
            get_path_with_query_string(scope),
            scope["http_version"],
            status,
        )

    def _note_framing(self, name: bytes, value: bytes) -> bool:
        """uvicorn's reading of the fields that frame a response; true for a Connection asking to close."""
        if name == b"content-length":
            if self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
        elif name == b"transfer-encoding":
            if value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
        elif b"close" in [token.lower().strip() for token in value.split(b",")]:
            self.keep_alive = False
            return True
        return False

    def _write_body(self, body: bytes, more_body: bool) -> None:
        if self._head_request:
            self.expected_content_length = 0
        elif self.chunked_encoding:
            content = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                content.append(b"0\r\n\r\n")
            self.transport.write(b"".join(content))
        else:
            if len(body) > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
            self.transport.write(body)
