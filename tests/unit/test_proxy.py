"""The relay against respx upstreams: in-process, through the same httpx.AsyncClient the gateway ships."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from gateway import create_app
from gateway.edge.offer import EDGE_EXTENSION, EdgeOffer
from gateway.exchange import EXCHANGE
from tests.conftest import settings_with

pytestmark = pytest.mark.anyio

API = "http://api.internal:8080"


def build(router: respx.MockRouter, *routes: dict[str, Any], **sections: Any) -> httpx.AsyncClient:
    routes = routes or ({"prefix": "/api", "upstreams": [API]},)
    app = create_app(settings_with(*routes, **sections), transport=httpx.MockTransport(router.async_handler))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False, client=("192.0.2.10", 5000)),
        base_url="http://gw.test",
    )


@pytest.fixture
def upstream() -> respx.MockRouter:
    return respx.MockRouter(assert_all_called=False)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
async def test_every_method_reaches_the_upstream(upstream: respx.MockRouter, method: str) -> None:
    route = upstream.route(method=method, url=f"{API}/api/items").respond(200)
    async with build(upstream) as client:
        response = await client.request(method, "/api/items")
    assert response.status_code == 200
    assert route.call_count == 1


async def test_prefix_and_subpaths_match_without_redirect(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").respond(200)
    async with build(upstream) as client:
        for path in ("/api", "/api/", "/api/x/y"):
            assert (await client.get(path)).status_code == 200
        missing = await client.get("/apix")
    assert [call.request.url.path for call in upstream.calls] == ["/api", "/api/", "/api/x/y"]
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    body = missing.json()
    assert body["status"] == 404 and body["title"] == "Not Found" and body["request_id"]


async def test_strip_prefix_and_upstream_base_path(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").respond(200)
    route = {"prefix": "/api", "upstreams": [API + "/v2/"], "strip_prefix": True}
    async with build(upstream, route) as client:
        await client.get("/api/users?id=7")
        await client.get("/api")
    sent = [call.request for call in upstream.calls]
    assert [request.url.raw_path for request in sent] == [b"/v2/users?id=7", b"/v2/"]
    assert sent[0].headers["x-forwarded-prefix"] == "/api"


async def test_path_and_query_go_upstream_byte_for_byte(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").respond(200)
    target = "/api/a%20b/c+d;v=1/%41%7e?x=1&x=2&q=a+b%2Bc&empty=&flag&u=%E2%9C%93"
    async with build(upstream) as client:
        await client.get(httpx.URL(target))
    assert upstream.calls.last.request.url.raw_path == target.encode()


async def test_longest_prefix_wins_and_weights_are_honoured(upstream: respx.MockRouter) -> None:
    upstream.route(host="one.internal").respond(200, text="one")
    upstream.route(host="two.internal").respond(200, text="two")
    upstream.route(host="admin.internal").respond(200, text="admin")
    routes = (
        {"prefix": "/api", "upstreams": ["http://one.internal", {"url": "http://two.internal", "weight": 2}]},
        {"prefix": "/api/admin", "upstreams": ["http://admin.internal"]},
    )
    async with build(upstream, *routes) as client:
        answers = [(await client.get("/api/x")).text for _ in range(6)]
        admin = (await client.get("/api/admin/users")).text
    assert sorted(answers) == ["one", "one", "two", "two", "two", "two"]
    assert answers[:3] != ["one", "one", "two"]  # smooth: the heavier instance's turns are spread out
    assert admin == "admin"


async def test_forwarding_headers_and_request_id(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").respond(200)
    async with build(upstream) as client:
        response = await client.get(
            "/api/x", headers={"X-Forwarded-For": "6.6.6.6", "X-Request-ID": "abc-123", "Host": "public.test"}
        )
    sent = upstream.calls.last.request
    assert sent.headers["x-forwarded-for"] == "192.0.2.10"
    assert sent.headers["x-forwarded-proto"] == "http"
    assert sent.headers["x-forwarded-host"] == "public.test"
    assert sent.headers["host"] == "api.internal:8080"
    assert sent.headers["x-request-id"] == "abc-123"
    assert response.headers["x-request-id"] == "abc-123"


async def test_trace_context_passes_through_untouched(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").respond(200)
    trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=a,b=c"}
    async with build(upstream) as client:
        await client.get("/api/x", headers=trace)
    sent = upstream.calls.last.request
    assert (sent.headers["traceparent"], sent.headers["tracestate"]) == (trace["traceparent"], trace["tracestate"])


async def test_trusted_proxy_forwarding_headers_are_kept(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").respond(200)
    proxy = {"trusted_proxies": ["192.0.2.0/24"]}
    async with build(upstream, proxy=proxy) as client:
        await client.get("/api/x", headers={"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"})
    sent = upstream.calls.last.request
    assert sent.headers["x-forwarded-for"] == "1.2.3.4, 192.0.2.10"
    assert sent.headers["x-forwarded-proto"] == "https"


async def test_preserve_host(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").respond(200)
    async with build(upstream, {"prefix": "/api", "upstreams": [API], "preserve_host": True}) as client:
        await client.get("/api/x", headers={"Host": "public.test"})
    assert upstream.calls.last.request.headers["host"] == "public.test"


async def test_an_unacceptable_request_id_is_replaced(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").respond(200)
    async with build(upstream) as client:
        response = await client.get("/api/x", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert upstream.calls.last.request.headers["x-request-id"] == response.headers["x-request-id"]


async def test_the_shared_client_keeps_no_cookies(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal", path="/api/login").respond(200, headers={"Set-Cookie": "session=alice"})
    upstream.route(host="api.internal", path="/api/me").respond(200)
    async with build(upstream) as client:
        login = await client.get("/api/login")
        client.cookies.clear()
        await client.get("/api/me")
    assert login.headers["set-cookie"] == "session=alice"
    assert "cookie" not in upstream.calls.last.request.headers


async def test_redirects_are_relayed_not_followed(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").respond(302, headers={"Location": "http://elsewhere.internal/x"})
    async with build(upstream) as client:
        response = await client.get("/api/old")
    assert response.status_code == 302
    assert response.headers["location"] == "http://elsewhere.internal/x"
    assert len(upstream.calls) == 1


async def test_compressed_bodies_are_relayed_raw(upstream: respx.MockRouter) -> None:
    compressed = gzip.compress(b"hello " * 100)
    upstream.route(host="api.internal").respond(200, content=compressed, headers={"Content-Encoding": "gzip"})
    async with build(upstream) as client:
        async with client.stream("GET", "/api/x", headers={"Accept-Encoding": "gzip"}) as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert upstream.calls.last.request.headers["accept-encoding"] == "gzip"
    assert response.headers["content-encoding"] == "gzip"
    assert raw == compressed


async def test_request_body_is_streamed_upstream(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").respond(201)

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(5):
            yield b"%d" % index * 1000

    async with build(upstream) as client:
        await client.post("/api/upload", content=chunks())
        await client.put("/api/upload", content=b"x" * 10)
    chunked, sized = (call.request for call in upstream.calls)
    assert chunked.content == b"".join(b"%d" % index * 1000 for index in range(5))
    assert chunked.headers["transfer-encoding"] == "chunked"
    assert sized.content == b"x" * 10
    assert sized.headers["content-length"] == "10"


@pytest.mark.parametrize("chunked", [False, True])
async def test_bodies_over_the_limit_get_413(upstream: respx.MockRouter, chunked: bool) -> None:
    route = upstream.route(host="api.internal").respond(200)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 600

    async with build(upstream, {"prefix": "/api", "upstreams": [API], "max_body_bytes": 1000}) as client:
        response = await client.post("/api/x", content=chunks() if chunked else b"x" * 1800)
        within = await client.post("/api/x", content=b"x" * 1000)
    assert response.status_code == 413
    assert response.json()["detail"] == "The request body is larger than this route accepts."
    assert within.status_code == 200
    assert route.call_count == 1  # only the request within the limit got through


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (httpx.ConnectError("connection refused to 10.1.2.3:8080"), 502),
        (httpx.RemoteProtocolError("bad framing"), 502),
        (httpx.ReadError("reset"), 502),
        (httpx.ConnectTimeout("slow connect"), 504),
        (httpx.ReadTimeout("slow read"), 504),
        (httpx.PoolTimeout("pool full"), 503),
    ],
)
async def test_upstream_failures_map_to_a_short_problem_body(
    upstream: respx.MockRouter, error: Exception, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.route(host="api.internal").mock(side_effect=error)
    with caplog.at_level(logging.INFO, logger="gateway"):
        async with build(upstream) as client:
            response = await client.get("/api/x", headers={"X-Request-ID": "req-1"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) == {"status", "title", "detail", "request_id"}
    assert body["status"] == status and body["request_id"] == "req-1"
    text = json.dumps(body)
    assert "10.1.2.3" not in text and "api.internal" not in text and type(error).__name__ not in text
    records = [record for record in caplog.records if record.name == "gateway.proxy"]
    assert len(records) == 1
    assert type(error).__name__ in records[0].getMessage() and "req-1" in records[0].getMessage()


async def test_a_bug_gives_a_500_problem_without_details(upstream: respx.MockRouter) -> None:
    upstream.route(host="api.internal").mock(side_effect=ZeroDivisionError("secret internals"))
    async with build(upstream) as client:
        response = await client.get("/api/x")
    assert response.status_code == 500
    assert response.json()["title"] == "Internal Server Error"
    assert "secret" not in response.text and "ZeroDivision" not in response.text


async def test_gateway_endpoints_are_never_proxied(upstream: respx.MockRouter) -> None:
    route = upstream.route().respond(200)
    async with build(upstream, {"prefix": "/", "upstreams": [API]}) as client:
        health = await client.get("/_gateway/health")
        unknown = await client.get("/_gateway/anything")
        spelled = await client.get(httpx.URL("/_gateway//health"))
    assert health.json() == {"status": "ok"}
    assert unknown.status_code == 404 and spelled.status_code == 404
    assert route.call_count == 0


async def test_a_refused_target_never_reaches_the_upstream(upstream: respx.MockRouter) -> None:
    route = upstream.route().respond(200)
    async with build(upstream, {"prefix": "/", "upstreams": [API]}) as client:
        response = await client.get(httpx.URL("/static/..%2f..%2fetc/passwd"))
    assert response.status_code == 400
    assert route.call_count == 0


@pytest.mark.parametrize("length", ["+2", "2_0", " 2"])
async def test_a_content_length_that_only_python_reads_as_a_number_gets_400(
    upstream: respx.MockRouter, length: str
) -> None:
    """Under a server that lets such a length through (the edge protocol refuses it itself), the relay refuses it
    rather than forward a framing that int() and the upstream may read differently."""
    route = upstream.route().respond(200)
    async with build(upstream) as client:
        response = await client.post("/api/x", content=b"12", headers={"Content-Length": length})
    assert response.status_code == 400
    assert route.call_count == 0


def _slow_upstream_app(bodies: list[bytes] | None = None) -> tuple[Any, asyncio.Event, asyncio.Event]:
    """An app whose upstream reads the request body (into `bodies`), then answers only after 30 s, with events
    for "asked" and "cancelled"."""
    asked, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        if bodies is not None:
            bodies.append(body)
        asked.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return httpx.Response(200)

    app = create_app(settings_with({"prefix": "/api", "upstreams": [API]}), transport=httpx.MockTransport(slow))
    return app, asked, cancelled


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gw.test")],
        "client": ("192.0.2.10", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def _ignore(message: Any) -> None:
    pass


async def test_the_edge_protocol_says_at_once_when_the_client_is_gone() -> None:
    """With the edge protocol (its offer in scope["extensions"]) the relay asks to be told once the body is read,
    and the upstream exchange is cancelled the moment the edge tells: no watcher task, no WATCH_DELAY."""
    app, asked, cancelled = _slow_upstream_app()
    watch: list[Any] = []
    scope = {**_scope("/api/slow"), "extensions": {EDGE_EXTENSION: EdgeOffer(watch.append, None, splice=False)}}
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # never a disconnect message: only the callback can tell
        raise AssertionError("unreachable")

    exchange = asyncio.create_task(app(scope, receive, _ignore))
    await asyncio.wait_for(asked.wait(), 5)
    [listener] = watch  # the exchange, attached to the connection
    assert callable(listener.on_client_gone)
    listener.client_gone()
    await asyncio.wait_for(exchange, 5)
    assert cancelled.is_set() and scope[EXCHANGE].reason == "client_closed"
    assert listener.on_client_gone is None  # the exchange is over: nothing left registered on the connection


async def test_after_an_upload_the_edge_protocol_can_still_cancel_the_exchange() -> None:
    """The relay asks to be told once the whole body has gone upstream, for a body in pieces too."""
    bodies: list[bytes] = []
    app, asked, cancelled = _slow_upstream_app(bodies)
    watch: list[Any] = []
    headers = [(b"host", b"gw.test"), (b"content-length", b"6")]
    offer = EdgeOffer(watch.append, None, splice=False)
    scope = {**_scope("/api/slow"), "method": "POST", "headers": headers, "extensions": {EDGE_EXTENSION: offer}}
    pieces = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"def", "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        if pieces:
            return pieces.pop(0)
        await asyncio.Event().wait()  # never a disconnect message: only the callback can tell
        raise AssertionError("unreachable")

    exchange = asyncio.create_task(app(scope, receive, _ignore))
    await asyncio.wait_for(asked.wait(), 5)
    assert bodies == [b"abcdef"]
    [listener] = watch
    assert callable(listener.on_client_gone)
    listener.client_gone()
    await asyncio.wait_for(exchange, 5)
    assert cancelled.is_set() and scope[EXCHANGE].reason == "client_closed"


async def test_under_another_server_a_disconnect_message_cancels_the_exchange() -> None:
    app, asked, cancelled = _slow_upstream_app()
    scope = _scope("/api/slow")
    messages = [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        if len(messages) == 1:
            await asyncio.sleep(0.1)
        return messages.pop(0)

    await asyncio.wait_for(app(scope, receive, _ignore), 5)
    assert asked.is_set() and cancelled.is_set() and scope[EXCHANGE].reason == "client_closed"
