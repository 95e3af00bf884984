"""The relay through a real uvicorn gateway to a raw upstream that records exactly what it received."""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway import create_app
from settings import LimitsSettings
from tests.conftest import settings_with
from tests.servers import ROOT, Received, ScriptedServer, UpstreamHandler, raw_request, scripted_upstream, serve_app


@pytest.fixture
def upstream() -> Iterator[ScriptedServer]:
    with scripted_upstream() as server:
        yield server


def gateway(*routes: dict[str, Any], **sections: Any) -> Any:
    """The gateway as `python -m gateway` serves it: the edge protocol with default limits."""
    return serve_app(create_app(settings_with(*routes, **sections)), limits=LimitsSettings())


def connect(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


@pytest.mark.parametrize(
    "target",
    [
        b"/api/a%20b/c+d;v=1/%41%7e?x=1&x=2&q=a+b%2Bc&empty=&flag&u=%E2%9C%93",
        b"/api/x?next=%2Fhome%2F..%2Fx&path=/a/../b",
        b"/api/UPPER/lower/MiXeD?A=1&a=2",
        b"/api?only=query",
        b"/api/x?",  # an empty query is a query (issue 30): signed URLs and canonical request strings count the "?"
        b"/api/x",
        b"/api/x?a=",
    ],
)
def test_target_reaches_the_upstream_byte_for_byte(upstream: ScriptedServer, target: bytes) -> None:
    with gateway({"prefix": "/api", "upstreams": [upstream.url]}) as url:
        answer = raw_request(url, b"GET %s HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n" % target)
    assert answer.startswith(b"HTTP/1.1 200")
    assert upstream.requests[-1].target == target


@pytest.mark.parametrize(
    "target",
    [
        b"/api/../admin",
        b"/api/%2e%2e/admin",
        b"/api/%2E%2E%2Fadmin",
        b"/api/..%2fadmin",
        b"/api/..%5cadmin",
        b"/api/..\\admin",
        b"/api/%252e%252e/admin",
        b"/api/..;/admin",
        b"/api/%00/admin",
    ],
)
def test_targets_that_could_leave_the_prefix_are_refused(upstream: ScriptedServer, target: bytes) -> None:
    with gateway({"prefix": "/api", "upstreams": [upstream.url]}, {"prefix": "/", "upstreams": [upstream.url]}) as url:
        answer = raw_request(url, b"GET %s HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n" % target)
    assert answer.split(b"\r\n")[0] in (b"HTTP/1.1 400 Bad Request",)
    assert upstream.requests == []


def test_repeated_headers_stay_separate_lines_both_ways() -> None:
    def cookies(handler: UpstreamHandler, request: Received) -> None:
        handler.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT\r\nSet-Cookie: c=3\r\n\r\nok"
        )

    with scripted_upstream(cookies) as upstream, gateway({"prefix": "/", "upstreams": [upstream.url]}) as url:
        answer = raw_request(url, b"GET / HTTP/1.1\r\nHost: gw\r\nX-Tag: a\r\nX-Tag: b, c\r\nConnection: close\r\n\r\n")
    lines = answer.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert [line for line in lines if line.lower().startswith(b"set-cookie")] == [
        b"set-cookie: a=1",
        b"set-cookie: b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT",
        b"set-cookie: c=3",
    ]
    assert upstream.requests[0].header(b"x-tag") == [b"a", b"b, c"]


