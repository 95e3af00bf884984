"""Upstreams and clients that misbehave, with a real uvicorn gateway between them."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import httpx
import pytest

from gateway import create_app
from tests.conftest import settings_with
from tests.servers import Received, UpstreamHandler, loopback_socket, raw_request, scripted_upstream, serve_app


def gateway(*routes: dict[str, Any]) -> Any:
    return serve_app(create_app(settings_with(*routes)))


def route_to(url: str, **options: Any) -> dict[str, Any]:
    return {"prefix": "/", "upstreams": [url], **options}


def test_connect_failure_is_a_502_problem_naming_nothing_internal(caplog: pytest.LogCaptureFixture) -> None:
    closed = loopback_socket()  # bound, never listening: connections are refused
    port = closed.getsockname()[1]
    with caplog.at_level(logging.INFO, logger="gateway"), gateway(route_to(f"http://127.0.0.1:{port}")) as url:
        response = httpx.get(url + "/x", headers={"X-Request-ID": "r-502"})
    closed.close()
    assert response.status_code == 502
    assert response.json() == {
        "status": 502,
        "title": "Bad Gateway",
        "detail": "The upstream could not be reached.",
        "request_id": "r-502",
    }
    assert str(port) not in response.text
    logged = [record.getMessage() for record in caplog.records if record.name == "gateway.proxy"]
    assert len(logged) == 1 and "ConnectError" in logged[0]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 999 Made Up\r\nContent-Length: 2\r\n\r\nok",  # uvicorn had no status line for it: a traceback
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xyz\r\n\r\nok",  # was relayed as plain bytes until the close
    ],
)
def test_a_response_the_gateway_cannot_relay_is_a_502_at_once(head: bytes, caplog: pytest.LogCaptureFixture) -> None:
    def answer(handler: UpstreamHandler, request: Received) -> None:
        handler.write(head)

    with (
        caplog.at_level(logging.INFO),
        scripted_upstream(answer) as upstream,
        gateway(route_to(upstream.url, balancing={"retries": {"attempts": 1}})) as url,
    ):
        response = httpx.get(url + "/", timeout=10)
    assert response.status_code == 502
    assert response.json()["detail"] == "The upstream sent an invalid or incomplete response."
    assert not [record for record in caplog.records if record.exc_info], "no traceback"


def test_slow_upstream_is_a_504() -> None:
    def slow(handler: UpstreamHandler, request: Received) -> None:
        time.sleep(1.5)
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    with scripted_upstream(slow) as upstream, gateway(route_to(upstream.url, timeouts={"read": 0.3})) as url:
        response = httpx.get(url + "/", timeout=10)
    assert response.status_code == 504
    assert response.json()["title"] == "Gateway Timeout"


def test_response_header_deadline_is_a_504_but_spares_a_stream_that_outlives_it() -> None:
    """The deadline covers the wait for the response head; a body that keeps flowing is bounded by `read`."""

    def answer(handler: UpstreamHandler, request: Received) -> None:
        if request.target == b"/late":
            time.sleep(1.0)
            handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for number in range(8):  # 0.8 s of events: well past the 0.3 s deadline
            event = b"data: %d\n\n" % number
            handler.write(b"%x\r\n%s\r\n" % (len(event), event))
            time.sleep(0.1)
        handler.write(b"0\r\n\r\n")

    options = {"timeouts": {"read": 5, "response_header": 0.3}}
    with scripted_upstream(answer) as upstream, gateway(route_to(upstream.url, **options)) as url:
        late = httpx.get(url + "/late", timeout=10)
        stream = httpx.get(url + "/events", timeout=10)
    assert late.status_code == 504
    assert stream.status_code == 200 and stream.text.count("data: ") == 8


def test_chunked_body_over_the_limit_is_cut_with_413() -> None:
    with scripted_upstream() as upstream, gateway(route_to(upstream.url, max_body_bytes=100_000)) as url:

        def chunks() -> Any:
            for _ in range(50):
                yield b"x" * 10_000

        response = httpx.post(url + "/up", content=chunks(), timeout=10)
    assert response.status_code == 413
    assert all(len(request.body) <= 100_000 for request in upstream.requests)


@pytest.mark.parametrize("ending", ["reset", "close"])
@pytest.mark.parametrize("framing", [b"Content-Length: 100000\r\n", b"Transfer-Encoding: chunked\r\n"])
def test_upstream_dying_mid_body_aborts_the_client_response(framing: bytes, ending: str) -> None:
    """An upstream that resets (RST) or closes (FIN) in the middle of a body: the client can tell the response is
    incomplete; a close is never taken for the end of a chunked body (issue 31)."""

    def dies(handler: UpstreamHandler, request: Received) -> None:
        if request.target != b"/die":
            handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return
        handler.write(b"HTTP/1.1 200 OK\r\n%s\r\n" % framing)
        piece = b"x" * 1000
        handler.write(b"3e8\r\n" + piece + b"\r\n" if b"chunked" in framing else piece)
        time.sleep(0.2)
        if ending == "reset":
            handler.reset()
        else:
            handler.connection.shutdown(socket.SHUT_WR)  # FIN; the handler then sees the gateway close its side

    with scripted_upstream(dies) as upstream, gateway(route_to(upstream.url)) as url:
        with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", url + "/die", timeout=10) as response:
            assert response.status_code == 200
            response.read()
        after = httpx.get(url + "/", timeout=10)
    assert after.text == "ok"


def test_client_going_away_cancels_the_upstream_exchange() -> None:
    def endless(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            handler.write(b"10000\r\n" + b"y" * 0x10000 + b"\r\n")
            time.sleep(0.02)

    with scripted_upstream(endless) as upstream, gateway(route_to(upstream.url)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert conn.recv(1024).startswith(b"HTTP/1.1 200")
        assert upstream.client_went_away.wait(10), "the upstream kept streaming to a gateway whose client left"


def test_client_going_away_while_the_upstream_thinks_is_noticed() -> None:
    def thinker(handler: UpstreamHandler, request: Received) -> None:
        # Answer only after the client gave up; the gateway must have closed the upstream connection by then.
        time.sleep(1.5)
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        if handler.rfile.read(1) == b"":
            handler.server.client_went_away.set()

    with scripted_upstream(thinker) as upstream, gateway(route_to(upstream.url)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
            time.sleep(0.3)
        assert upstream.client_went_away.wait(10), "the upstream connection outlived the client"


def test_a_stale_pooled_connection_is_not_used() -> None:
    def then_close(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with scripted_upstream(then_close) as upstream, gateway(route_to(upstream.url)) as url:
        upstream.close_after_response = True  # keep-alive is implied, but the upstream closes anyway
        with httpx.Client(timeout=10) as client:
            answers = []
            for _ in range(3):
                answers.append(client.get(url + "/").status_code)
                time.sleep(0.2)
    assert answers == [200, 200, 200]
    assert upstream.connections == 3


def test_conflicting_content_lengths_are_a_502() -> None:
    def conflicting(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhelloHTTP/1.1 200 OK\r\n")

    with scripted_upstream(conflicting) as upstream, gateway(route_to(upstream.url)) as url:
        response = httpx.get(url + "/", timeout=10)
    assert response.status_code == 502


def test_smuggled_bytes_after_a_body_never_reach_a_client() -> None:
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Smuggled: 1\r\n\r\nSMUGGLED"

    def splicer(handler: UpstreamHandler, request: Received) -> None:
        if request.target == b"/first":
            body = b"5\r\nhello\r\n0\r\n\r\n"
            handler.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + body + smuggled
            )
        else:
            handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")

    with scripted_upstream(splicer) as upstream, gateway(route_to(upstream.url)) as url:
        with httpx.Client(timeout=10) as client:
            first = client.get(url + "/first")
            second = client.get(url + "/second")
    assert first.status_code in (200, 502)
    assert b"SMUGGLED" not in first.content
    if first.status_code == 200:
        assert first.content == b"hello"
    assert second.content == b"second"
    assert "x-smuggled" not in second.headers


def test_proxy_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = loopback_socket()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead.getsockname()[1]}")
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{dead.getsockname()[1]}")
    with scripted_upstream() as upstream, gateway(route_to(upstream.url)) as url:
        response = httpx.get(url + "/direct", timeout=10, trust_env=False)
    dead.close()
    assert response.status_code == 200
    assert upstream.requests[0].target == b"/direct"


def test_a_request_the_server_cannot_parse_gets_400() -> None:
    with scripted_upstream() as upstream, gateway(route_to(upstream.url)) as url:
        answer = raw_request(url, b"GET / HTTP/1.1\r\nHost: gw\r\nContent-Length: abc\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    assert upstream.requests == []


def test_many_clients_leaving_mid_exchange_leave_the_pool_usable() -> None:
    """Clients that give up while their upstream exchanges are in flight must not leak pooled connections."""

    def slowish(handler: UpstreamHandler, request: Received) -> None:
        time.sleep(0.3)
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def leave_early(port: int, count: int) -> None:
        async def one() -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /abandoned HTTP/1.1\r\nHost: gw\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.transport.abort()

        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 30)

    route = route_to("", timeouts={"pool": 2})
    with scripted_upstream(slowish) as upstream:
        route["upstreams"] = [upstream.url]
        settings = settings_with(route, client={"max_connections": 50})
        with serve_app(create_app(settings)) as url:
            port = int(url.rsplit(":", 1)[1])
            for _ in range(4):
                asyncio.run(leave_early(port, 120))
            time.sleep(0.5)
            answers = [httpx.get(url + "/after", timeout=10).status_code for _ in range(5)]
    assert answers == [200] * 5
