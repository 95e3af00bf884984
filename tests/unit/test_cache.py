"""The route cache in-process: respx upstreams that count their calls, and a clock the test moves."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from starlette.types import Message, Receive, Scope, Send

from gateway import create_app
from gateway.cache import CacheMiddleware, MemoryCacheStore, middleware
from gateway.edge.offer import EMPTY_QUERY_EXTENSION
from settings import CacheSettings
from tests.conftest import settings_with

pytestmark = pytest.mark.anyio

API = "http://api.internal"
START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def date(self) -> str:
        return email.utils.formatdate(self.now, usegmt=True)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(middleware, "wall_clock", fake)
    yield fake


def gateway(router: respx.MockRouter, **cache: Any) -> httpx.AsyncClient:
    route = {"prefix": "/", "upstreams": [API], "cache": {"enabled": True, **cache}}
    app = create_app(settings_with(route), transport=httpx.MockTransport(router.async_handler))
    transport = httpx.ASGITransport(app, client=("127.0.0.1", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://gw.test")


def answer(clock: Clock, *, body: str = "v1", status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, text=body, headers={"date": clock.date(), **headers})


async def test_a_fresh_response_is_served_from_the_cache_with_its_age(clock: Clock) -> None:
    router = respx.MockRouter()
    upstream = router.get(f"{API}/page").mock(
        side_effect=lambda request: answer(clock, **{"cache-control": "max-age=60"})
    )
    async with gateway(router) as client:
        first = await client.get("/page")
        clock.now += 25
        second = await client.get("/page")
        head = await client.head("/page")
        clock.now += 40
        third = await client.get("/page")
        metrics = (await client.get("/_gateway/metrics")).text
    assert first.headers["cache-status"] == "gateway; fwd=uri-miss; stored"
    assert 'gateway_cache_total{outcome="hit",route="/"} 2.0' in metrics  # the GET and the HEAD
    assert 'gateway_cache_total{outcome="miss",route="/"} 2.0' in metrics
    assert (second.text, second.headers["age"], second.headers["cache-status"]) == ("v1", "25", "gateway; hit")
    assert head.status_code == 200 and head.content == b"" and head.headers["age"] == "25"
    assert third.headers["cache-status"].startswith("gateway; fwd=stale")
    assert upstream.call_count == 2


@pytest.mark.parametrize("set_cookie", ["store", "strip"])
async def test_a_stale_response_is_revalidated_and_a_304_refreshes_it(clock: Clock, set_cookie: str) -> None:
    router = respx.MockRouter()
    seen: list[str | None] = []

    def origin(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("if-none-match"))
        if request.headers.get("if-none-match") == '"v1"':
            headers = {"date": clock.date(), "cache-control": "max-age=60", "x-v": "2", "set-cookie": "seen=1"}
            return httpx.Response(304, headers=headers)
        return answer(clock, etag='"v1"', **{"cache-control": "max-age=10", "x-v": "1"})

    router.get(f"{API}/doc").mock(side_effect=origin)
    async with gateway(router, set_cookie=set_cookie) as client:
        await client.get("/doc")
        clock.now += 30
        revalidated = await client.get("/doc")
        clock.now += 30
        hit = await client.get("/doc")
    assert seen == [None, '"v1"']
    assert revalidated.status_code == 200 and revalidated.text == "v1"
    assert revalidated.headers["x-v"] == "2" and revalidated.headers["set-cookie"] == "seen=1"
    # RFC 9111 3.2: a 304 updates the stored fields, cookies included, unless the route strips them (then the
    # client whose request was revalidated still gets its cookie, and nobody else does).
    assert hit.headers.get("set-cookie") == ("seen=1" if set_cookie == "store" else None)
    assert revalidated.headers["cache-status"] == "gateway; fwd=stale; fwd-status=304"
    assert hit.headers["cache-status"] == "gateway; hit" and hit.headers["age"] == "30"


async def test_client_conditionals_get_304_from_the_cache(clock: Clock) -> None:
    router = respx.MockRouter()
    upstream = router.get(f"{API}/doc").mock(
        side_effect=lambda request: answer(clock, etag='"v1"', **{"cache-control": "max-age=60"})
    )
    async with gateway(router) as client:
        await client.get("/doc")
        matching = await client.get("/doc", headers={"if-none-match": '"v1"'})
        other = await client.get("/doc", headers={"if-none-match": '"v0"'})
    assert matching.status_code == 304 and matching.content == b""
    assert other.status_code == 200 and other.text == "v1"
    assert upstream.call_count == 1


async def test_vary_keeps_one_variant_per_value(clock: Clock) -> None:
    router = respx.MockRouter()

    def origin(request: httpx.Request) -> httpx.Response:
        language = request.headers.get("accept-language", "none")
        return answer(clock, body=language, vary="Accept-Language", **{"cache-control": "max-age=60"})

    upstream = router.get(f"{API}/greeting").mock(side_effect=origin)
    async with gateway(router) as client:
        texts = [
            (await client.get("/greeting", headers={"accept-language": language})).text
            for language in ("en", "fr", "en", "fr")
        ]
    assert texts == ["en", "fr", "en", "fr"]
    assert upstream.call_count == 2


async def test_unsafe_methods_invalidate_the_target_and_its_location(clock: Clock) -> None:
    router = respx.MockRouter()
    items = router.get(f"{API}/items").mock(
        side_effect=lambda request: answer(clock, **{"cache-control": "max-age=60"})
    )
    item = router.get(f"{API}/items/7").mock(
        side_effect=lambda request: answer(clock, **{"cache-control": "max-age=60"})
    )
    router.post(f"{API}/items").mock(
        side_effect=lambda request: httpx.Response(201, headers={"location": "http://gw.test/items/7"})
    )
    router.delete(f"{API}/items/7").mock(side_effect=lambda request: httpx.Response(500))
    async with gateway(router) as client:
        await client.get("/items")
        await client.get("/items/7")
        await client.delete("/items/7")  # an error answer invalidates nothing
        await client.get("/items/7")
        await client.post("/items", content=b"{}")
        await client.get("/items")
        await client.get("/items/7")
    assert items.call_count == 2 and item.call_count == 2


async def test_an_unsafe_method_invalidates_before_the_client_has_the_answer() -> None:
    """A client that posts to one instance and reads from another must not race the invalidation."""
    events: list[str] = []

    class RecordingStore(MemoryCacheStore):
        async def drop(self, key: str) -> None:
            events.append(f"drop {key}")
            await super().drop(key)

    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": [(b"location", b"/items/7")]})
        await send({"type": "http.response.body", "body": b""})

    async def client(message: Message) -> None:
        events.append(message["type"])

    async def no_body() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    cache = CacheMiddleware(upstream, settings=CacheSettings(enabled=True), store=RecordingStore(1 << 20))
    scope = {"type": "http", "method": "POST", "path": "/items", "raw_path": b"/items", "query_string": b""}
    await cache({**scope, "headers": [(b"host", b"gw.test")]}, no_body, client)
    assert events == ["drop gw.test /items", "drop gw.test /items/7", "http.response.start", "http.response.body"]


@pytest.mark.parametrize(
    ("request_headers", "response_headers"),
    [
        ({"authorization": "Bearer alice"}, {"cache-control": "max-age=60"}),
        ({}, {"cache-control": "private, max-age=60"}),
        ({}, {"cache-control": "no-store"}),
        ({"cache-control": "no-store"}, {"cache-control": "max-age=60"}),
        ({}, {}),
    ],
)
async def test_what_must_not_be_shared_is_never_served_to_another_client(
    clock: Clock, request_headers: dict[str, str], response_headers: dict[str, str]
) -> None:
    router = respx.MockRouter()
    upstream = router.get(f"{API}/me").mock(
        side_effect=lambda request: answer(clock, body=request.headers.get("authorization", "anon"), **response_headers)
    )
    async with gateway(router) as client:
        await client.get("/me", headers=request_headers)
        other = await client.get("/me", headers={"authorization": "Bearer bob"})
    assert other.text == "Bearer bob"
    assert upstream.call_count == 2


async def test_responses_over_the_object_limit_stream_through_uncached(clock: Clock) -> None:
    router = respx.MockRouter()
    upstream = router.get(f"{API}/big").mock(
        side_effect=lambda request: answer(clock, body="x" * 5000, **{"cache-control": "max-age=60"})
    )
    async with gateway(router, max_object_bytes=1000) as client:
        first = await client.get("/big")
        second = await client.get("/big")
    assert len(first.text) == len(second.text) == 5000
    assert upstream.call_count == 2


async def test_only_if_cached_and_stale_if_error(clock: Clock) -> None:
    router = respx.MockRouter()
    calls = {"n": 0}

    def origin(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] > 1:
            return httpx.Response(503, text="down")
        return answer(clock, **{"cache-control": "max-age=10, stale-if-error=300"})

    router.get(f"{API}/feed").mock(side_effect=origin)
    async with gateway(router) as client:
        missing = await client.get("/feed", headers={"cache-control": "only-if-cached"})
        await client.get("/feed")
        clock.now += 60
        rescued = await client.get("/feed")
    assert missing.status_code == 504
    assert rescued.status_code == 200 and rescued.text == "v1"
    assert rescued.headers["cache-status"] == "gateway; hit; fwd=stale; detail=stale-if-error"


async def test_request_no_cache_forces_a_trip_to_the_upstream(clock: Clock) -> None:
    router = respx.MockRouter()
    upstream = router.get(f"{API}/x").mock(side_effect=lambda request: answer(clock, **{"cache-control": "max-age=60"}))
    async with gateway(router) as client:
        await client.get("/x")
        await client.get("/x", headers={"cache-control": "no-cache"})
        clock.now += 1
        await client.get("/x", headers={"cache-control": "max-age=0"})
    assert upstream.call_count == 3


async def test_purge_drops_one_url_or_a_prefix(clock: Clock) -> None:
    router = respx.MockRouter()
    upstream = router.get(url__regex=rf"{API}/.*").mock(
        side_effect=lambda request: answer(clock, **{"cache-control": "max-age=600"})
    )
    async with gateway(router) as client:
        for path in ("/a/1", "/a/2?x=1", "/b/1"):
            await client.get(path)
        one = await client.post("/_gateway/cache/purge", json={"path": "/b/1"})
        below = await client.post("/_gateway/cache/purge", json={"path": "/a/", "prefix": True})
        wrong = await client.post("/_gateway/cache/purge", json={"path": "no-slash"})
        for path in ("/a/1", "/a/2?x=1", "/b/1"):
            await client.get(path)
    assert (one.json(), below.json(), wrong.status_code) == ({"purged": 1}, {"purged": 2}, 400)
    assert upstream.call_count == 6


async def test_concurrent_misses_collapse_into_one_upstream_request(clock: Clock) -> None:
    router = respx.MockRouter()
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return answer(clock, **{"cache-control": "max-age=60"})

    upstream = router.get(f"{API}/hot").mock(side_effect=slow)
    async with gateway(router) as client:
        waiting = [asyncio.create_task(client.get("/hot")) for _ in range(10)]
        await asyncio.sleep(0.05)
        release.set()
        responses = await asyncio.gather(*waiting)
    assert [response.text for response in responses] == ["v1"] * 10
    assert upstream.call_count == 1


async def test_stale_while_revalidate_answers_at_once_and_refreshes_in_the_background(clock: Clock) -> None:
    router = respx.MockRouter()
    versions = iter(["v1", "v2", "v3"])
    upstream = router.get(f"{API}/news").mock(
        side_effect=lambda request: answer(
            clock, body=next(versions), **{"cache-control": "max-age=10, stale-while-revalidate=60"}
        )
    )
    async with gateway(router) as client:
        await client.get("/news")
        clock.now += 30
        stale = await client.get("/news")
        for _ in range(100):  # the refresh runs in the background: wait for it, bounded
            if upstream.call_count == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        refreshed = await client.get("/news")
        clock.now += 200  # past the stale-while-revalidate window: the client waits for the upstream
        waited = await client.get("/news")
    assert stale.text == "v1" and stale.headers["cache-status"].endswith("detail=stale-while-revalidate")
    assert refreshed.text == "v2" and refreshed.headers["cache-status"] == "gateway; hit"
    assert waited.text == "v3"


@pytest.mark.parametrize(
    ("set_cookie", "second_status", "second_cookie"),
    [
        ("store", "gateway; hit", "sid=shared"),
        ("strip", "gateway; hit", None),
        ("bypass", "gateway; fwd=uri-miss", "sid=shared"),
    ],
)
async def test_responses_that_set_cookies(
    clock: Clock, set_cookie: str, second_status: str, second_cookie: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9111 3.1 stores every field, Set-Cookie too: an upstream that marks such a response shareable shares
    its cookie (and the log says so, once). "strip" stores it without the cookie; "bypass" (nginx's default)
    never stores it."""
    router = respx.MockRouter()
    upstream = router.get(url__startswith=f"{API}/file").mock(
        side_effect=lambda request: answer(clock, **{"cache-control": "public, max-age=60", "set-cookie": "sid=shared"})
    )
    async with gateway(router, set_cookie=set_cookie) as client:
        first = await client.get("/file")
        second = await client.get("/file")
        await client.get("/file2")
    assert first.headers["set-cookie"] == "sid=shared"
    assert second.headers["cache-status"] == second_status
    assert second.headers.get("set-cookie") == second_cookie
    assert upstream.call_count == (3 if set_cookie == "bypass" else 2)
    warnings = [record for record in caplog.records if "Set-Cookie" in record.getMessage()]
    assert len(warnings) == (1 if set_cookie == "store" else 0)


