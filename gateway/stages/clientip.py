"""Client IP: settles `exchange.client_ip` once, for every later stage (filters, limits, logs) and the relay."""

from __future__ import annotations

from starlette.types import Scope

from gateway.exchange import Exchange
from gateway.stages.clientip_resolver import ClientIPResolver
from gateway.stages.stage import Stage


class ClientIPStage(Stage):
    """Resolves the client's address with the gateway's one resolver (trusted proxies only); until then the
    exchange holds the peer's."""

    name = "client IP"

    def __init__(self, resolver: ClientIPResolver) -> None:
        self._resolver = resolver

    def on_request(self, exchange: Exchange, scope: Scope) -> None:
        peer = exchange.client_ip
        if self._resolver.is_trusted(peer):
            forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
            exchange.client_ip = self._resolver.resolve(peer, forwarded)
