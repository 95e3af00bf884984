"""The terminal endpoint of a proxied route: pick an upstream, relay the request, stream the answer back."""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import AsyncIterator
from typing import cast

import httpx
from starlette.types import Receive, Scope, Send

from gateway.client.prebuilt import PairHeaders, prebuilt_request
from gateway.client.shared import TimedStream, close_response
from gateway.client.transport import COMPLETE_BODY, HOLD_FOR_SPLICE, INTERIM, TLS_CONTEXT
from gateway.edge.splice import SPLICE_MESSAGE
from gateway.errors import BadRequest, BodyTooLarge, ClientGone, NoUpstream, failure_for, send_problem
from gateway.exchange import Exchange, exchange_of
from gateway.proxy.headers import (
    BODYLESS_STATUSES,
    HOP_BY_HOP,
    ForwardedFor,
    client_response_headers,
    connection_named,
    upstream_request_headers,
)
from gateway.proxy.retries import NOT_SENT, RetryPolicy
from gateway.proxy.websocket_relay import WebSocketRelay
from gateway.routing.paths import upstream_target, url_safe
from gateway.stages.clientip_resolver import ClientIPResolver
from gateway.upstream.pool import Upstream, UpstreamPool
from settings import RouteSettings

logger = logging.getLogger("gateway.proxy")

# Failures that count against the upstream for passive health: it refused, reset or broke the exchange.
UPSTREAM_FAULTS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)

# Seconds an exchange runs before the gateway starts listening for the client's disconnect.
WATCH_DELAY = 0.05


