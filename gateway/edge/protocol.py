"""uvicorn's httptools protocol, with the edge defences it lacks on its own.

uvicorn (0.54) puts no limit on the size or number of request headers with httptools, has no deadline for a
request head or body, and accepts any Host. This subclass, selected the supported way (uvicorn's `http`
option takes a protocol class or import path), adds `[limits]` and framing checks before the app sees a request:

- head larger than `max_head_bytes` or with more than `max_headers` lines: 431; target over `max_target_bytes`: 414
- head not complete within `head_timeout` of its first byte (or of connecting): 408
- body slower than `body_min_rate` over a `body_timeout` window, not counting time the gateway held it back: 408
- a client that takes none of its response for `send_timeout` while the gateway has some waiting: dropped (on
  WebSocket sessions too, through EdgeWebSocketProtocol)
- no Host (HTTP/1.1), several Hosts or an invalid one: 400; Transfer-Encoding in HTTP/1.0: 400;
  a transfer coding other than chunked: 501; a version other than 1.0 or 1.1: 505

llhttp (httptools >= 0.6.2) already refuses the other smuggling shapes: Content-Length with Transfer-Encoding,
duplicate or non-numeric Content-Length, bad chunk sizes, obs-fold, whitespace before a colon, bare CR or LF,
control characters. Every refusal is a short problem document and the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, cast

import httptools
from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from gateway.edge import splice
from gateway.edge.cycle import EdgeCycle
from gateway.edge.deadline import Deadline
from gateway.edge.limits import SendTimeout, limits_for
from gateway.edge.offer import EDGE_EXTENSION, EMPTY_QUERY_EXTENSION, EdgeListener, EdgeOffer
from gateway.edge.websocket_protocol import EdgeWebSocketProtocol
from gateway.edge.writes import HeadHoldingTransport
from gateway.errors import PROBLEM_TYPE, problem_body

logger = logging.getLogger("gateway.server")

# Headers the framing checks look at (Expect: uvicorn's own on_header, which the edge protocol replaces).
_FRAMING_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding", b"expect"})
# Seconds before uvicorn's graceful-shutdown deadline at which the gateway ends exchanges still open itself.
SHUTDOWN_MARGIN = 0.5
# How long a connection that has sent nothing yet is kept once shutdown starts: a request may already be in
# its socket, unread, when it was accepted just before (the client has no way to know the worker is leaving).
FIRST_REQUEST_GRACE = 0.5
# RFC 9110 section 7.2: Host = uri-host [ ":" port ]; an empty value is allowed.
_VALID_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(:[0-9]*)?")
# The scope's method strings for the usual methods, made once (others are decoded per request).
_METHODS = {method.encode(): method for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    detail: str
    reason: str  # for the log


HEAD_TOO_LARGE = Refusal(431, "The request head is too large.", "head_too_large")
TOO_MANY_HEADERS = Refusal(431, "The request has too many header lines.", "too_many_headers")
TARGET_TOO_LONG = Refusal(414, "The request target is too long.", "target_too_long")
HEAD_TIMEOUT = Refusal(408, "The request head did not arrive in time.", "head_timeout")
BODY_TIMEOUT = Refusal(408, "The request body arrived too slowly.", "body_timeout")
BAD_HOST = Refusal(400, "The request needs exactly one valid Host header.", "bad_host")
BAD_FRAMING = Refusal(400, "The request is malformed.", "bad_request")
UNSUPPORTED_CODING = Refusal(501, "Only the chunked transfer coding is supported.", "unsupported_coding")
BAD_VERSION = Refusal(505, "Only HTTP versions 1.0 and 1.1 are supported.", "bad_version")


# uvicorn's protocol logs this before every refusal, and the edge logs its own line naming the refusal
# (send_400_response): the edge's protocols log through a child of uvicorn's logger that leaves this one out.
UVICORN_REFUSAL_LINE = "Invalid HTTP request received."


class _OwnRefusalLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != UVICORN_REFUSAL_LINE


SERVER_LOG = logging.getLogger("uvicorn.error.edge")
SERVER_LOG.addFilter(_OwnRefusalLines())


class _Refused(Exception):
    """Raised from a parser callback; httptools turns it into a parser error, which ends in send_400_response."""


class EdgeProtocol(SendTimeout, HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if SERVER_LOG.level != self.logger.level:
            SERVER_LOG.setLevel(self.logger.level)  # uvicorn compares `.level` itself (its TRACE checks)
        self.logger = SERVER_LOG
        if self.ws_protocol_class is WebSocketsSansIOProtocol:  # uvicorn's default; one chosen on purpose is kept
            self.ws_protocol_class = EdgeWebSocketProtocol
        limits = limits_for(config)
        self._max_head = limits.max_head_bytes
        self._max_headers = limits.max_headers
        self._max_target = limits.max_target_bytes
        self._head_timeout = limits.head_timeout
        self._body_window = limits.body_timeout
        self._body_window_minimum = limits.body_min_rate * limits.body_timeout
        self._start_send_timeout(self.loop, limits.send_timeout)
        self._refusal: Refusal | None = None
        # Per request, gathered as the parser hands over the head (so that the checks cost no second pass):
        self._reading_head = False  # between the first byte of a request and the end of its head
        self._head_bytes = 0  # raw bytes received in earlier chunks while the head is incomplete
        self._chunk_bytes = 0  # the chunk being parsed
        self._hosts: list[bytes] = []
        self._valid_host = b""
        self._codings: list[bytes] = []
        self._has_body = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._window_bytes = 0
        self._window_held = False  # reading was paused (back-pressure) at some point in the window
        # The cycle whose task runs: uvicorn's `self.cycle` is already the next one when requests are pipelined.
        self._running: EdgeCycle | None = None
        # What every request's scope is offered (gateway.edge.offer), made once the connection is known.
        self._offer = EdgeOffer(self._attach, self._drop_server_date, splice=False, interim=self._send_interim)
        self._idle_deadline = Deadline(self.loop, self.timeout_keep_alive_handler)
        self._last_request = False  # shutting down: the next request's answer closes the connection
        self._raw_root_path = self.root_path.encode("ascii")

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Everything written on the connection (responses, refusals, a WebSocket's frames) goes through the
        # head-holding transport, so that nothing overtakes a held response head.
        self._writer = HeadHoldingTransport(transport, self.loop)
        super().connection_made(cast(asyncio.Transport, self._writer))
        self._arm_head_timer()
        # Splicing: plain TCP, and an app that lets the message through.
        self._offer.splice = (
            splice.AVAILABLE
            and transport.get_extra_info("sslcontext") is None
            and transport.get_extra_info("socket") is not None
            and _accepts_splice(self.app)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self._idle_deadline.cancel()
        super().connection_lost(exc)
        running = self._running
        # An exchange whose response went out whole is not cut short by the close that follows.
        if running is not None and running.listener is not None and not running.response_complete:
            running.listener.client_gone()

    def _send_timed_out(self) -> None:
        if self._running is not None:
            self._running.drop_slow_client()
        else:  # nothing but a refusal was written
            self.transport.abort()

    def _attach(self, listener: EdgeListener) -> None:
        """The app's exchange for the running request (EdgeOffer.attach)."""
        if self._running is not None:
            self._running.listener = listener

    def data_received(self, data: bytes) -> None:
        self._chunk_bytes = len(data)
        super().data_received(data)
        if self._reading_head and not self.transport.is_closing():
            # The head is still incomplete. httptools buffers a header line until it ends, so an endless line is
            # cut by counting raw bytes; the deadline is armed only now, so that a head arriving whole (nearly
            # every request) costs no timer.
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._refuse_now(HEAD_TOO_LARGE)
            else:
                self._arm_head_timer()

    # Keep-alive: uvicorn arms a timer after every response and cancels it on the next request (~3 µs a request);
    # the deadline below keeps one timer per connection instead.

    def _unset_keepalive_if_required(self) -> None:
        self._idle_deadline.clear()

    def on_response_complete(self) -> None:
        """uvicorn's, but for the keep-alive timer."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_deadline.set(self.timeout_keep_alive)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._writer.start_response()
        self._running = cast(EdgeCycle, cycle)
        # The offer is made once per connection: no reference from the scope back to its cycle (a per-request
        # reference cycle, left to the garbage collector, costs ~20 µs under load).
        scope = cast(dict[str, Any], cycle.scope)
        extensions = scope.get("extensions")
        if extensions is None:
            scope["extensions"] = {EDGE_EXTENSION: self._offer}
        else:
            extensions[EDGE_EXTENSION] = self._offer
        super()._start_asgi_task(cycle, app)

    def _send_interim(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """A 1xx interim response (EdgeOffer.interim) for the running exchange, before its final head; never to an
        HTTP/1.0 client (RFC 9110 15.2), nor once the final response has begun."""
        cycle = self._running
        if cycle is None or cycle.response_started or self.transport.is_closing():
            return
        if cycle.scope["http_version"] == "1.0":
            return
        lines = [STATUS_LINE[status]]
        for name, value in headers:
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        self._writer.write_interim(b"".join(lines))

    def _drop_server_date(self) -> None:
        """The app sends a Date of its own (the cache's stored one): uvicorn's would make a second."""
        cycle = self._running
        if cycle is not None:
            cycle.default_headers = [(name, value) for name, value in cycle.default_headers if name != b"date"]

    def send_400_response(self, msg: str) -> None:
        refusal = self._refusal or BAD_FRAMING
        logger.info("refused a request from %s: %s", _peer(self.client), refusal.reason)
        self._write_refusal(refusal)

    def shutdown(self) -> None:
        """Graceful shutdown: idle connections close now, but one that has not sent its first request yet waits
        FIRST_REQUEST_GRACE for it and closes after answering it; an exchange still open just before the grace
        period ends (a long stream) is ended by the gateway, so that it is logged as such rather than cancelled."""
        self._last_request = True
        if self.cycle is None:
            if not self._reading_head:  # (a head on its way is bounded by head_timeout)
                self._idle_deadline.set(FIRST_REQUEST_GRACE)
            return
        super().shutdown()
        grace = self.config.timeout_graceful_shutdown
        if grace is not None and self.cycle is not None and not self.cycle.response_complete:
            self.loop.call_later(max(grace - SHUTDOWN_MARGIN, 0), self._end_exchange)

    def _end_exchange(self) -> None:
        cycle = cast(EdgeCycle, self.cycle)
        if cycle.response_complete or self.transport.is_closing():
            return
        if cycle.listener is not None:
            cycle.listener.edge_ended("shutdown")
        logger.info("closing an exchange with %s still open as the shutdown grace ends", _peer(self.client))
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self._max_target:
            self._refuse(TARGET_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, inlined (it runs for every header of every request); the few headers the checks
        # need are picked out with one set lookup.
        name = name.lower()
        self.headers.append((name, value))
        if name in _FRAMING_HEADERS:
            self._note_framing_header(name, value)

    def _note_framing_header(self, name: bytes, value: bytes) -> None:
        if name == b"host":
            self._hosts.append(value)
        elif name == b"content-length":
            self._has_body = value.strip(b"0") != b""
        elif name == b"transfer-encoding":
            self._codings.append(value)
            self._has_body = True
        elif value.lower() == b"100-continue":
            self.expect_100_continue = True

    def on_headers_complete(self) -> None:
        self._reading_head = False
        if self._head_timer is not None:
            self._cancel_head_timer()
        version = self.parser.get_http_version()
        refusal = self._framing_problem(version)
        if refusal is not None:
            self._refuse(refusal)
        self._begin_exchange(version)
        if self._has_body:
            self._window_bytes = 0
            self._window_held = False
            self._body_timer = self.loop.call_later(self._body_window, self._check_body_progress)
        self._head_bytes = 0
        self._has_body = False
        if self._codings:
            self._codings = []
        self._hosts = []

    def _begin_exchange(self, version: str) -> None:
        """uvicorn's on_headers_complete, with the edge's response cycle: the scope is completed and the request
        runs, or waits behind the one in progress (pipelining)."""
        parser = self.parser
        scope = cast(dict[str, Any], self.scope)
        raw_method = parser.get_method()
        scope["method"] = _METHODS.get(raw_method) or raw_method.decode("ascii")
        if version != "1.1":
            scope["http_version"] = version
        if parser.should_upgrade() and self._should_upgrade():
            return
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self._raw_root_path + raw_path
        query = url.query
        if query is None and self.url.endswith(b"?"):
            scope["extensions"] = {EMPTY_QUERY_EXTENSION: {}}
        scope["query_string"] = query or b""
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app: ASGI3Application = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        else:
            app = self.app
        running = self.cycle
        self.cycle = EdgeCycle(
            scope,
            self.transport,
            self.flow,
            self.logger,
            self.access_logger,
            self.access_log,
            self.server_state.default_headers,
            self.expect_100_continue,
            version != "1.0" and parser.should_keep_alive() and not self._last_request,
            self.on_response_complete,
            self._send_timeout,
        )
        if running is None or running.response_complete:
            self._start_asgi_task(self.cycle, app)
        else:
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))

    def on_body(self, body: bytes) -> None:
        cycle = cast(EdgeCycle, self.cycle)
        if not cycle.response_complete and not (self.parser.should_upgrade() and self._should_upgrade()):
            cycle.add_body(body)
        self._window_bytes += len(body)
        if self.flow.read_paused:
            self._window_held = True

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._cancel_body_timer()
        super().on_message_complete()

    # Checks

    def _framing_problem(self, version: str) -> Refusal | None:
        if version != "1.1" and version != "1.0":
            return BAD_VERSION
        hosts = self._hosts
        if len(hosts) != 1 and (hosts or version == "1.1"):
            return BAD_HOST
        if hosts and hosts[0] != self._valid_host:
            if not _VALID_HOST.fullmatch(hosts[0]):
                return BAD_HOST
            self._valid_host = hosts[0]  # keep-alive requests nearly always repeat it
        if self._codings:
            # RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
            if version == "1.0":
                return BAD_FRAMING
            # Any coding but chunked would reach the upstream undeclared once the framing is rewritten.
            if b",".join(self._codings).strip().lower() != b"chunked":
                return UNSUPPORTED_CODING
        if len(self.headers) > self._max_headers:
            return TOO_MANY_HEADERS
        # The head came in the bytes counted so far plus the current chunk; only when those exceed the limit
        # (a body in the same chunk) is the exact size worth adding up.
        if self._head_bytes + self._chunk_bytes > self._max_head:
            head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if head > self._max_head:
                return HEAD_TOO_LARGE
        return None

    def _check_body_progress(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.transport.is_closing():
            return
        # The client is not to blame while the gateway holds the body back or has not yet asked for it.
        excused = self._window_held or self.flow.read_paused or cycle.waiting_for_100_continue
        if not excused and self._window_bytes < max(self._body_window_minimum, 1):
            self._cut_body()
            return
        self._window_bytes = 0
        self._window_held = False
        self._body_timer = self.loop.call_later(self._body_window, self._check_body_progress)

    def _cut_body(self) -> None:
        """The body is too slow: answer 408 if the app has not answered yet, and end the exchange for both sides."""
        cycle = cast(EdgeCycle, self.cycle)
        logger.info("refused a request from %s: %s", _peer(self.client), BODY_TIMEOUT.reason)
        answered = not cycle.response_started
        if cycle.listener is not None:
            cycle.listener.edge_ended(BODY_TIMEOUT.reason, BODY_TIMEOUT.status if answered else None)
        if answered:
            cycle.response_started = True
            self._write_refusal(BODY_TIMEOUT)
        else:
            self.transport.close()
        cycle.disconnected = True
        cycle.message_event.set()

    # Refusals and timers

    def _refuse(self, refusal: Refusal) -> None:
        self._refusal = refusal
        raise _Refused(refusal.reason)

    def _refuse_now(self, refusal: Refusal) -> None:
        self._refusal = refusal
        self.send_400_response(refusal.detail)

    def _on_head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # mid-response on a pipelined connection: no room for an answer
            return
        self._refuse_now(HEAD_TIMEOUT)

    def _write_refusal(self, refusal: Refusal) -> None:
        self._cancel_timers()
        body = problem_body(refusal.status, refusal.detail, "")
        head = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: ",
            PROBLEM_TYPE.encode(),
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout, self._on_head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()


def _accepts_splice(app: Any) -> bool:
    """Whether every middleware between this server and the app's endpoints lets a splice message through:
    the gateway's app says so of its own (`accepts_splice`); uvicorn's proxy-headers wrapper leaves sends alone.
    Any other wrapper might not know the message, so none is offered."""
    while isinstance(app, ProxyHeadersMiddleware):
        app = app.app
    accepts = getattr(app, "accepts_splice", None)
    return callable(accepts) and accepts() is True


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"
