"""The edge against hostile clients, over real sockets: smuggling shapes, limits and deadlines, connection caps.

Each case sends raw bytes to a real gateway (uvicorn with the gateway's edge protocol) in front of a raw
upstream that records what reaches it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway import create_app
from settings import LimitsSettings
from tests.conftest import settings_with
from tests.servers import (
    ENDLESS,
    LARGE,
    WAIT,
    Received,
    ScriptedServer,
    UpstreamHandler,
    accepted,
    read_to_close,
    respond_echo,
    respond_large,
    scripted_upstream,
    serve_app,
    wait_until,
)

SMUGGLED = b"GET /api/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n"


@pytest.fixture
def upstream() -> Iterator[ScriptedServer]:
    with scripted_upstream() as server:
        yield server


@contextlib.contextmanager
def edge(upstream_url: str, server: dict[str, Any] | None = None, **limits: Any) -> Iterator[tuple[str, int]]:
    app = create_app(settings_with({"prefix": "/api", "upstreams": [upstream_url]}))
    with serve_app(app, limits=LimitsSettings(**limits), **(server or {})) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def exchange(address: tuple[str, int], data: bytes, *, timeout: float = WAIT) -> bytes:
    """Send `data`, then read until the gateway closes the connection."""
    with socket.create_connection(address, timeout=timeout) as conn:
        conn.sendall(data)
        return read_to_close(conn)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def post(headers: bytes, body: bytes, version: bytes = b"1.1") -> bytes:
    return b"POST /api/up HTTP/" + version + b"\r\nHost: gw\r\n" + headers + b"\r\n" + body


# Each shape is followed by a second, smuggled request; none may reach the upstream, and only one answer comes back.
REFUSED: dict[str, tuple[bytes, int]] = {
    "CL.TE": (post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG"), 400),
    "TE.CL": (post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"1\r\nA\r\n0\r\n\r\n"), 400),
    "two different Content-Lengths": (post(b"Content-Length: 3\r\nContent-Length: 40\r\n", b"abc"), 400),
    "two equal Content-Lengths": (post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"), 400),
    "Content-Length list": (post(b"Content-Length: 3, 3\r\n", b"abc"), 400),
    "Content-Length not a number": (post(b"Content-Length: 3x\r\n", b"abc"), 400),
    "Content-Length negative": (post(b"Content-Length: -3\r\n", b"abc"), 400),
    "Content-Length with a plus": (post(b"Content-Length: +3\r\n", b"abc"), 400),
    "TE xchunked": (post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 501),
    "TE space before colon": (post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400),
    "TE folded onto the next line": (post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), 400),
    "TE chunked then gzip": (post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), 400),
    "TE gzip then chunked": (post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    "TE split over two lines": (post(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 501),
    "TE chunked and identity": (
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"0\r\n\r\n"),
        400,
    ),
    "TE identity": (post(b"Transfer-Encoding: identity\r\n", b"abc"), 501),
    "TE in HTTP/1.0": (post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"1.0"), 400),
    "chunk size not hex": (post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nab\r\n0\r\n\r\n"), 400),
    "chunk size overflow": (post(b"Transfer-Encoding: chunked\r\n", b"1" + b"0" * 17 + b"\r\nab\r\n0\r\n\r\n"), 400),
    "chunk size with 0x": (post(b"Transfer-Encoding: chunked\r\n", b"0x2\r\nab\r\n0\r\n\r\n"), 400),
    "chunk size negative": (post(b"Transfer-Encoding: chunked\r\n", b"-2\r\nab\r\n0\r\n\r\n"), 400),
    "chunk size then space": (post(b"Transfer-Encoding: chunked\r\n", b"2 \r\nab\r\n0\r\n\r\n"), 400),
    "chunk longer than its size": (post(b"Transfer-Encoding: chunked\r\n", b"2\r\nabXX\r\n0\r\n\r\n"), 400),
    "chunk lines ended by LF": (post(b"Transfer-Encoding: chunked\r\n", b"2\nab\n0\n\n"), 400),
    "bare CR in a header": (b"GET /api/a HTTP/1.1\r\nHost: gw\r\nX-A: b\rX-B: c\r\n\r\n", 400),
    "bare LF line ends": (b"GET /api/a HTTP/1.1\nHost: gw\n\n", 400),
    "obs-fold": (b"GET /api/a HTTP/1.1\r\nHost: gw\r\nX-A: b\r\n c\r\n\r\n", 400),
    "space before colon": (b"GET /api/a HTTP/1.1\r\nHost: gw\r\nX-A : b\r\n\r\n", 400),
    "NUL in a header": (b"GET /api/a HTTP/1.1\r\nHost: gw\r\nX-A: b\x00c\r\n\r\n", 400),
    "control character in a header": (b"GET /api/a HTTP/1.1\r\nHost: gw\r\nX-A: b\x01c\r\n\r\n", 400),
    "control character in the target": (b"GET /api/a\x01b HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    "header without a colon": (b"GET /api/a HTTP/1.1\r\nHost: gw\r\nX-A\r\n\r\n", 400),
    "empty header name": (b"GET /api/a HTTP/1.1\r\nHost: gw\r\n: b\r\n\r\n", 400),
    "no Host": (b"GET /api/a HTTP/1.1\r\n\r\n", 400),
    "two Hosts": (b"GET /api/a HTTP/1.1\r\nHost: gw\r\nHost: evil\r\n\r\n", 400),
    "Host with a path": (b"GET /api/a HTTP/1.1\r\nHost: evil/x\r\n\r\n", 400),
    "Host with a space": (b"GET /api/a HTTP/1.1\r\nHost: gw evil\r\n\r\n", 400),
    "HTTP/0.9": (b"GET /api/a\r\n\r\n", 505),
    "HTTP/1.2": (b"GET /api/a HTTP/1.2\r\nHost: gw\r\n\r\n", 400),
}


@pytest.mark.parametrize("data, status", REFUSED.values(), ids=REFUSED.keys())
def test_smuggling_shapes_are_refused_and_the_connection_closed(
    upstream: ScriptedServer, data: bytes, status: int
) -> None:
    with edge(upstream.url) as address:
        response = exchange(address, data + SMUGGLED)
        after = httpx.get(f"http://{address[0]}:{address[1]}/api/after")
    assert status_of(response) == status
    assert response.count(b"HTTP/1.1 ") == 1, "one answer, then the connection is closed"
    assert b"connection: close" in response
    document = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert document["status"] == status and set(document) == {"status", "title", "detail", "request_id"}
    assert after.status_code == 200, "the gateway keeps serving other clients"
    assert [request.target for request in upstream.requests] == [b"/api/after"]


NORMALISED: dict[str, tuple[bytes, bytes]] = {
    "TE in capitals": (post(b"Transfer-Encoding: CHUNKED\r\n", b"3\r\nabc\r\n0\r\n\r\n"), b"abc"),
    "TE after a tab": (post(b"Transfer-Encoding:\tchunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), b"abc"),
    "chunk extension": (post(b"Transfer-Encoding: chunked\r\n", b"3;name=value\r\nabc\r\n0\r\n\r\n"), b"abc"),
    "Content-Length with leading zeros": (post(b"Content-Length: 003\r\n", b"abc"), b"abc"),
}


@pytest.mark.parametrize("data, body", NORMALISED.values(), ids=NORMALISED.keys())
def test_odd_but_valid_framing_reaches_the_upstream_as_one_well_framed_request(
    upstream: ScriptedServer, data: bytes, body: bytes
) -> None:
    with edge(upstream.url) as address, socket.create_connection(address, timeout=WAIT) as conn:
        conn.sendall(data + b"GET /api/next HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        response = read_to_close(conn)
    assert response.count(b"HTTP/1.1 200") == 2
    first, second = upstream.requests
    assert first.body == body and second.target == b"/api/next"
    framing = first.header(b"content-length") + first.header(b"transfer-encoding")
    assert framing in ([b"3"], [b"chunked"]), "exactly one framing header"


def test_head_limits_answer_431_and_414(upstream: ScriptedServer) -> None:
    with edge(upstream.url, max_head_bytes=4096, max_headers=20, max_target_bytes=1024) as address:
        many = exchange(address, b"GET /api/a HTTP/1.1\r\nHost: gw\r\n" + b"X-A: b\r\n" * 21 + b"\r\n")
        large = exchange(address, b"GET /api/a HTTP/1.1\r\nHost: gw\r\nX-A: " + b"b" * 5000 + b"\r\n\r\n")
        long_target = exchange(address, b"GET /api/" + b"a" * 1100 + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
        at_limits = httpx.get(
            f"http://{address[0]}:{address[1]}/api/" + "a" * 900, headers={f"x-{i}": "v" for i in range(15)}
        )
    assert (status_of(many), status_of(large), status_of(long_target)) == (431, 431, 414)
    assert at_limits.status_code == 200


def test_max_headers_is_the_most_header_lines_accepted(upstream: ScriptedServer) -> None:
    """Exactly `max_headers` lines pass; one more is 431 (issue 31: the boundary itself)."""
    with edge(upstream.url, max_headers=20) as address:
        at = exchange(
            address, b"GET /api/a HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n" + b"X-A: b\r\n" * 18 + b"\r\n"
        )
        over = exchange(address, b"GET /api/a HTTP/1.1\r\nHost: gw\r\n" + b"X-A: b\r\n" * 20 + b"\r\n")
    assert (status_of(at), status_of(over)) == (200, 431)


def test_an_endless_header_line_is_cut_without_buffering_it(upstream: ScriptedServer) -> None:
    with edge(upstream.url, max_head_bytes=4096) as address, socket.create_connection(address, timeout=WAIT) as conn:
        conn.sendall(b"GET /api/a HTTP/1.1\r\nHost: gw\r\nX-Endless: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(64):  # 64 KiB in 1 KiB pieces, never ending the line
                conn.sendall(b"a" * 1024)
        response = read_to_close(conn)
    assert status_of(response) == 431
    assert upstream.requests == []


def test_slow_request_heads_are_cut_with_408_without_delaying_others(upstream: ScriptedServer) -> None:
    with edge(upstream.url, head_timeout=3) as address:
        slow = [socket.create_connection(address, timeout=WAIT) for _ in range(50)]
        try:
            for conn in slow[:25]:
                conn.sendall(b"GET /api/slow HTTP/1.1\r\nHost: gw\r\n")  # the head never ends
            # 25 others send nothing at all. Normal clients are served meanwhile:
            normal = [httpx.get(f"http://{address[0]}:{address[1]}/api/normal") for _ in range(5)]
            for conn in slow:
                conn.setblocking(False)
                with pytest.raises(BlockingIOError):
                    conn.recv(1)  # not answered yet: the deadline has not passed
                conn.setblocking(True)
            answers = [read_to_close(conn) for conn in slow]
        finally:
            for conn in slow:
                conn.close()
    assert [response.status_code for response in normal] == [200] * 5
    assert {status_of(answer) for answer in answers} == {408}
    assert all(request.target == b"/api/normal" for request in upstream.requests)


def test_a_trickled_body_is_cut_with_408(upstream: ScriptedServer) -> None:
    with edge(upstream.url, body_timeout=0.5, body_min_rate=100) as address:
        with socket.create_connection(address, timeout=WAIT) as conn:
            conn.sendall(b"POST /api/up HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\n")
            answer = b""
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for _ in range(50):  # one byte every 0.1 s: 10 bytes/s, under the 100 required
                    conn.sendall(b"x")
                    time.sleep(0.1)
                    conn.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        answer = conn.recv(65536)
                    conn.setblocking(True)
                    if answer:
                        break
            answer += read_to_close(conn)
    assert status_of(answer) == 408
    assert b"arrived too slowly" in answer


def test_a_body_held_back_by_a_slow_upstream_is_not_cut() -> None:
    """Back-pressure from a stalled upstream pauses the client; that time is not the client's fault."""
    size = 8 * 1024 * 1024

    def stall_then_read(handler: UpstreamHandler, request: Received) -> None:
        time.sleep(2.0)
        remaining = int(request.header(b"content-length")[0])
        while remaining:
            remaining -= len(handler.rfile.read(min(remaining, 1 << 20)))
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with scripted_upstream(stall_then_read) as slow_upstream:
        slow_upstream.read_body = False
        with edge(slow_upstream.url, body_timeout=0.5, body_min_rate=100_000) as address:
            response = httpx.post(f"http://{address[0]}:{address[1]}/api/up", content=b"u" * size, timeout=WAIT)
    assert response.status_code == 200 and response.text == "ok"


