"""The route cache through a real gateway and a raw upstream that counts what reaches it."""

from __future__ import annotations

import httpx

from gateway import create_app
from settings import LimitsSettings
from tests.conftest import settings_with
from tests.servers import Received, UpstreamHandler, scripted_upstream, serve_app

BIG = 3 * 1024 * 1024


def answer(handler: UpstreamHandler, request: Received) -> None:
    body = b"b" * BIG if request.target == b"/big" else b"small"
    handler.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\nContent-Length: %d\r\n\r\n" % len(body))
    handler.write(body)


def test_hits_skip_the_upstream_and_big_objects_stream_through_uncached() -> None:
    with scripted_upstream(answer) as upstream:
        route = {"prefix": "/", "upstreams": [upstream.url], "cache": {"enabled": True}}
        with serve_app(create_app(settings_with(route)), limits=LimitsSettings()) as url, httpx.Client() as client:
            small = [client.get(url + "/small") for _ in range(3)]
            with client.stream("GET", url + "/big") as big:
                sizes = sum(len(chunk) for chunk in big.iter_raw())
            again = client.get(url + "/big")
    assert [response.text for response in small] == ["small"] * 3
    assert [response.headers["cache-status"] for response in small[1:]] == ["gateway; hit"] * 2
    assert "age" in small[1].headers and len(small[1].headers.get_list("date")) == 1
    assert sizes == BIG and len(again.content) == BIG
    assert [request.target for request in upstream.requests] == [b"/small", b"/big", b"/big"]
