"""The route cache through a real gateway and a raw upstream that counts what reaches it."""

from __future__ import annotations

import email.utils
import time

import httpx

from gateway import create_app
from settings import LimitsSettings
from tests.conftest import settings_with
from tests.servers import Received, UpstreamHandler, scripted_upstream, serve_app

BIG = 3 * 1024 * 1024


# Half a minute old, so that it cannot be mistaken for the gateway's own Date.
UPSTREAM_DATE = email.utils.formatdate(time.time() - 30, usegmt=True).encode()


def answer(handler: UpstreamHandler, request: Received) -> None:
    body = b"b" * BIG if request.target == b"/big" else b"small"
    handler.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\nContent-Length: %d\r\n" % len(body))
    handler.write(b"Date: " + UPSTREAM_DATE + b"\r\n\r\n")
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
    # A hit keeps the stored response's Date (Age counts from it), and the server adds no second one.
    assert "age" in small[1].headers and small[1].headers.get_list("date") == [UPSTREAM_DATE.decode()]
    assert sizes == BIG and len(again.content) == BIG
    assert [request.target for request in upstream.requests] == [b"/small", b"/big", b"/big"]