def read_response(conn: socket.socket) -> bytes:
    """One response with a Content-Length off a keep-alive connection (b"" if the gateway closed it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_keep_alive_connection_is_closed_once_idle_for_the_timeout_and_not_while_in_use() -> None:
    def slow_then_echo(handler: UpstreamHandler, request: Received) -> None:
        if request.target == b"/api/slow":
            time.sleep(1.5)  # longer than the keep-alive timeout: the connection is busy, not idle
        respond_echo(handler, request)

    with scripted_upstream(slow_then_echo) as upstream, edge(upstream.url, server={"timeout_keep_alive": 1}) as address:
        with socket.create_connection(address, timeout=WAIT) as conn:
            for path in (b"/api/a", b"/api/slow", b"/api/b", b"/api/c", b"/api/d"):
                conn.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
                assert status_of(read_response(conn)) == 200
                time.sleep(0.4)  # 3.1 s on one connection, never idle for the full second
            assert conn.recv(1) == b""  # then closed by the gateway (the socket's own timeout would raise)
    assert len(upstream.requests) == 5


@pytest.mark.parametrize("target", [b"/api/endless/spliced", b"/api/endless/chunked"])
def test_a_client_that_takes_none_of_its_response_is_dropped_after_the_send_timeout_and_the_upstream_freed(
    target: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        with scripted_upstream(respond_large) as upstream, edge(upstream.url, send_timeout=0.5) as address:
            with socket.create_connection(address, timeout=WAIT) as conn:
                conn.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
                taken = b""
                while len(taken) < 1024 * 1024:  # past what the gateway relays before it starts a splice
                    piece = conn.recv(65536)
                    assert piece, "the gateway closed the connection"
                    taken += piece
                assert taken.startswith(b"HTTP/1.1 200")
                # then reads nothing more: the gateway must give up on it and close its upstream connection
                assert upstream.client_went_away.wait(WAIT)
                assert len(read_to_close(conn)) < ENDLESS  # dropped: the socket closes (a reset) short of the body
            after = httpx.get(f"http://{address[0]}:{address[1]}/api/after", timeout=WAIT)
    assert after.status_code == 200
    records = {record.msg["path"]: record.msg for record in caplog.records if record.name == "gateway.access"}
    stuck = records[target.decode()]
    assert (stuck["status"], stuck["reason"]) == (200, "send_timeout") and stuck["bytes_out"] < ENDLESS


@pytest.mark.parametrize("target", [b"/api/spliced", b"/api/chunked"])
def test_a_client_that_keeps_reading_is_not_dropped(target: bytes) -> None:
    """Slower than the gateway could send, so that the gateway waits on it again and again, for twice the send
    timeout in all; but never for a whole send timeout at once."""
    rate = LARGE / 2.0  # bytes per second
    with scripted_upstream(respond_large) as upstream, edge(upstream.url, send_timeout=1.0) as address:
        with socket.create_connection(address, timeout=WAIT) as conn:
            conn.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\n\r\nGET /api/after HTTP/1.1\r\nHost: gw\r\n\r\n")
            received = bytearray()
            started = time.monotonic()
            while b"GET /api/after" not in received[-64:]:  # the second answer comes after the whole first
                piece = conn.recv(65536)
                assert piece, "the gateway closed the connection"
                received += piece
                time.sleep(max(0.0, started + len(received) / rate - time.monotonic()))
            time.sleep(1.5)  # idle, with nothing left to send: no send timeout runs, the connection stays
            conn.sendall(b"GET /api/after HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert read_response(conn).endswith(b"GET /api/after")
    assert received.startswith(b"HTTP/1.1 200") and received.count(b"b") >= LARGE
    assert not upstream.client_went_away.is_set()


def test_connections_over_the_cap_get_503(upstream: ScriptedServer) -> None:
    with edge(upstream.url, max_connections=4) as address:
        held = [socket.create_connection(address, timeout=WAIT) for _ in range(4)]
        try:
            for conn in held:
                wait_until(lambda conn=conn: accepted(os.getpid(), address[1], conn), "the server to accept them")
            over = exchange(address, b"GET /api/a HTTP/1.1\r\nHost: gw\r\n\r\n")
        finally:
            for conn in held:
                conn.close()
        deadline = time.monotonic() + WAIT
        while (after := httpx.get(f"http://{address[0]}:{address[1]}/api/a")).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert status_of(over) == 503
    assert after.status_code == 200


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def test_a_refused_request_is_logged_once_by_the_gateway_not_twice(
    upstream: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn's "Invalid HTTP request received." came beside the gateway's own line naming the refusal
    (issue 30): only the gateway's is left. Other uvicorn lines still come through."""
    collected = _Collected()
    with caplog.at_level(logging.INFO, logger="gateway.server"), edge(upstream.url) as address:
        for name in ("uvicorn", "gateway.server"):  # once uvicorn has configured its loggers
            logging.getLogger(name).addHandler(collected)
        try:
            answer = exchange(address, b"GET /api/a HTTP/1.1\r\nHost: gw\r\nContent-Length: x\r\n\r\n")
        finally:
            for name in ("uvicorn", "gateway.server"):
                logging.getLogger(name).removeHandler(collected)
    assert status_of(answer) == 400
    assert not [line for line in collected.lines if "Invalid HTTP request received" in line]
    assert [line for line in collected.lines if line.startswith("gateway.server: refused a request from")]
