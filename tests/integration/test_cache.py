"""The route cache through a real gateway and a raw upstream that counts what reaches it."""

from __future__ import annotations

import email.utils
import socket
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


def test_ranges_from_the_store_and_stale_answers_while_the_upstream_is_gone() -> None:
    """Through a real gateway: a byte range of a stored response is answered 206 without the upstream; once the
    upstream is gone, a stale response still answers (within stale_if_unreachable), saying why."""

    def answer(handler: UpstreamHandler, request: Received) -> None:
        max_age = b"300" if request.target == b"/fresh" else b"0"  # /stale is stale as soon as it is stored
        handler.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=" + max_age + b"\r\nContent-Length: 10\r\n\r\n")
        handler.write(b"0123456789")

    with scripted_upstream(answer) as upstream:
        route = {"prefix": "/", "upstreams": [upstream.url], "cache": {"enabled": True}}
        with serve_app(create_app(settings_with(route)), limits=LimitsSettings()) as url, httpx.Client() as client:
            client.get(url + "/fresh")
            client.get(url + "/stale")
            ranged = client.get(url + "/fresh", headers={"Range": "bytes=2-4"})
            upstream.shutdown()  # the upstream goes away: no new connections, and the pooled one dies too
            upstream.server_close()
            for conn in list(upstream.open_sockets):
                conn.shutdown(socket.SHUT_RDWR)
            rescued = client.get(url + "/stale")
    assert (ranged.status_code, ranged.text, ranged.headers["content-range"]) == (206, "234", "bytes 2-4/10")
    assert (rescued.status_code, rescued.text) == (200, "0123456789")
    assert rescued.headers["cache-status"] == "gateway; hit; fwd=stale; detail=upstream-unreachable"
    assert [request.target for request in upstream.requests] == [b"/fresh", b"/stale"]
