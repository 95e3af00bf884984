"""RelayTransport: the httpx transport the gateway ships, lean HTTP/1.1 over asyncio and httptools.

It replaces httpx's default transport (httpcore), whose pool rescans every connection for every queued
request and can leak connections when a task is cancelled mid-exchange. Trust: the request comes from the
gateway's relay or a user of the shared client; its headers are checked for CR, LF and NUL before writing.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from operator import itemgetter
from typing import cast

import httpx

from gateway.client.prebuilt import PairHeaders, prebuilt_response
from gateway.client.transport.connection import SplicedBody, UpstreamConnection
from gateway.client.transport.pool import OriginPool

# Response extension holding the entire body when it arrived together with the head (most small
# responses): the relay can then answer in one message instead of streaming.
COMPLETE_BODY = "gateway.complete_body"
# Request extension: the SSLContext for this request's upstream, when it is not the transport's own.
TLS_CONTEXT = "gateway.tls_context"
# Request extension, true when the caller will offer a long Content-Length body to splice(2) (ResponseBody's
# splice_source): the transport then leaves it in the socket instead of reading on past the head.
HOLD_FOR_SPLICE = "gateway.hold_for_splice"
# Request extension: a callable given each 102 or 103 interim response (status, raw header pairs) as it arrives,
# before the final one; without it they are dropped.
INTERIM = "gateway.interim"

# Safe to send twice (RFC 9110 9.2.2): retried once when a reused connection turns out to be dead.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class RelayTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to upstreams, one OriginPool per (scheme, host, port, TLS context); pools are per worker process.

    A request may carry its own SSLContext in `extensions[TLS_CONTEXT]` (a route with its own upstream TLS).
    """

    def __init__(self, *, verify: bool | ssl.SSLContext = True, limits: httpx.Limits | None = None) -> None:
        """`verify`: True (system CAs via certifi), an SSLContext, or False (no checks)."""
        limits = limits or httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)
        self._max_connections = limits.max_connections or 1000
        self._max_idle = limits.max_keepalive_connections or 0
        self._idle_expiry = limits.keepalive_expiry or 0.0
        self._verify = verify
        self._ssl_context: ssl.SSLContext | None = None
        self._pools: dict[tuple[bytes, bytes, int | None, ssl.SSLContext | None], OriginPool] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        tls = request.extensions.get(TLS_CONTEXT)
        pool = self._pools.get((url.raw_scheme, url.raw_host, url.port, tls)) or self._new_pool(url, tls)
        timeouts = request.extensions.get("timeout", {})
        head = _request_head(request)
        body = request.stream
        replayable = isinstance(body, httpx.ByteStream)
        may_retry = replayable and request.method in IDEMPOTENT
        while True:
            conn = await pool.acquire(timeouts.get("pool"), timeouts.get("connect"))
            try:
                conn.start_exchange(
                    request.method == "HEAD", HOLD_FOR_SPLICE in request.extensions, request.extensions.get(INTERIM)
                )
                if replayable:
                    conn.write(head + b"".join(cast(httpx.ByteStream, body)))
                else:
                    await _stream_body(conn, head, body, request, timeouts.get("write"))
                await conn.read_head(timeouts.get("read"))
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
                pool.discard(conn)
                # A reused connection that died before answering: the upstream closed it while idle.
                if may_retry and conn.reused and not conn.received_any:
                    may_retry = False
                    continue
                raise
            except BaseException:
                pool.discard(conn)
                raise
            if conn.complete:
                content = conn.take_body()
                ResponseBody(pool, conn, None).finish()
                return prebuilt_response(
                    conn.status,
                    PairHeaders(conn.headers),
                    httpx.ByteStream(content),
                    {"http_version": b"HTTP/1.1", COMPLETE_BODY: content},
                )
            return prebuilt_response(
                conn.status,
                PairHeaders(conn.headers),
                ResponseBody(pool, conn, timeouts.get("read")),
                {"http_version": b"HTTP/1.1"},
            )

    def _new_pool(self, url: httpx.URL, tls: ssl.SSLContext | None) -> OriginPool:
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported upstream scheme {url.scheme!r}")
        ssl_context = None
        if url.scheme == "https" and tls is not None:
            ssl_context = tls
        elif url.scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = (
                    self._verify
                    if isinstance(self._verify, ssl.SSLContext)
                    else httpx.create_ssl_context(verify=self._verify)
                )
            ssl_context = self._ssl_context
        pool = OriginPool(
            url.host,
            url.port or (443 if url.scheme == "https" else 80),
            ssl_context,
            max_connections=self._max_connections,
            max_idle=self._max_idle,
            idle_expiry=self._idle_expiry,
        )
        self._pools[(url.raw_scheme, url.raw_host, url.port, tls)] = pool
        return pool

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


class ResponseBody(httpx.AsyncByteStream):
    """The response body as it arrives; the connection goes back to the pool at the end, or is closed
    when the body is abandoned or broken."""

    def __init__(self, pool: OriginPool, conn: UpstreamConnection, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn = conn
        self._read_timeout = read_timeout
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._conn.read_chunk(self._read_timeout):
                yield chunk
        finally:
            self.finish()

    async def aclose(self) -> None:
        self.finish()

    def splice_source(self) -> SplicedBody | None:
        """The rest of the body for splice(2), when it can go that way (UpstreamConnection.splice_source)."""
        return self._conn.splice_source(self._read_timeout)

    def finish(self) -> None:
        """Give the connection back (or close it); idempotent."""
        if self._finished:
            return
        self._finished = True
        if self._conn.complete and self._conn.keep_alive:
            self._pool.release(self._conn)
        else:
            self._pool.discard(self._conn)


def _request_head(request: httpx.Request) -> bytes:
    raw = request.headers.raw
    # One join per field and one for the head, all in C (a Python loop over the fields cost 4x as many bytecodes).
    fields = b"\r\n".join(map(b": ".join, raw)) + b"\r\n" if raw else b""
    head = b"%s %s HTTP/1.1\r\n%s\r\n" % (request.method.encode(), request.url.raw_path, fields)
    # One line per header and no stray CR, LF or NUL: nothing can split the message (request smuggling).
    lines = len(raw) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\x00" in head:
        raise httpx.LocalProtocolError("a request header contains CR, LF or NUL", request=request)
    return head


async def _stream_body(
    conn: UpstreamConnection,
    head: bytes,
    body: httpx.SyncByteStream | httpx.AsyncByteStream,
    request: httpx.Request,
    write_timeout: float | None,
) -> None:
    """Write the head and then the body as it comes (chunked unless a Content-Length was given). The head leaves
    with the first piece of body, and each chunk with its framing, in one system call (writev) each."""
    assert isinstance(body, httpx.AsyncByteStream)
    # By the raw names, in C: a lookup by key would build httpx's header index for this one question.
    chunked = b"content-length" not in map(bytes.lower, map(itemgetter(0), request.headers.raw))
    unsent: tuple[bytes, ...] = (head,)
    try:
        async for part in body:
            if not part:
                continue
            conn.writelines((*unsent, b"%x\r\n" % len(part), part, b"\r\n") if chunked else (*unsent, part))
            unsent = ()
            await conn.drain(write_timeout)
        if chunked:
            unsent += (b"0\r\n\r\n",)
        if unsent:
            conn.writelines(unsent)
    except httpx.WriteError:
        if not conn.head_done:
            raise  # an upstream that answered early (a 413, say) keeps its answer; otherwise it failed