class Relay:
    """Per-request relay state: whether the response started, and whether the client is still there."""

    __slots__ = (
        "_watch_timer",
        "_watcher",
        "_watching",
        "body_started",
        "client_gone",
        "exchange",
        "head_deadline",
        "receive",
        "response_started",
        "send",
        "task",
    )

    def __init__(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        self.exchange = exchange
        self.receive = receive
        self.send = send
        self.task = asyncio.current_task()
        self.response_started = False
        self.body_started = False  # a byte of the client's body was taken: the request cannot be replayed
        self.client_gone = False
        self.head_deadline: asyncio.Timeout | None = None  # lifted once the response head is relayed
        self._watching = False
        self._watch_timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None

    def watch_for_disconnect(self) -> None:
        """Cancel the relay when the client goes away, once the request body is consumed. The edge protocol
        says so the moment the connection is lost; under another server, a watcher task owns `receive`, started
        only for exchanges still running after WATCH_DELAY (a task per request would cost more than most
        exchanges take). Idempotent (retries call it)."""
        if self._watching:
            return
        self._watching = True
        if self.exchange.edge is not None:
            self.exchange.on_client_gone = self._client_went_away
            return
        self._watch_timer = asyncio.get_running_loop().call_later(WATCH_DELAY, self._start_watching)

    def _client_went_away(self) -> None:
        self.client_gone = True
        if self.task is not None:
            self.task.cancel()

    def _start_watching(self) -> None:
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self._client_went_away()

    def interim(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """An upstream's 102 or 103, on to the client through the edge (never to the cache: it is no response)."""
        edge = self.exchange.edge
        if edge is not None and edge.interim is not None and not self.response_started:
            dropped = HOP_BY_HOP | connection_named(headers)
            edge.interim(status, [(name, value) for name, value in headers if name.lower() not in dropped])

    def stop_watching(self) -> None:
        self.exchange.on_client_gone = None
        if self._watch_timer is not None:
            self._watch_timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


class ProxyEndpoint:
    """Relays one route's requests to its upstreams through the shared client.

    Trusts the validated route settings and the exchange's request id; believes forwarding headers only
    through `resolver`. Picks instances from `pool`, retries as `retries` allows (WebSocket upgrades go to a
    WebSocketRelay, with `tls` for wss:// upstreams), and answers
    413/502/503/504 itself; after the response started, a failure aborts the connection so the client can
    tell the body is incomplete.
    """

    def __init__(
        self,
        route: RouteSettings,
        client: httpx.AsyncClient,
        resolver: ClientIPResolver,
        pool: UpstreamPool,
        retries: RetryPolicy,
        tls: ssl.SSLContext | None = None,
        *,
        splice: bool = False,
    ) -> None:
        """`splice`: large bodies may be spliced (gateway.edge.splice) where the server offers it: nothing on the route
        between this endpoint and the server needs to see them."""
        self._client = client
        self._splice = splice
        self._resolver = resolver
        self._pool = pool
        self._retries = retries
        self._prefix = route.prefix.encode()
        self._strip = route.strip_prefix and route.prefix != "/"
        self._preserve_host = route.preserve_host
        self._max_body = route.max_body_bytes
        self._head_deadline = route.timeouts.response_header
        self._timeouts = {
            "connect": route.timeouts.connect,
            "read": route.timeouts.read,
            "write": route.timeouts.write,
            "pool": route.timeouts.pool,
        }
        self._hash_key = route.balancing.hash_key if route.balancing.policy == "hash" else None
        self._websocket = WebSocketRelay(route, pool, tls)
        # The shared client's transport has the [client] TLS; a route with its own hands its context along.
        self._tls_extension = {TLS_CONTEXT: tls} if route.upstream_tls is not None else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        facts = exchange_of(scope)
        relay = Relay(facts, receive, send)
        try:
            try:
                if self._head_deadline is None:
                    await self._forward(scope, relay)
                else:
                    async with asyncio.timeout(self._head_deadline) as deadline:
                        relay.head_deadline = deadline
                        await self._forward(scope, relay)
            finally:
                relay.stop_watching()
        except asyncio.CancelledError:
            if not relay.client_gone:
                raise
            if relay.task is not None:
                relay.task.uncancel()
            facts.reason = facts.reason or "client_closed"
            logger.info("client went away; upstream exchange with %s cancelled", facts.upstream)
        except ClientGone:
            facts.reason = facts.reason or "client_closed"  # or the server's body deadline
            logger.info("client went away during its exchange with %s", facts.upstream)
        except Exception as exc:
            failure = failure_for(exc)
            if failure is None:
                raise
            facts.reason = failure.reason
            request_id = facts.request_id
            logger.log(
                failure.log_level,
                "%s %s via %s failed with %d: %s %s (%s) request_id=%s",
                scope["method"],
                scope["path"],
                facts.upstream,
                failure.status,
                exc.__class__.__name__,
                exc,  # the transport's own words ("TLS with the upstream failed: CERTIFICATE_VERIFY_FAILED")
                "response aborted" if relay.response_started else "error response sent",
                request_id,
            )
            if not relay.response_started:
                await send_problem(send, failure.status, failure.detail, request_id)

    async def _forward(self, scope: Scope, relay: Relay) -> None:
        declared_length, chunked = _body_framing(scope["headers"])
        if self._max_body is not None and declared_length > self._max_body:
            raise BodyTooLarge
        has_body = chunked or declared_length > 0
        method = scope["method"]
        key = self._request_key(scope) if self._hash_key else None
        self._retries.budget.record_request()
        tried: list[Upstream] = []
        upstream = self._pool.choose(key)
        for attempt in itertools.count(1):
            if upstream is None:
                raise NoUpstream
            tried.append(upstream)
            relay.exchange.upstream = upstream.url
            upstream.counts["requests"] += 1
            upstream.in_flight += 1
            try:
                request = self._upstream_request(scope, relay, upstream, declared_length, chunked)
                try:
                    if self._retries.per_try_timeout is None:  # no deadline: no coroutine of its own
                        response = await self._client.send(request, stream=True)
                    else:
                        response = await self._send_within(self._retries.per_try_timeout, request)
                except httpx.TransportError as exc:
                    if isinstance(exc, UPSTREAM_FAULTS):
                        self._pool.record_failure(upstream)
                    retryable = self._retries.after_error(exc, attempt, method, relay.body_started)
                    # A request that never left may go to the same instance again; one that did, only elsewhere.
                    upstream = (
                        self._retry_target(key, tried, same_allowed=isinstance(exc, NOT_SENT)) if retryable else None
                    )
                    if upstream is None:
                        raise
                    await self._retries.back_off(attempt)
                    continue
                self._pool.record_success(upstream, response.status_code)
                if self._retries.after_status(response.status_code, attempt, method, has_body):
                    retry_to = self._retry_target(key, tried, same_allowed=False)
                    if retry_to is not None:
                        await response.aclose()
                        upstream = retry_to
                        await self._retries.back_off(attempt)
                        continue
                await self._respond(scope, relay, response)
                return
            finally:
                tried[-1].in_flight -= 1

    def _may_splice(self, relay: Relay) -> bool:
        """Whether this exchange's long body may be spliced: the route allows it and the server offers it. The
        request asks the transport to hold such a body on exactly this condition, and _respond then splices it."""
        edge = relay.exchange.edge
        return self._splice and edge is not None and edge.splice

    def _retry_target(self, key: str | None, tried: list[Upstream], *, same_allowed: bool) -> Upstream | None:
        """The instance for a retry, if there is one and the retry budget allows it."""
        target = self._pool.choose(key, tried) or (self._pool.choose(key) if same_allowed else None)
        if target is None or not self._retries.budget.try_spend():
            return None
        tried[-1].counts["retries"] += 1
        return target

    async def _send_within(self, per_try: float, request: httpx.Request) -> httpx.Response:
        try:
            async with asyncio.timeout(per_try):
                return await self._client.send(request, stream=True)
        except TimeoutError:
            raise httpx.ReadTimeout("the upstream did not answer within the per-try timeout") from None

    def _request_key(self, scope: Scope) -> str | None:
        """The hash policy's key: client IP, a header, or a cookie (None when the request has none)."""
        spec = self._hash_key
        if spec == "client_ip":
            return exchange_of(scope).client_ip
        kind, _, name = (spec or "").partition(":")
        wanted = b"cookie" if kind == "cookie" else name.lower().encode()
        header: bytes
        value: bytes
        for header, value in scope["headers"]:
            if header != wanted:
                continue
            if kind == "header":
                return str(value.decode("latin-1"))
            for pair in value.decode("latin-1").split(";"):
                cookie, _, cookie_value = pair.strip().partition("=")
                if cookie == name:
                    return cookie_value
        return None

    async def _respond(self, scope: Scope, relay: Relay, response: httpx.Response) -> None:
        facts = relay.exchange
        facts.upstream_headers_at = time.perf_counter()
        if facts.cache is not None:  # the route cache dates what it stores by the upstream's clock
            facts.upstream_date = next((value for name, value in response.headers.raw if name.lower() == b"date"), None)
        try:
            status = response.status_code
            await relay.send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": client_response_headers(response.headers.raw, status),
                }
            )
            relay.response_started = True
            if relay.head_deadline is not None:
                relay.head_deadline.reschedule(None)  # the body is bounded by `read` between chunks
            complete_body = response.extensions.get(COMPLETE_BODY)
            if complete_body is not None:
                await relay.send({"type": "http.response.body", "body": complete_body, "more_body": False})
                return
            if status not in BODYLESS_STATUSES:
                if self._may_splice(relay) and await _spliced(relay, response.stream):
                    return
                # The raw stream, not aiter_raw(): same bytes and error mapping, and it also relays a body
                # that a mock transport has already read.
                body = cast(httpx.AsyncByteStream, response.stream)
                async for chunk in body:
                    await relay.send({"type": "http.response.body", "body": chunk, "more_body": True})
            await relay.send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await close_response(response)

    def _upstream_request(
        self, scope: Scope, relay: Relay, upstream: Upstream, declared_length: int, chunked: bool
    ) -> httpx.Request:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        target = upstream_target(scope, upstream.base_path, self._prefix if self._strip else None)
        peer = scope["client"][0] if scope.get("client") else ""
        forwarded = ForwardedFor(
            peer=peer,
            scheme=scope["scheme"],
            prefix=self._prefix if self._strip else b"",
            trusted=self._resolver.is_trusted(peer),
            request_id=relay.exchange.request_id.encode("latin-1"),
        )
        upstream_headers = upstream_request_headers(
            headers, forwarded, host=None if self._preserve_host else upstream.host_header
        )
        body: httpx.AsyncByteStream | httpx.ByteStream
        if chunked or declared_length:
            body = RequestBody(relay, self._max_body)
            if chunked:
                upstream_headers.append((b"transfer-encoding", b"chunked"))
        else:
            body = _NO_BODY
            relay.watch_for_disconnect()
        extensions: dict[str, object] = {"timeout": self._timeouts, **self._tls_extension}
        if self._may_splice(relay):
            extensions[HOLD_FOR_SPLICE] = True  # _respond offers a long body to splice(2)
        edge = relay.exchange.edge
        if edge is not None and edge.interim is not None:
            extensions[INTERIM] = relay.interim  # 103 Early Hints go to the client as they come
        # Headers and framing are complete, so httpx is handed the stream as is (no re-encoding).
        return prebuilt_request(
            scope["method"], upstream.url_for(url_safe(target)), PairHeaders(upstream_headers), body, extensions
        )


