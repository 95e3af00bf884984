"""Longest-prefix dispatch over the route table, with the gateway's own `/_gateway/` endpoints first."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import scope as keys
from gateway.errors import send_problem
from gateway.paths import BadTarget, routing_path

GATEWAY_PREFIX = b"/_gateway"


class RouteTable:
    """Prefix -> endpoint. A prefix matches itself and whatever lies below it on a segment boundary;
    the longest match wins. Lookup walks the path's ancestors: one dict probe per segment."""

    def __init__(self, endpoints: Mapping[str, ASGIApp]) -> None:
        self._endpoints = {prefix.encode(): (prefix, endpoint) for prefix, endpoint in endpoints.items()}

    def match(self, path: bytes) -> tuple[str, ASGIApp] | None:
        while True:
            found = self._endpoints.get(path)
            if found is not None:
                return found
            cut = path.rfind(b"/")
            if cut <= 0:
                return self._endpoints.get(b"/")
            path = path[:cut]


class GatewayRouter:
    """The innermost app: refuses targets that could escape a prefix (400), sends `/_gateway/...` to the
    gateway's own endpoints (never proxied), and every other request to its route (404 when none)."""

    def __init__(self, table: RouteTable, gateway_endpoints: ASGIApp) -> None:
        self._table = table
        self._gateway_endpoints = gateway_endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # WebSocket routes are not relayed yet: refuse the handshake.
            await send({"type": "websocket.close", "code": 1008})
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        request_id = scope.get(keys.REQUEST_ID, "")
        try:
            path = routing_path(raw_path)
        except BadTarget as exc:
            await send_problem(send, 400, f"The request target is refused: {exc}.", request_id)
            return
        if path == GATEWAY_PREFIX or path.startswith(GATEWAY_PREFIX + b"/"):
            await self._gateway_endpoints(scope, receive, send)
            return
        found = self._table.match(path)
        if found is None:
            await send_problem(send, 404, "No route matches this path.", request_id)
            return
        prefix, endpoint = found
        scope[keys.ROUTE] = prefix
        await endpoint(scope, receive, send)
