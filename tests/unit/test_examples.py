"""The example middleware in examples/, configured by dotted path the way a user would."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from gateway import create_app
from settings import SettingsError, load_settings

pytestmark = pytest.mark.anyio

API = "http://api.internal"


def build(router: respx.MockRouter, **settings: Any) -> httpx.AsyncClient:
    app = create_app(load_settings(**settings), transport=httpx.MockTransport(router.async_handler))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw.test")


async def test_api_key_middleware_on_one_route() -> None:
    router = respx.MockRouter(assert_all_called=False)
    router.route().respond(200, text="ok")
    guarded = {
        "prefix": "/private",
        "upstreams": [API],
        "middleware": [{"factory": "examples.apikey:ApiKeyMiddleware", "options": {"keys": ["k-123", "k-456"]}}],
    }
    async with build(router, routes=[{"prefix": "/", "upstreams": [API]}, guarded]) as client:
        missing = await client.get("/private/x")
        wrong = await client.get("/private/x", headers={"X-API-Key": "k-999"})
        right = await client.get("/private/x", headers={"X-API-Key": "k-456"})
        public = await client.get("/public")
    assert (missing.status_code, wrong.status_code, right.status_code, public.status_code) == (401, 401, 200, 200)
    assert missing.json()["detail"] == "A valid API key is required."
    assert [call.request.url.path for call in router.calls] == ["/private/x", "/public"]
    assert "x-api-key" not in router.calls[0].request.headers  # the key stays at the gateway


def test_api_key_middleware_needs_keys() -> None:
    route = {
        "prefix": "/",
        "upstreams": [API],
        "middleware": [{"factory": "examples.apikey:ApiKeyMiddleware", "options": {"keys": []}}],
    }
    with pytest.raises(SettingsError) as caught:
        create_app(load_settings(routes=[route]))
    assert caught.value.problems == ["routes[0].middleware: keys must name at least one API key"]


def test_global_middleware_that_refuses_its_options_stops_start_up() -> None:
    broken = {"factory": "examples.apikey:ApiKeyMiddleware", "options": {"keys": []}}
    with pytest.raises(SettingsError) as caught:
        create_app(load_settings(routes=[{"prefix": "/", "upstreams": [API]}], middleware=[broken]))
    assert caught.value.problems == ["middleware: keys must name at least one API key"]


async def test_header_policy_sets_and_removes_and_keeps_streaming() -> None:
    router = respx.MockRouter(assert_all_called=False)
    router.route().respond(
        200,
        headers={"X-Powered-By": "php/5", "X-Content-Type-Options": "whatever", "Set-Cookie": "a=1"},
        content=b"x" * 100_000,
    )
    policy = {
        "factory": "examples.headers_policy:HeaderPolicyMiddleware",
        "options": {
            "set": {"X-Content-Type-Options": "nosniff", "Strict-Transport-Security": "max-age=63072000"},
            "remove": ["X-Powered-By"],
        },
    }
    async with build(router, routes=[{"prefix": "/", "upstreams": [API]}], middleware=[policy]) as client:
        response = await client.get("/")
    assert "x-powered-by" not in response.headers
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]
    assert response.headers["strict-transport-security"] == "max-age=63072000"
    assert response.headers["set-cookie"] == "a=1"
    assert response.content == b"x" * 100_000
