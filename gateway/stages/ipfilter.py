"""IP allow/deny lists, globally or per route: 403 for clients the lists refuse."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import scope as keys
from gateway.errors import refuse
from gateway.stages.netset import Network, NetworkSet


class IPFilterMiddleware:
    """Refuses requests by the resolved client IP (`scope["gateway.client_ip"]`, else the peer).

    Deny wins; an empty allow list allows everyone not denied. Refusals are 403 problem documents and
    are marked `scope["gateway.reason"] = "ip_filter"` for the access log.
    """

    def __init__(self, app: ASGIApp, *, allow: Iterable[Network] = (), deny: Iterable[Network] = ()) -> None:
        self.app = app
        self._allow = NetworkSet(allow)
        self._deny = NetworkSet(deny)

    def allows(self, address: str) -> bool:
        if self._deny and self._deny.contains(address):
            return False
        return not self._allow or self._allow.contains(address)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get(keys.CLIENT_IP) or (scope["client"][0] if scope.get("client") else "")
        if self.allows(client):
            await self.app(scope, receive, send)
            return
        scope[keys.REASON] = "ip_filter"
        await refuse(scope, send, 403, "Requests from your address are not allowed here.")
