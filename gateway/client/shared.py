"""The one shared upstream client: no cookies, no redirects, no proxy variables, a pool sized for load."""

from __future__ import annotations

import datetime
import logging
import ssl
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx

from gateway.client.transport import RelayTransport, ResponseBody
from gateway.client.transport.connection import SplicedBody
from settings import ClientSettings, UpstreamTlsSettings

_httpx_logger = logging.getLogger("httpx")


def create_client(settings: ClientSettings, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The gateway's `httpx.AsyncClient`; `transport` replaces what sits under it (tests, faster transports).

    Timeouts are set per request from the route, so the client's own are only a fallback.
    """
    if transport is None:
        transport = RelayTransport(
            verify=upstream_tls(settings),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_keepalive_connections,
                keepalive_expiry=settings.keepalive_expiry,
            ),
        )
    return GatewayClient(transport=transport, follow_redirects=False, trust_env=False)


def upstream_tls(settings: UpstreamTlsSettings) -> ssl.SSLContext:
    """How upstream certificates are checked, for HTTP and WebSocket alike: the system's CAs (certifi), a
    configured CA bundle (`ca_file`), or not at all (`verify = false`); plus a client certificate if set."""
    if settings.verify and settings.ca_file is not None:
        context = ssl.create_default_context(cafile=str(settings.ca_file))
    else:
        context = httpx.create_ssl_context(verify=settings.verify)
    if settings.certfile is not None:
        context.load_cert_chain(settings.certfile, settings.keyfile)
    return context


class NoCookies(httpx.Cookies):
    """A cookie store that stores nothing: a shared jar would hand one user's cookies to the next.

    Also skips httpx's per-response cookie parsing, which costs tens of µs a request.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        pass


class GatewayClient(httpx.AsyncClient):
    """httpx.AsyncClient whose `cookies` never hold anything, and whose send() goes straight to the
    transport when httpx's auth and redirect machinery has nothing to do (tens of µs a request).

    That direct path also leaves no reference cycle behind: httpx binds each response's stream to the
    response, so every exchange left ~28 objects (request, URL, headers) for the cyclic garbage collector.
    With that gone and the start-up heap frozen (app.py), bench/pipeline.py went from 215 to 160 µs a request.
    """

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        plain = (
            stream
            and auth is httpx.USE_CLIENT_DEFAULT
            and self.auth is None
            and follow_redirects in (httpx.USE_CLIENT_DEFAULT, False)
            and not self.follow_redirects
            and not any(self.event_hooks.values())
            and not self.is_closed
            and "timeout" in request.extensions
            and not request.url.userinfo
        )
        if not plain:
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        # What httpx's _send_single_request does, minus cookies, with a stream that does not hold its response
        # (inline: a coroutine less per request).
        transport = self._transport_for_url(request.url)
        start = time.perf_counter()
        try:
            response = await transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request
            raise
        response.request = request
        response.stream = TimedStream(response.stream, response, start)
        if _httpx_logger.isEnabledFor(logging.INFO):
            _httpx_logger.info(
                'HTTP Request: %s %s "%s %d %s"',
                request.method,
                request.url,
                response.http_version,
                response.status_code,
                response.reason_phrase,
            )
        return response

    _no_cookies = NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        pass


async def close_response(response: httpx.Response) -> None:
    """`await response.aclose()`, minus the context manager httpx opens for it (~2 µs a request) only to name the
    request on a transport error raised while closing; this does that with a plain `except`."""
    if response.is_closed:
        return
    response.is_closed = True
    try:
        await cast(httpx.AsyncByteStream, response.stream).aclose()
    except httpx.RequestError as exc:
        if response._request is not None:
            exc.request = response._request
        raise


class TimedStream(httpx.AsyncByteStream):
    """A response's body stream that sets `response.elapsed` when closed, as httpx's does, but reaches the
    response through a weak reference so that the two do not form a cycle."""

    def __init__(self, stream: httpx.AsyncByteStream | httpx.SyncByteStream, response: httpx.Response, start: float):
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._response = weakref.ref(response)
        self._start = start

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # the transport's own iterator: no generator in between, per piece

    def splice_source(self) -> SplicedBody | None:
        """The rest of the body for splice(2) (gateway.edge.splice), when the transport's stream can hand it over."""
        return self._stream.splice_source() if isinstance(self._stream, ResponseBody) else None

    async def aclose(self) -> None:
        response = self._response()
        if response is not None:
            response.elapsed = datetime.timedelta(seconds=time.perf_counter() - self._start)
        await self._stream.aclose()