@pytest.mark.parametrize(
    ("request_headers", "status", "body", "content_range"),
    [
        ({"range": "bytes=0-1"}, 206, "01", "bytes 0-1/10"),
        ({"range": "bytes=7-"}, 206, "789", "bytes 7-9/10"),
        ({"range": "bytes=-3"}, 206, "789", "bytes 7-9/10"),
        ({"range": "bytes=8-100"}, 206, "89", "bytes 8-9/10"),
        ({"range": "bytes=10-"}, 416, "", "bytes */10"),
        ({"range": "bytes=0-1,4-5"}, 200, "0123456789", None),  # several ranges: the whole response
        ({"range": "bytes=5-2"}, 200, "0123456789", None),  # invalid: ignored
        ({"range": "items=0-1"}, 200, "0123456789", None),  # another unit: ignored
        ({"range": "bytes=0-1", "if-range": '"v1"'}, 206, "01", "bytes 0-1/10"),
        ({"range": "bytes=0-1", "if-range": '"v0"'}, 200, "0123456789", None),  # changed since: the whole thing
        ({"range": "bytes=0-1", "if-range": 'W/"v1"'}, 200, "0123456789", None),  # weak tags never match
    ],
)
async def test_byte_ranges_are_answered_from_a_stored_response(
    clock: Clock, request_headers: dict[str, str], status: int, body: str, content_range: str | None
) -> None:
    router = respx.MockRouter()
    upstream = router.get(f"{API}/file").mock(
        side_effect=lambda request: answer(clock, body="0123456789", etag='"v1"', **{"cache-control": "max-age=60"})
    )
    async with gateway(router) as client:
        await client.get("/file")
        ranged = await client.get("/file", headers=request_headers)
    assert (ranged.status_code, ranged.text) == (status, body)
    assert ranged.headers.get("content-range") == content_range
    assert ranged.headers["content-length"] == str(len(body))
    assert ranged.headers["cache-status"] == "gateway; hit"
    assert upstream.call_count == 1


