"""WebSocket relay: a client's WebSocket on a proxied route, joined to one on an upstream instance.

The upstream side uses the `websockets` library. Messages flow both ways as they come, each side's send
waiting for the other to take them (back-pressure); close codes and reasons pass through; an upstream that
refuses the handshake is answered as an HTTP response where the server allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gateway.errors import refuse
from gateway.exchange import exchange_of, request_id_of
from gateway.proxy.headers import FORWARDING, HOP_BY_HOP, connection_named
from gateway.routing.paths import upstream_target, url_safe
from gateway.upstream.pool import Upstream, UpstreamPool
from settings import RouteSettings

logger = logging.getLogger("gateway.websocket")

# Handshake fields the client library writes itself; everything else end-to-end goes upstream.
_HANDSHAKE = frozenset(
    {b"host", b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
)
# Close codes that may not be sent in a close frame (RFC 6455 7.4.1), and what is sent instead.
_UNSENDABLE = {1005: 1000, 1006: 1011, 1015: 1011}


class WebSocketRelay:
    """Relays WebSocket sessions of one route. Trusts the route settings and the resolved client IP."""

    def __init__(self, route: RouteSettings, pool: UpstreamPool, tls: ssl.SSLContext | None = None) -> None:
        self._pool = pool
        self._tls = tls
        self._prefix = route.prefix.encode()
        self._strip = route.strip_prefix and route.prefix != "/"
        self._open_timeout = route.timeouts.connect
        self._settings = route.websocket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        upstream = self._pool.choose()
        if upstream is None:
            await refuse(scope, send, 503, "No upstream instance is available right now.", request_id_of(scope))
            return
        exchange_of(scope).upstream = upstream.url
        try:
            connection = await connect(
                self._upstream_uri(scope, upstream),
                subprotocols=scope.get("subprotocols") or None,
                additional_headers=_upstream_headers(scope),
                user_agent_header=None,
                compression=None,  # frames are relayed as they are, not re-compressed
                proxy=None,  # like the HTTP client: proxy environment variables are ignored
                open_timeout=self._open_timeout,
                max_size=self._settings.max_message_bytes,
                ping_interval=self._settings.ping_interval,
                ssl=self._tls if upstream.scheme == "https" else None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            await refuse(scope, send, status, "The upstream refused the WebSocket handshake.", request_id_of(scope))
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            logger.error("WebSocket to %s failed: %s", upstream.url, type(exc).__name__)
            self._pool.record_failure(upstream)
            await refuse(scope, send, 502, "The upstream could not be reached.", request_id_of(scope))
            return
        await send({"type": "websocket.accept", "subprotocol": connection.subprotocol})
        upstream.in_flight += 1
        try:
            await _relay(
                connection, receive, send, upstream, self._settings.idle_timeout, self._settings.max_message_bytes
            )
        finally:
            upstream.in_flight -= 1

    def _upstream_uri(self, scope: Scope, upstream: Upstream) -> str:
        target = upstream_target(scope, upstream.base_path, self._prefix if self._strip else None)
        scheme = "wss" if upstream.scheme == "https" else "ws"
        return f"{scheme}://{upstream.host_header.decode('idna')}{url_safe(target).decode('ascii')}"


def _upstream_headers(scope: Scope) -> list[tuple[str, str]]:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    dropped = HOP_BY_HOP | _HANDSHAKE | FORWARDING | connection_named(headers)
    kept = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers if name.lower() not in dropped]
    peer = scope["client"][0] if scope.get("client") else ""
    kept += [("x-forwarded-for", peer), ("x-forwarded-proto", "wss" if scope.get("scheme") == "wss" else "ws")]
    request_id = exchange_of(scope).request_id
    if request_id:
        kept.append(("x-request-id", request_id))
    return kept


async def _relay(
    connection: ClientConnection,
    receive: Receive,
    send: Send,
    upstream: Upstream,
    idle_timeout: float | None,
    max_message: int,
) -> None:
    """Both directions at once; whichever side closes first closes the other with its code. A session with no
    message either way for `idle_timeout` seconds is closed with 1001 (going away) on both sides."""
    activity = Activity()
    to_upstream = asyncio.ensure_future(_client_to_upstream(connection, receive, send, activity, max_message))
    to_client = asyncio.ensure_future(_upstream_to_client(connection, send, upstream, activity))
    idle = asyncio.ensure_future(activity.expire(idle_timeout))
    try:
        done, _ = await asyncio.wait({to_upstream, to_client, idle}, return_when=asyncio.FIRST_COMPLETED)
        if idle in done:
            await send({"type": "websocket.close", "code": 1001, "reason": "idle"})
            await connection.close(1001, "idle")
    finally:
        idle.cancel()
        for task in (to_upstream, to_client):
            task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        with contextlib.suppress(Exception):
            await _close_discarding(connection)


async def _close_discarding(connection: ClientConnection) -> None:
    """Close the upstream session (a no-op if it is closed), dropping the messages it still sends meanwhile: a
    client that left or was dropped leaves them undeliverable, and its close frame may be queued behind them,
    unread while the message queue is full (close() alone would then wait `close_timeout`, 10 s)."""
    closing = asyncio.ensure_future(connection.close())
    with contextlib.suppress(ConnectionClosed):
        async for _ in connection:
            pass
    await closing


class Activity:
    """When a message last went either way."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()

    def touch(self) -> None:
        self.last = self._loop.time()

    async def expire(self, timeout: float | None) -> None:
        """Returns once `timeout` seconds passed without a message (never, for None)."""
        if timeout is None:
            await asyncio.Future()
            return
        # Sleeps until the deadline measured from the last message, then re-checks: one timer per
        # idle period instead of one per message.
        while (remaining := self.last + timeout - self._loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)


async def _client_to_upstream(
    connection: ClientConnection, receive: Receive, send: Send, activity: Activity, max_message: int
) -> None:
    while True:
        message = await receive()
        activity.touch()
        if message["type"] == "websocket.receive":
            data: Any = message.get("bytes") if message.get("bytes") is not None else message.get("text", "")
            if len(data) > max_message:
                await send({"type": "websocket.close", "code": 1009, "reason": "message too big"})
                await connection.close(1001, "client sent a message over the limit")
                return
            try:
                await connection.send(data)
            except ConnectionClosed:
                return
        elif message["type"] == "websocket.disconnect":
            code: int = message.get("code") or 1000
            await connection.close(_UNSENDABLE.get(code, code), message.get("reason") or "")
            return


async def _upstream_to_client(connection: ClientConnection, send: Send, upstream: Upstream, activity: Activity) -> None:
    code, reason = 1000, ""
    try:
        async for data in connection:
            activity.touch()
            key = "text" if isinstance(data, str) else "bytes"
            await send({"type": "websocket.send", key: data})
    except ConnectionClosed as exc:
        # The frame the upstream sent, or the one sent to it (1009 when its message was over the limit).
        frame = exc.rcvd or exc.sent
        code, reason = (frame.code, frame.reason) if frame is not None else (1006, "")
    else:
        if connection.close_code is not None:
            code, reason = connection.close_code, connection.close_reason or ""
    if code == 1006:
        logger.warning("upstream %s dropped a WebSocket session", upstream.url)
        reason = "upstream went away"
    await send({"type": "websocket.close", "code": _UNSENDABLE.get(code, code), "reason": reason})
