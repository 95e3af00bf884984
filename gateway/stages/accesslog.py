"""The access log: one record per exchange (or WebSocket session) on logger `gateway.access`, refusals included."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection
from typing import Any, ClassVar

from starlette.types import Scope

from gateway.exchange import Exchange
from gateway.ops.logs import sole_access_handler
from gateway.ops.metrics import GatewayMetrics
from gateway.stages.stage import Stage

logger = logging.getLogger("gateway.access")

# nginx's status for a client that closed the connection before the response was complete.
CLIENT_CLOSED = 499


class AccessLogStage(Stage):
    """Logs a dict of fields and/or records the exchange in the metrics once it is over (one measurement feeds
    both): timings, status and bytes both ways come from the Exchange, which the pipeline keeps.

    Authorization and cookie values are never read. Routes in `quiet_routes` (prefixes) are not logged.
    The record is built here and formatted by the log handler (gateway.ops.logs), in a background thread.
    """

    name = "access log and metrics"

    def __init__(
        self,
        *,
        quiet_routes: Collection[str] = (),
        log: bool = True,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._quiet_routes = frozenset(quiet_routes)
        self._log = log
        self._metrics = metrics

    def on_request(self, exchange: Exchange, scope: Scope) -> None:
        if self._metrics is not None:
            self._metrics.in_flight_now += 1

    def on_complete(self, exchange: Exchange, scope: Scope) -> None:
        ended = time.perf_counter()
        status = exchange.edge_status or exchange.status
        if not exchange.complete and exchange.reason == "client_closed":
            status = CLIENT_CLOSED
        upstream_headers = exchange.upstream_headers_at
        upstream_seconds = upstream_headers - exchange.started if upstream_headers else None
        if self._metrics is not None:
            self._metrics.in_flight_now -= 1
            self._metrics.observe(
                exchange.route,
                scope.get("method", "GET"),
                status,
                ended - exchange.started,
                upstream_seconds,
                exchange.bytes_in,
                exchange.bytes_out,
                exchange.reason,
                exchange.cache,
            )
        if self._log and exchange.route not in self._quiet_routes and logger.isEnabledFor(logging.INFO):
            _log(scope, exchange, status, ended - exchange.started, upstream_seconds)


def _log(scope: Scope, exchange: Exchange, status: int, seconds: float, upstream_seconds: float | None) -> None:
    user_agent = b""
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value
            break
    fields: dict[str, Any] = {
        "request_id": exchange.request_id,
        "client_ip": exchange.client_ip,
        "method": scope.get("method", "GET"),  # a WebSocket handshake is a GET
        "path": exchange.target.decode("latin-1"),
        "query": bool(scope["query_string"]),
        "route": exchange.route,
        "upstream": exchange.upstream,
        "status": status,
        "bytes_in": exchange.bytes_in,
        "bytes_out": exchange.bytes_out,
        "duration_ms": _milliseconds(seconds),
        "upstream_ms": _milliseconds(upstream_seconds) if upstream_seconds is not None else None,
        "user_agent": user_agent.decode("latin-1"),
        "reason": exchange.reason,
        "cache": exchange.cache,
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
