"""Client IP: settles `scope["gateway.client_ip"]` once, for every later stage (filters, limits, logs)."""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import scope as keys
from gateway.stages.clientip_resolver import ClientIPResolver


class ClientIPMiddleware:
    """Resolves the client's address with the gateway's one resolver (trusted proxies only)."""

    def __init__(self, app: ASGIApp, *, resolver: ClientIPResolver) -> None:
        self.app = app
        self._resolver = resolver

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine: it only settles a scope key, then hands back the next app's awaitable (one coroutine
        # frame less per exchange).
        if scope["type"] in ("http", "websocket"):
            peer = scope["client"][0] if scope.get("client") else ""
            if self._resolver.is_trusted(peer):
                forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
                scope[keys.CLIENT_IP] = self._resolver.resolve(peer, forwarded)
            else:
                scope[keys.CLIENT_IP] = peer
        return self.app(scope, receive, send)