async def test_a_range_request_on_a_miss_goes_to_the_upstream_and_is_not_stored(clock: Clock) -> None:
    router = respx.MockRouter()
    upstream = router.get(f"{API}/file").mock(
        side_effect=lambda request: httpx.Response(
            206,
            text="01",
            headers={"date": clock.date(), "cache-control": "max-age=60", "content-range": "bytes 0-1/10"},
        )
    )
    async with gateway(router) as client:
        first = await client.get("/file", headers={"range": "bytes=0-1"})
        second = await client.get("/file", headers={"range": "bytes=0-1"})
        cached_only = await client.get("/file", headers={"range": "bytes=0-1", "cache-control": "only-if-cached"})
    assert first.status_code == second.status_code == 206
    assert cached_only.status_code == 504  # RFC 9111 5.2.1.7: nothing stored, so no trip upstream either
    assert upstream.call_count == 2
    assert upstream.calls[0].request.headers["range"] == "bytes=0-1"


async def test_a_stale_response_answers_while_the_upstream_cannot_be_reached(clock: Clock) -> None:
    """RFC 9111 4.2.4: a disconnected cache may serve stale. Within `stale_if_unreachable` of going stale, a
    connection failure is answered from the cache; an upstream's own 5xx is not (that takes stale-if-error);
    a response that forbids going stale never is."""
    router = respx.MockRouter()
    state = {"failure": "none"}

    def origin(request: httpx.Request) -> httpx.Response:
        if state["failure"] == "connect":
            raise httpx.ConnectError("refused", request=request)
        if state["failure"] == "status":
            return httpx.Response(503, text="down")
        control = "max-age=10, must-revalidate" if request.url.path == "/strict" else "max-age=10"
        return answer(clock, **{"cache-control": control})

    router.get(url__startswith=API).mock(side_effect=origin)
    async with gateway(router, stale_if_unreachable=30) as client:
        await client.get("/page")
        await client.get("/strict")
        clock.now += 20  # stale by 10 s
        state["failure"] = "connect"
        rescued = await client.get("/page")
        strict = await client.get("/strict")
        state["failure"] = "status"
        upstream_error = await client.get("/page")
        clock.now += 30  # stale by 40 s: past the window
        state["failure"] = "connect"
        too_old = await client.get("/page")
    assert (rescued.status_code, rescued.text) == (200, "v1")
    assert rescued.headers["cache-status"] == "gateway; hit; fwd=stale; detail=upstream-unreachable"
    assert rescued.headers["age"] == "20"
    assert strict.status_code == 502
    assert upstream_error.status_code == 503
    assert too_old.status_code == 502


