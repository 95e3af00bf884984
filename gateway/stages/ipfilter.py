"""IP allow/deny lists, globally or per route: 403 for clients the lists refuse."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Scope

from gateway.exchange import Exchange
from gateway.stages.netset import Network, NetworkSet
from gateway.stages.stage import Refusal, Stage

REFUSED = Refusal(403, "Requests from your address are not allowed here.", "ip_filter")


class IPFilterStage(Stage):
    """Refuses requests by the resolved client IP (`exchange.client_ip`).

    Deny wins; an empty allow list allows everyone not denied. Refusals are 403 problem documents, with the
    reason `ip_filter` for the access log.
    """

    name = "IP filter"

    def __init__(self, allow: Iterable[Network] = (), deny: Iterable[Network] = ()) -> None:
        self._allow = NetworkSet(allow)
        self._deny = NetworkSet(deny)

    def allows(self, address: str) -> bool:
        if self._deny and self._deny.contains(address):
            return False
        return not self._allow or self._allow.contains(address)

    def on_request(self, exchange: Exchange, scope: Scope) -> Refusal | None:
        return None if self.allows(exchange.client_ip) else REFUSED