def test_hop_by_hop_headers_are_removed_both_ways() -> None:
    def hoppy(handler: UpstreamHandler, request: Received) -> None:
        handler.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Upstream-Hop\r\n"
            b"X-Upstream-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-End: 1\r\n\r\nok"
        )

    with scripted_upstream(hoppy) as upstream, gateway({"prefix": "/", "upstreams": [upstream.url]}) as url:
        answer = raw_request(
            url,
            b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close, X-Client-Hop\r\nX-Client-Hop: 1\r\n"
            b"Proxy-Authorization: Basic c2VjcmV0\r\nKeep-Alive: 1\r\nTE: trailers\r\nX-Kept: 1\r\n\r\n",
        )
    head = answer.split(b"\r\n\r\n")[0].lower()
    for name in (b"x-upstream-hop", b"keep-alive", b"proxy-authenticate"):
        assert name not in head
    assert b"x-end: 1" in head
    received = {name.lower() for name, _ in upstream.requests[0].headers}
    assert not received & {b"x-client-hop", b"proxy-authorization", b"keep-alive", b"te"}
    assert b"x-kept" in received
    assert upstream.requests[0].header(b"connection") in ([], [b"keep-alive"])


def test_one_date_and_no_upstream_server_header() -> None:
    def dated(handler: UpstreamHandler, request: Received) -> None:
        handler.write(
            b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: upstream/1.0\r\nContent-Length: 0\r\n\r\n"
        )

    with scripted_upstream(dated) as upstream, gateway({"prefix": "/", "upstreams": [upstream.url]}) as url:
        answer = raw_request(url, b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    lines = [line.lower() for line in answer.split(b"\r\n\r\n")[0].split(b"\r\n")]
    assert len([line for line in lines if line.startswith(b"date:")]) == 1
    assert len([line for line in lines if line.startswith(b"server:")]) <= 1
    assert b"server: upstream/1.0" not in lines


@pytest.mark.parametrize(
    ("method", "status_line", "extra"),
    [
        ("HEAD", b"200 OK", b"Content-Length: 1234\r\n"),
        ("GET", b"204 No Content", b""),
        ("GET", b"304 Not Modified", b'ETag: "v1"\r\nContent-Length: 1234\r\n'),
    ],
)
def test_head_204_and_304_carry_no_body_and_keep_the_connection(method: str, status_line: bytes, extra: bytes) -> None:
    def bodyless(handler: UpstreamHandler, request: Received) -> None:
        if request.target == b"/next":
            handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
        else:
            handler.write(b"HTTP/1.1 %s\r\n%s\r\n" % (status_line, extra))

    with scripted_upstream(bodyless) as upstream, gateway({"prefix": "/", "upstreams": [upstream.url]}) as url:
        upstream.read_body = True
        conn = connect(url)
        conn.request(method, "/")
        first = conn.getresponse()
        assert first.read() == b""
        conn.request("GET", "/next")
        second = conn.getresponse()
        assert second.read() == b"next"
        conn.close()
    if method == "HEAD":
        assert first.getheader("content-length") == "1234"


def test_expect_100_continue() -> None:
    with scripted_upstream() as upstream, gateway({"prefix": "/", "upstreams": [upstream.url]}) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            interim = conn.recv(1024)
            assert interim.startswith(b"HTTP/1.1 100 Continue")
            conn.sendall(b"hello")
            final = conn.recv(4096)
    assert final.startswith(b"HTTP/1.1 200")
    assert upstream.requests[0].body == b"hello"
    assert upstream.requests[0].header(b"expect") == []


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_large_upload_reaches_the_upstream_byte_for_byte(upstream: ScriptedServer, framing: str) -> None:
    """3 MiB in many reads: the pieces the parser hands over reach the upstream whole and in order."""
    data = random.Random(7).randbytes(3 * 1024 * 1024)
    pieces = [data[start : start + 100_000] for start in range(0, len(data), 100_000)]
    content: bytes | Iterator[bytes] = data if framing == "content-length" else iter(pieces)
    with gateway({"prefix": "/", "upstreams": [upstream.url], "max_body_bytes": None}) as url:
        response = httpx.post(url + "/upload", content=content, timeout=30)
    assert response.status_code == 200
    received = upstream.requests[-1]
    assert len(received.body) == len(data) and received.body == data


def test_static_route_serves_files_and_refuses_escapes(tmp_path: Any) -> None:
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "hello.txt").write_text("hi")
    (tmp_path / "secret.txt").write_text("secret")
    with gateway({"prefix": "/static", "static_dir": str(tmp_path / "public")}) as url:
        assert httpx.get(url + "/static/hello.txt").text == "hi"
        assert httpx.get(url + "/static/missing.txt").status_code == 404
        escape = raw_request(url, b"GET /static/%2e%2e/secret.txt HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        assert escape.startswith(b"HTTP/1.1 400")
        assert httpx.post(url + "/static/hello.txt").status_code == 405


def test_default_configuration_answers_something_real() -> None:
    with serve_app(create_app()) as url:
        page = httpx.get(url + "/")
        health = httpx.get(url + "/_gateway/health")
    assert page.status_code == 200 and "The gateway is running" in page.text
    assert health.json() == {"status": "ok"}
    assert (ROOT / "settings" / "welcome" / "index.html").is_file()


def test_streamed_events_reach_the_client_one_by_one_as_the_upstream_writes_them() -> None:
    """The upstream writes each of five events only once the client has the previous one: a gateway that
    buffered any of them would deadlock here (until the bounded wait gives up and marks the event)."""
    delivered = [threading.Event() for _ in range(5)]

    def events(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for number, seen in enumerate(delivered):
            event = b"data: %d\n\n" % number
            handler.write(b"%x\r\n%s\r\n" % (len(event), event))
            if not seen.wait(10):
                handler.write(b"11\r\ndata: buffered!\n\n\r\n")
        handler.write(b"0\r\n\r\n")

    received = []
    with scripted_upstream(events) as upstream, gateway({"prefix": "/", "upstreams": [upstream.url]}) as url:
        with httpx.stream("GET", url + "/events", timeout=20) as response:
            for number, chunk in enumerate(response.iter_raw()):
                received.append(chunk)
                if number < len(delivered):
                    delivered[number].set()
    assert received == [b"data: %d\n\n" % number for number in range(5)]


def test_early_hints_reach_the_client_before_the_final_response_and_are_not_cached() -> None:
    """An upstream's 103 goes on to the client at once, where the edge serves (issue 30): the upstream sends its
    final answer only after the client has the hints. The cache stores the final answer alone."""
    hinted = threading.Event()

    def hints_first(handler: UpstreamHandler, request: Received) -> None:
        handler.write(
            b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n"
        )
        if request.target.endswith(b"/first"):
            assert hinted.wait(10), "the client never saw the 103"
        handler.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok")

    route = {"prefix": "/api", "cache": {"enabled": True}}
    with scripted_upstream(hints_first) as upstream, gateway({**route, "upstreams": [upstream.url]}) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"GET /api/first HTTP/1.1\r\nHost: gw\r\n\r\n")
            received = b""
            while b"\r\n\r\n" not in received:
                received += conn.recv(65536)
            interim = received
            hinted.set()
            while not received.endswith(b"ok"):
                received += conn.recv(65536)
            conn.sendall(b"GET /api/first HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            hit = b""
            while chunk := conn.recv(65536):
                hit += chunk
        old_client = raw_request(url, b"GET /api/old HTTP/1.0\r\nHost: gw\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 103 Early Hints\r\n") and b"Link: </app.css>; rel=preload" in interim
    assert b"X-Hop" not in interim and b"Connection: x-hop" not in interim  # hop-by-hop, as on final responses
    final = received[received.index(b"\r\n\r\n") + 4 :]
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert hit.startswith(b"HTTP/1.1 200 OK\r\n") and b"cache-status: gateway; hit" in hit.lower()
    assert b"103" not in hit.split(b"\r\n")[0] and b"app.css" not in hit  # the hints were never stored
    assert old_client.startswith(b"HTTP/1.1 200") or old_client.startswith(b"HTTP/1.0 200")  # no 1xx to HTTP/1.0