async def test_freshness_uses_the_upstreams_date_and_expires(clock: Clock) -> None:
    router = respx.MockRouter()
    expires = email.utils.formatdate(START + 60, usegmt=True)
    upstream = router.get(f"{API}/e").mock(side_effect=lambda request: answer(clock, expires=expires))
    async with gateway(router) as client:
        await client.get("/e")
        clock.now += 30
        hit = await client.get("/e")
        clock.now += 40
        stale = await client.get("/e")
    assert hit.headers["cache-status"] == "gateway; hit" and hit.headers["age"] == "30"
    assert stale.headers["cache-status"].startswith("gateway; fwd=stale")
    assert upstream.call_count == 2


async def test_an_invalid_upstream_date_is_replaced_by_the_time_of_arrival(clock: Clock) -> None:
    """RFC 9110 6.6.1: a cache records when a response without a (valid) Date arrived; Expires then counts
    from there, where an unusable Date would have made the response stale at once."""
    router = respx.MockRouter()
    expires = email.utils.formatdate(START + 60, usegmt=True)
    upstream = router.get(f"{API}/e").mock(
        side_effect=lambda request: httpx.Response(200, text="v1", headers={"date": "yesterday", "expires": expires})
    )
    async with gateway(router) as client:
        await client.get("/e")
        clock.now += 30
        hit = await client.get("/e")
    assert hit.headers["cache-status"] == "gateway; hit" and hit.headers["age"] == "30"
    assert upstream.call_count == 1


