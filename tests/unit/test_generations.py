"""Generations: a refused reload changes nothing in use, and what it made on the way is not left open."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway import create_app
from settings import GatewaySettings
from tests.conftest import settings_with

pytestmark = pytest.mark.anyio

ROUTE = {"prefix": "/", "upstreams": ["http://api.internal"]}


class CountingTransport(httpx.AsyncBaseTransport):
    """Under every client the gateway makes: answers 200 and counts the clients closed over it."""

    def __init__(self) -> None:
        self.closed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="ok")

    async def aclose(self) -> None:
        self.closed += 1


class RefusesItsOptions:
    def __init__(self, app: Any) -> None:
        raise ValueError("this middleware refuses to start")


async def test_a_client_made_for_a_refused_reload_is_closed_at_shutdown() -> None:
    transport = CountingTransport()
    # A new [client] (so a new shared client is made), then a middleware that refuses: the reload is refused.
    refused: GatewaySettings = settings_with(
        ROUTE,
        client={"max_connections": 7},
        middleware=[{"factory": "tests.unit.test_generations:RefusesItsOptions"}],
    )
    app = create_app(settings_with(ROUTE), transport=transport, settings_source=lambda: refused)
    async with app.router.lifespan_context(app):
        asgi = httpx.ASGITransport(app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=asgi, base_url="http://gw.test") as client:
            answer = await client.post("/_gateway/reload")
            still = await client.get("/x")
    assert answer.status_code == 400 and "this middleware refuses to start" in answer.text
    assert still.text == "ok"
    assert transport.closed == 2  # the client in use, and the one made for the refused generation
