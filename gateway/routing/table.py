"""Longest-prefix dispatch over the route table, with the gateway's own `/_gateway/` endpoints first."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import refuse
from gateway.exchange import exchange_of, target_of
from gateway.routing.paths import BadTarget, routing_path
from settings import RouteSettings


class RouteTable:
    """Prefix -> endpoint. A prefix matches itself and whatever lies below it on a segment boundary;
    the longest match wins. Lookup walks the path's ancestors: one dict probe per segment.

    Matching ignores case (as Caddy's does): `/API/admin` must not slip past the filters of `/api/admin`
    to an upstream that reads paths case-insensitively. The path itself goes upstream as the client sent it.
    """

    def __init__(self, endpoints: Mapping[str, ASGIApp]) -> None:
        self._endpoints = {prefix.lower().encode(): (prefix, endpoint) for prefix, endpoint in endpoints.items()}

    def match(self, path: bytes) -> tuple[str, ASGIApp] | None:
        path = path.lower()
        while True:
            found = self._endpoints.get(path)
            if found is not None:
                return found
            cut = path.rfind(b"/")
            if cut <= 0:
                return self._endpoints.get(b"/")
            path = path[:cut]


class GatewayRouter:
    """Refuses targets that could escape a prefix (400), passes `/_gateway/...` (never proxied) and the
    lifespan on to `app` (Starlette's router with the gateway's own endpoints), and sends every other
    request to its route (404 when none)."""

    def __init__(self, app: ASGIApp, table: RouteTable) -> None:
        self.app = app
        self._table = table

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing back the one awaitable its branch leads to: no coroutine frame of its own
        # for the whole exchange (each frame in the chain is passed through on every wake-up).
        if scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)  # the lifespan
        exchange = exchange_of(scope)
        try:
            path = routing_path(target_of(scope))  # as user middleware before the router may have rewritten it
        except BadTarget as exc:
            return _refuse(scope, send, "bad_target", 400, f"The request target is refused: {exc}.")
        if in_gateway_namespace(path):
            if scope["type"] == "websocket":
                return _refuse(scope, send, "no_route", 404, "No WebSocket here.")
            return self.app(scope, receive, send)
        found = self._table.match(path)
        if found is None:
            return _refuse(scope, send, "no_route", 404, "No route matches this path.")
        prefix, endpoint = found
        exchange.route = prefix
        return endpoint(scope, receive, send)


def by_precedence(routes: Sequence[RouteSettings]) -> list[RouteSettings]:
    """Routes in the order in which they win: longest prefix first (for listings; matching needs no order)."""
    return sorted(routes, key=lambda route: len(route.prefix), reverse=True)


def in_gateway_namespace(path: bytes) -> bool:
    """`/_gateway` and below, however spelled (case, doubled slashes: as routes match), is never proxied."""
    head = path.lstrip(b"/")
    return head[:8].lower() == b"_gateway" and head[8:9] in (b"", b"/")


async def _refuse(scope: Scope, send: Send, reason: str, status: int, detail: str) -> None:
    exchange = exchange_of(scope)
    exchange.reason = reason
    await refuse(scope, send, status, detail, exchange.request_id)