async def test_a_304_for_another_representation_is_not_used_to_update_the_stored_one(clock: Clock) -> None:
    router = respx.MockRouter()
    calls: list[str | None] = []

    def origin(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("if-none-match"))
        if request.headers.get("if-none-match"):
            return httpx.Response(304, headers={"date": clock.date(), "etag": '"other"'})
        return answer(clock, body=f"full {len(calls)}", etag='"v1"', **{"cache-control": "max-age=10"})

    router.get(f"{API}/r").mock(side_effect=origin)
    async with gateway(router) as client:
        await client.get("/r")
        clock.now += 30
        response = await client.get("/r")
    assert calls == [None, '"v1"', None], "revalidated, then fetched in full"
    assert response.status_code == 200 and response.text == "full 3"


async def test_a_head_response_freshens_or_invalidates_the_stored_get(clock: Clock) -> None:
    router = respx.MockRouter()
    etags = {"value": '"v1"'}

    def origin(request: httpx.Request) -> httpx.Response:
        return answer(clock, etag=etags["value"], **{"cache-control": "max-age=10"})

    upstream = router.route(url=f"{API}/h").mock(side_effect=origin)
    async with gateway(router) as client:
        await client.get("/h")
        clock.now += 30
        await client.head("/h")  # stale: the HEAD goes upstream; same ETag, so the stored GET is fresh again
        refreshed = await client.get("/h")
        clock.now += 30
        etags["value"] = '"v2"'
        await client.head("/h")  # the representation changed: the stored GET is dropped
        refetched = await client.get("/h")
    assert refreshed.headers["cache-status"] == "gateway; hit"
    assert refetched.headers["cache-status"].startswith("gateway; fwd=uri-miss")
    assert [call.request.method for call in upstream.calls] == ["GET", "HEAD", "HEAD", "GET"]


