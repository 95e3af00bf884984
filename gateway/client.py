"""The one shared upstream client: no cookies, no redirects, no proxy variables, a pool sized for load."""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from gateway.transport import RelayTransport
from settings import ClientSettings


def create_client(settings: ClientSettings, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The gateway's `httpx.AsyncClient`; `transport` replaces what sits under it (tests, faster transports).

    Timeouts are set per request from the route, so the client's own are only a fallback.
    """
    if transport is None:
        transport = RelayTransport(
            verify=settings.verify,
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_keepalive_connections,
                keepalive_expiry=settings.keepalive_expiry,
            ),
        )
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        # A shared jar would hand one user's cookies to the next: this one refuses every domain.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