class RequestBody(httpx.AsyncByteStream):
    """The client's body on its way upstream, `max_body_bytes` enforced as it arrives (chunked too).

    An iterator of its own, not an async generator: asyncio enters every async generator in a WeakSet and
    arranges its finalisation, work an upload does not need.
    """

    def __init__(self, relay: Relay, max_body: int | None) -> None:
        self._relay = relay
        self._max_body = max_body
        self._received = 0
        self._more_body = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        relay = self._relay
        while self._more_body:
            message = await relay.receive()
            relay.body_started = True
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            self._more_body = message.get("more_body", False)
            self._received += len(chunk)
            if self._max_body is not None and self._received > self._max_body:
                raise BodyTooLarge
            if chunk:
                return chunk
        relay.watch_for_disconnect()
        raise StopAsyncIteration


_NO_BODY = httpx.ByteStream(b"")


async def _spliced(relay: Relay, body: object) -> bool:
    """Relay the rest of the body by splice(2) if the transport can hand it over; whether it went that way."""
    source = body.splice_source() if isinstance(body, TimedStream) else None
    if source is None:
        return False
    for piece in source.received:
        await relay.send({"type": "http.response.body", "body": piece, "more_body": True})
    await relay.send({"type": SPLICE_MESSAGE, "source": source, "count": source.count})
    return True


_FRAMING_LENGTHS = frozenset({len(b"content-length"), len(b"transfer-encoding")})


def _body_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int, bool]:
    """(declared Content-Length or 0, whether the body is chunked). The server has already rejected
    conflicting framing; a non-numeric length is refused here."""
    length = 0
    chunked = False
    for name, value in headers:
        if len(name) not in _FRAMING_LENGTHS:
            continue  # most fields, passed over without lowering their names
        lowered = name.lower()
        if lowered == b"content-length":
            if not value.isdigit():
                raise BadRequest
            length = int(value)
        elif lowered == b"transfer-encoding":
            chunked = True
    return length, chunked