async def test_a_stripping_route_keeps_cookies_out_of_the_store_on_every_path(clock: Clock) -> None:
    """With set_cookie = "strip", a cookie set on a 200 to HEAD (which freshens the stored GET) is not stored
    either."""
    router = respx.MockRouter()

    def origin(request: httpx.Request) -> httpx.Response:
        cookie = {"set-cookie": "sid=head"} if request.method == "HEAD" else {}
        return answer(clock, etag='"v1"', **{"cache-control": "max-age=10", **cookie})

    router.route(url=f"{API}/h").mock(side_effect=origin)
    async with gateway(router, set_cookie="strip") as client:
        await client.get("/h")
        clock.now += 30
        head = await client.head("/h")
        hit = await client.get("/h")
    assert head.headers["set-cookie"] == "sid=head"
    assert hit.headers["cache-status"] == "gateway; hit" and "set-cookie" not in hit.headers


@pytest.mark.parametrize(
    ("query_string", "extensions", "key"),
    [
        (b"", {}, "gw /a"),
        (b"", {EMPTY_QUERY_EXTENSION: {}}, "gw /a?"),  # the edge saw `/a?`: another resource than `/a`
        (b"x=1", {}, "gw /a?x=1"),
    ],
)
def test_the_cache_key_keeps_an_empty_query_apart(query_string: bytes, extensions: dict[str, Any], key: str) -> None:
    scope = {
        "type": "http",
        "path": "/a",
        "raw_path": b"/a",
        "query_string": query_string,
        "headers": [(b"host", b"GW")],
    }
    assert middleware.cache_key({**scope, "extensions": extensions}) == key
