"""The access log: one record per exchange (or WebSocket session) on logger `gateway.access`, refusals included."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Awaitable, Collection
from typing import Any, ClassVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import scope as keys
from gateway.edge.splice import SPLICE_MESSAGE
from gateway.ops.logs import sole_access_handler
from gateway.ops.metrics import GatewayMetrics

logger = logging.getLogger("gateway.access")

# nginx's status for a client that closed the connection before the response was complete.
CLIENT_CLOSED = 499


class AccessLogMiddleware:
    """Times the whole exchange and counts the bytes both ways, then logs a dict of fields and/or records the
    exchange in the metrics (one measurement feeds both).

    Authorization and cookie values are never read. Routes in `quiet_routes` (prefixes) are not logged.
    The record is built here and formatted by the log handler (gateway.ops.logs), in a background thread.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        quiet_routes: Collection[str] = (),
        log: bool = True,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.app = app
        self._quiet_routes = frozenset(quiet_routes)
        self._log = log
        self._metrics = metrics

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine: it hands back the awaitable that runs the exchange (_observed holds the frame that
        # logs in `finally`), one coroutine frame less per exchange.
        logging_on = self._log and logger.isEnabledFor(logging.INFO)
        if (not logging_on and self._metrics is None) or scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return self._websocket_session(scope, receive, send)
        started = time.perf_counter()
        counts = {"status": 0, "in": 0, "out": 0, "complete": 0}
        timings: dict[str, float] = {}
        scope[keys.TIMINGS] = timings

        async def counting_receive() -> Message:
            message = await receive()
            counts["in"] += len(message.get("body", b""))
            return message

        def counting_send(message: Message) -> Awaitable[None]:  # hands back send's awaitable: no frame of its own
            if message["type"] == "http.response.start":
                counts["status"] = message["status"]
            elif message["type"] == "http.response.body":
                counts["out"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    counts["complete"] = 1
            elif message["type"] == SPLICE_MESSAGE:
                return _count_spliced(send(message), message, counts)
            return send(message)

        return self._observed(scope, counting_receive, counting_send, counts, timings, started)

    def _finish(self, scope: Scope, counts: dict[str, int], timings: dict[str, float], started: float) -> None:
        ended = time.perf_counter()
        status = scope.get(keys.EDGE_STATUS) or counts["status"]
        if not counts["complete"] and scope.get(keys.REASON) == "client_closed":
            status = CLIENT_CLOSED
        upstream_headers = timings.get("upstream_headers")
        upstream_seconds = upstream_headers - started if upstream_headers else None
        if self._metrics is not None:
            self._metrics.in_flight_now -= 1
            self._metrics.observe(
                scope.get(keys.ROUTE),
                scope.get("method", "GET"),
                status,
                ended - started,
                upstream_seconds,
                counts["in"],
                counts["out"],
                scope.get(keys.REASON),
                scope.get(keys.CACHE),
            )
        if self._log and scope.get(keys.ROUTE) not in self._quiet_routes and logger.isEnabledFor(logging.INFO):
            _log(scope, status, counts, ended - started, upstream_seconds)

    async def _websocket_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One record per session, when it ends: status 101 once accepted (or the handshake's refusal), bytes
        of message payloads each way, and the whole session's duration."""
        started = time.perf_counter()
        counts = {"status": 0, "in": 0, "out": 0, "complete": 1}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                counts["in"] += _payload_size(message)
            return message

        async def counting_send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.send":
                counts["out"] += _payload_size(message)
            elif kind == "websocket.accept":
                counts["status"] = 101
            elif kind == "websocket.http.response.start":
                counts["status"] = message["status"]
            elif kind == "websocket.close" and not counts["status"]:
                counts["status"] = 403  # closed before accepting: the server refuses the handshake with 403
            await send(message)

        await self._observed(scope, counting_receive, counting_send, counts, {}, started)

    async def _observed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        counts: dict[str, int],
        timings: dict[str, float],
        started: float,
    ) -> None:
        """Run the exchange with its counting receive and send, then log and record it, whatever happened."""
        if self._metrics is not None:
            self._metrics.in_flight_now += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._finish(scope, counts, timings, started)


async def _count_spliced(sending: Awaitable[None], message: Message, counts: dict[str, int]) -> None:
    """A spliced body counts what the server delivered (`sent`), known only once it is done or cut short."""
    try:
        await sending
    finally:
        counts["out"] += message.get("sent", 0)
        counts["complete"] = int(message.get("sent", 0) == message["count"])


def _payload_size(message: Message) -> int:
    data = message.get("bytes")
    if data is not None:
        return len(data)
    return len(message.get("text") or "")  # characters: close enough to bytes for a log, and cheap


def _log(scope: Scope, status: int, counts: dict[str, int], seconds: float, upstream_seconds: float | None) -> None:
    user_agent = b""
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value
            break
    fields: dict[str, Any] = {
        "request_id": scope.get(keys.REQUEST_ID, ""),
        "client_ip": scope.get(keys.CLIENT_IP) or (scope["client"][0] if scope.get("client") else ""),
        "method": scope.get("method", "GET"),  # a WebSocket handshake is a GET
        "path": (scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
        "query": bool(scope["query_string"]),
        "route": scope.get(keys.ROUTE),
        "upstream": scope.get(keys.UPSTREAM),
        "status": status,
        "bytes_in": counts["in"],
        "bytes_out": counts["out"],
        "duration_ms": _milliseconds(seconds),
        "upstream_ms": _milliseconds(upstream_seconds) if upstream_seconds is not None else None,
        "user_agent": user_agent.decode("latin-1"),
        "reason": scope.get(keys.REASON),
        "cache": scope.get(keys.CACHE),
    }
    handler = sole_access_handler(logger)
    if handler is not None:
        handler.put_fields(fields)
    else:
        logger.handle(AccessRecord(fields))


def _milliseconds(seconds: float) -> float:
    """Milliseconds to three decimals (halves up), at a third of the cost of round(seconds * 1000, 3), which
    goes through a decimal conversion."""
    return int(seconds * 1_000_000 + 0.5) / 1000


class AccessRecord(logging.LogRecord):
    """An access-log record at a fifth of a LogRecord's cost: what is the same for every record of this process
    and thread (path and module names, thread and process names) is worked out once, and no caller lookup.
    All attributes are the instance's own, as handlers that copy or pickle `__dict__` expect."""

    _constant: ClassVar[dict[str, Any]] = {}
    _made_by: ClassVar[tuple[int, int]] = (0, 0)  # (process id, thread id)

    def __init__(self, fields: dict[str, Any]) -> None:
        made_by = (os.getpid(), threading.get_ident())
        if made_by != AccessRecord._made_by:
            AccessRecord._constant = vars(logging.LogRecord(logger.name, logging.INFO, __file__, 0, None, (), None))
            AccessRecord._made_by = made_by
        constant = AccessRecord._constant
        self.__dict__.update(constant)
        now = time.time()
        self.msg = fields
        self.created = now
        self.msecs = int((now - int(now)) * 1000) + 0.0
        self.relativeCreated = constant["relativeCreated"] + (now - constant["created"]) * 1000
