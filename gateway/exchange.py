"""The Exchange: one object per request, what every stage, the endpoint and user middleware know about it.

It lives under one scope key, `scope["gateway.exchange"]` (read it with `exchange_of(scope)`); the gateway keeps no
other facts in the scope. What the edge server offers (splicing, the client-gone notice, leaving out its own Date)
is advertised by the server under `scope["extensions"]["gateway.edge"]` and kept here as `edge`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Scope

from gateway.edge.offer import EDGE_EXTENSION, EMPTY_QUERY_EXTENSION, EdgeOffer
from gateway.proxy.headers import Header

EXCHANGE = "gateway.exchange"


@dataclass(slots=True, eq=False)
class Exchange:
    """One request's facts, settled once and read everywhere. Public for user middleware: the fields below keep
    their names and meanings.

    - `request_id`: the X-Request-ID settled for this exchange (a sane incoming one, else a random one)
    - `client_ip`: the client's address, resolved across trusted proxies (the peer's until then)
    - `target`: the request target's path as sent (raw bytes; `path` encoded under servers that give no raw_path)
    - `route`: the matched route's prefix, once routed; `upstream`: the URL of the instance chosen for it
    - `reason`: why the exchange did not go as asked (`ip_filter`, `rate_limit`, `body_limit`, `client_closed`...):
      set it when your middleware refuses a request, and the access log says why
    - `cache`: what the route's cache did (`hit`, `stale`, `revalidated`, `stale_if_error`, `miss`)
    - `status`, `bytes_in`, `bytes_out`, `complete`: what was sent to the client so far, and whether it went whole
    - `started`, `upstream_headers_at`: `time.perf_counter()` at the start and when the upstream's head arrived
    """

    request_id: str = ""
    client_ip: str = ""
    target: bytes = b""
    route: str | None = None
    upstream: str | None = None
    reason: str | None = None
    cache: str | None = None
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    complete: bool = False
    started: float = 0.0
    upstream_headers_at: float | None = None
    # The upstream's Date (the client gets the gateway's): the cache dates what it stores by it.
    upstream_date: bytes | None = None
    # The status the edge answered with itself (a request body that came too slowly), over the app's.
    edge_status: int | None = None
    edge: EdgeOffer | None = None
    # Headers stages decided on at the request for the response (the rate limits' state), added at its start.
    response_headers: list[Header] | None = None
    # The route's response-head hooks, run before the global ones (set when the route is entered).
    route_head_hooks: tuple[Callable[[Exchange, Scope, list[Header]], None], ...] = ()
    # Called once if the client's connection is lost while set (the relay sets it while it has nothing to read).
    on_client_gone: Callable[[], None] | None = None

    @classmethod
    def begin(cls, scope: Scope) -> Exchange:
        """A new exchange for `scope`, attached to the edge where the server offers it."""
        client = scope.get("client")
        edge = (scope.get("extensions") or {}).get(EDGE_EXTENSION)
        exchange = cls(
            client_ip=client[0] if client else "",
            target=target_of(scope),
            started=time.perf_counter(),
            edge=edge,
        )
        if edge is not None:
            edge.attach(exchange)
        return exchange

    def detached(self) -> Exchange:
        """An exchange for work done on this one's behalf without its client (a background revalidation): the
        same request id, client and route, no edge."""
        return Exchange(
            request_id=self.request_id,
            client_ip=self.client_ip,
            target=self.target,
            route=self.route,
            cache=self.cache,
            started=time.perf_counter(),
        )

    # The edge's notices (gateway.edge.offer.EdgeListener)

    def client_gone(self) -> None:
        callback = self.on_client_gone
        if callback is not None:
            self.on_client_gone = None
            callback()

    def edge_ended(self, reason: str, status: int | None = None) -> None:
        """The edge ended the exchange itself (a deadline, a slow reader, shutdown); the first reason stays."""
        if self.reason is None:
            self.reason = reason
        if status is not None:
            self.edge_status = status


def exchange_of(scope: Scope) -> Exchange:
    """The scope's exchange; one is begun (and kept) for a scope that reaches a gateway part without one, as when
    a stage or endpoint is used on its own."""
    exchange: Exchange | None = scope.get(EXCHANGE)
    if exchange is None:
        exchange = scope[EXCHANGE] = Exchange.begin(scope)
    return exchange


def request_id_of(scope: Scope) -> str:
    """The request id settled for this exchange ("" before the request-id stage ran, or outside the gateway)."""
    exchange: Exchange | None = scope.get(EXCHANGE)
    return exchange.request_id if exchange is not None else ""


def query_of(scope: Scope) -> bytes | None:
    """The query as sent: None when the target had none, b"" for a bare "?" (which the edge marks; other servers
    give b"" for both, and so the "?" is lost there)."""
    query: bytes = scope["query_string"]
    if query or EMPTY_QUERY_EXTENSION in (scope.get("extensions") or ()):
        return query
    return None


def target_of(scope: Scope) -> bytes:
    """The request target's path as sent: `raw_path`, or `path` encoded under servers that give none."""
    raw_path: bytes | None = scope.get("raw_path")
    return raw_path or scope["path"].encode()
