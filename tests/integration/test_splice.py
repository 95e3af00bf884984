"""Long response bodies spliced from the upstream's socket to the client's (gateway.edge.splice), through a real
gateway under the edge protocol, with raw upstreams and raw clients on loopback."""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from starlette.middleware.gzip import GZipMiddleware

from gateway import create_app
from gateway.edge import cycle
from gateway.edge.splice import MIN_SPLICE_BYTES
from settings import LimitsSettings
from tests.conftest import settings_with
from tests.servers import Received, ScriptedServer, UpstreamHandler, scripted_upstream, serve_app

BODY = random.Random(7).randbytes(1024 * 1024 + 5)
PIECE = 128 * 1024
WAIT = 10.0  # seconds: the most a client here waits for a byte


def respond_long(handler: UpstreamHandler, request: Received) -> None:
    """BODY with a Content-Length, written in pieces so that the gateway waits on the upstream between them."""
    handler.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n" % len(BODY)
    )
    for start in range(0, len(BODY), PIECE):
        handler.write(BODY[start : start + PIECE])


@pytest.fixture
def spliced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte counts the edge was asked to splice (the gateway runs in this process, in a thread)."""
    counts: list[int] = []
    original = cycle.splice_body

    async def spy(source: Any, sink: int, count: int, sent: list[int], **options: Any) -> None:
        counts.append(count)
        await original(source, sink, count, sent, **options)

    monkeypatch.setattr(cycle, "splice_body", spy)
    return counts


@pytest.fixture
def upstream() -> Iterator[ScriptedServer]:
    with scripted_upstream(respond_long) as server:
        yield server


def gateway(upstream: ScriptedServer, route: dict[str, Any] | None = None, **sections: Any) -> Any:
    settings = settings_with({"prefix": "/", "upstreams": [upstream.url], **(route or {})}, **sections)
    return serve_app(create_app(settings), limits=LimitsSettings())


def open_client(url: str, receive_buffer: int | None = None) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(WAIT)
    sock.connect((host, int(port)))
    return sock


def read_response(sock: socket.socket, buffered: bytearray) -> tuple[bytes, bytes]:
    """One Content-Length response off `sock` (what is read past it stays in `buffered`): (head, body)."""
    while b"\r\n\r\n" not in buffered:
        buffered += _receive(sock)
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
    buffered[:] = rest
    while len(buffered) < length:
        buffered += _receive(sock)
    body = bytes(buffered[:length])
    del buffered[:length]
    return head, body


def read_until_closed(sock: socket.socket) -> bytes:
    received = bytearray()
    while piece := sock.recv(65536):
        received += piece
    return bytes(received)


def _receive(sock: socket.socket) -> bytes:
    piece = sock.recv(65536)
    if not piece:
        raise ConnectionError("the gateway closed the connection")
    return piece


def test_a_long_body_is_spliced_whole_and_both_connections_carry_on(
    upstream: ScriptedServer, spliced: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"), gateway(upstream) as url:
        with httpx.Client(base_url=url, timeout=WAIT) as client:
            answers = [client.get("/file") for _ in range(3)]
    assert [(answer.status_code, answer.content == BODY) for answer in answers] == [(200, True)] * 3
    assert len(spliced) == 3 and all(MIN_SPLICE_BYTES <= count <= len(BODY) for count in spliced)
    assert upstream.connections == 1  # the upstream connection went back to the pool after each splice
    records = [record.msg for record in caplog.records if record.name == "gateway.access"]
    assert [(record["status"], record["bytes_out"]) for record in records] == [(200, len(BODY))] * 3


def test_a_long_body_that_comes_with_its_head_is_relayed_and_the_upstream_connection_reused(
    spliced: list[int],
) -> None:
    body = BODY[: 2 * MIN_SPLICE_BYTES]

    def at_once(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    with scripted_upstream(at_once) as upstream, gateway(upstream) as url:
        with httpx.Client(base_url=url, timeout=WAIT) as client:
            answers = [client.get("/file") for _ in range(3)]
    assert [(answer.status_code, answer.content == body) for answer in answers] == [(200, True)] * 3
    assert upstream.connections == 1


@pytest.mark.parametrize("request_line", [b"GET /a HTTP/1.1\r\nConnection: close", b"GET /a HTTP/1.0"])
def test_a_connection_that_ends_with_the_response_closes_after_the_whole_spliced_body(
    upstream: ScriptedServer, spliced: list[int], request_line: bytes
) -> None:
    app = create_app(settings_with({"prefix": "/", "upstreams": [upstream.url]}))
    # An idle timeout far past the client's wait: only the end of the response can close the connection in time.
    with serve_app(app, limits=LimitsSettings(), timeout_keep_alive=60) as url, open_client(url) as sock:
        sock.sendall(request_line + b"\r\nHost: gw\r\n\r\n")
        received = read_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == BODY
    assert len(spliced) == 1


def test_a_client_that_reads_slowly_gets_the_whole_spliced_body(upstream: ScriptedServer, spliced: list[int]) -> None:
    with gateway(upstream) as url, open_client(url, receive_buffer=4096) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
        head, body = read_response(sock, bytearray())
    assert head.startswith(b"HTTP/1.1 200") and body == BODY
    assert len(spliced) == 1


def test_pipelined_requests_after_a_spliced_body_are_answered_in_order(spliced: list[int]) -> None:
    large = BODY * 8  # more than the kernel's socket buffers take: the second head waits in the server's

    def respond(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Target: %s\r\n\r\n" % (len(large), request.target))
        handler.write(large)

    with scripted_upstream(respond) as upstream, gateway(upstream) as url, open_client(url, 4096) as sock:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\nGET /two HTTP/1.1\r\nHost: gw\r\n\r\n")
        time.sleep(0.2)  # nothing read meanwhile: the connection fills up
        buffered = bytearray()
        answers = [read_response(sock, buffered) for _ in range(2)]
    assert [(b"x-target: /one" in answers[0][0].lower()), (b"x-target: /two" in answers[1][0].lower())] == [True] * 2
    assert [body == large for _, body in answers] == [True, True]
    assert len(spliced) == 2 and not buffered


def test_an_upstream_that_closes_mid_body_cuts_the_client_connection_and_the_next_request_works(
    spliced: list[int],
) -> None:
    def respond(handler: UpstreamHandler, request: Received) -> None:
        if request.target == b"/whole":
            respond_long(handler, request)
            return
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY[: 3 * PIECE])
        handler.server.close_after_response = True  # this connection ends after the partial body

    with scripted_upstream(respond) as upstream, gateway(upstream) as url:
        with open_client(url) as sock:
            sock.sendall(b"GET /cut HTTP/1.1\r\nHost: gw\r\n\r\n")
            received = read_until_closed(sock)
        upstream.close_after_response = False
        with httpx.Client(base_url=url, timeout=WAIT) as client:
            whole = client.get("/whole")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: %d" % len(BODY) in head.lower()
    assert len(body) < len(BODY) and BODY.startswith(body)  # closed short of its length: visibly incomplete
    assert whole.status_code == 200 and whole.content == BODY
    assert len(spliced) == 2


def test_an_upstream_that_stalls_mid_body_is_given_up_after_the_read_timeout(spliced: list[int]) -> None:
    release = threading.Event()

    def respond(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY[: 2 * PIECE])
        release.wait(WAIT)  # stalls until the test has seen the gateway give up (or for WAIT at most)

    with scripted_upstream(respond) as upstream, gateway(upstream, {"timeouts": {"read": 0.3}}) as url:
        with open_client(url) as sock:
            sock.sendall(b"GET /stall HTTP/1.1\r\nHost: gw\r\n\r\n")
            received = read_until_closed(sock)  # a gateway that waited on would run into the socket's timeout
        release.set()
    assert received.startswith(b"HTTP/1.1 200") and len(received.partition(b"\r\n\r\n")[2]) < len(BODY)
    assert len(spliced) == 1


def test_a_client_that_leaves_mid_body_frees_the_upstream_connection_and_is_logged_499(
    spliced: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    def respond(handler: UpstreamHandler, request: Received) -> None:
        if request.target == b"/after":
            respond_long(handler, request)
            return
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 * len(BODY)))
        for _ in range(64 * len(BODY) // PIECE):  # more than loopback buffers hold: the gateway must stop it
            handler.write(BODY[:PIECE])

    with caplog.at_level(logging.INFO, logger="gateway.access"):
        with scripted_upstream(respond) as upstream, gateway(upstream) as url:
            with open_client(url) as sock:
                sock.sendall(b"GET /leave HTTP/1.1\r\nHost: gw\r\n\r\n")
                _receive(sock)
            assert upstream.client_went_away.wait(WAIT)  # the gateway closed its upstream connection
            with httpx.Client(base_url=url, timeout=WAIT) as client:
                after = client.get("/after")
    assert after.status_code == 200 and after.content == BODY
    records = {record.msg["path"]: record.msg for record in caplog.records if record.name == "gateway.access"}
    assert records["/leave"]["status"] == 499 and records["/leave"]["bytes_out"] < 64 * len(BODY)
    assert len(spliced) == 2


def respond_chunked(handler: UpstreamHandler, request: Received) -> None:
    handler.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for start in range(0, len(BODY), PIECE):
        piece = BODY[start : start + PIECE]
        handler.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    handler.write(b"0\r\n\r\n")


def respond_short(handler: UpstreamHandler, request: Received) -> None:
    body = BODY[: MIN_SPLICE_BYTES - 1]
    handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    time.sleep(0.05)  # the head reaches the gateway alone: the whole body is still to come, yet too short
    handler.write(body)


class PassThrough:
    """A user's ASGI middleware wrapped around the gateway from outside: the edge cannot know what it does."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


USER_MIDDLEWARE = [{"factory": "starlette.middleware.gzip:GZipMiddleware"}]


@pytest.mark.parametrize(
    ("case", "route", "sections", "responder", "expected"),
    [
        ("off", {}, {"server": {"splice": False}}, respond_long, BODY),
        ("user middleware", {}, {"middleware": USER_MIDDLEWARE}, respond_long, BODY),
        ("route middleware", {"middleware": USER_MIDDLEWARE}, {}, respond_long, BODY),
        ("route cache", {"cache": {"enabled": True}}, {}, respond_long, BODY),
        ("chunked", {}, {}, respond_chunked, BODY),
        ("short", {}, {}, respond_short, BODY[: MIN_SPLICE_BYTES - 1]),
    ],
)
def test_bodies_go_through_python_where_splicing_is_not_safe_or_not_worth_it(
    spliced: list[int],
    case: str,
    route: dict[str, Any],
    sections: dict[str, Any],
    responder: Any,
    expected: bytes,
) -> None:
    with scripted_upstream(responder) as upstream, gateway(upstream, route, **sections) as url:
        answer = httpx.get(f"{url}/file", timeout=WAIT, headers={"accept-encoding": "identity"})
    assert answer.status_code == 200 and answer.content == expected
    assert spliced == []


def test_middleware_added_to_the_app_or_around_it_sees_every_body(upstream: ScriptedServer, spliced: list[int]) -> None:
    app = create_app(settings_with({"prefix": "/", "upstreams": [upstream.url]}))
    app.add_middleware(GZipMiddleware)
    with serve_app(app, limits=LimitsSettings()) as url:
        compressed = httpx.get(f"{url}/file", timeout=WAIT, headers={"accept-encoding": "gzip"})
    wrapped = PassThrough(create_app(settings_with({"prefix": "/", "upstreams": [upstream.url]})))
    with serve_app(wrapped, limits=LimitsSettings()) as url:
        plain = httpx.get(f"{url}/file", timeout=WAIT)
    assert compressed.headers["content-encoding"] == "gzip" and compressed.content == BODY  # httpx decodes it
    assert plain.status_code == 200 and plain.content == BODY
    assert spliced == []


def test_a_tls_edge_relays_long_bodies_without_splicing(
    upstream: ScriptedServer, spliced: list[int], tmp_path: Path
) -> None:
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(cert)
    certificate.private_key_pem.write_to_path(key)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    app = create_app(settings_with({"prefix": "/", "upstreams": [upstream.url]}))
    with serve_app(app, limits=LimitsSettings(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        answer = httpx.get(url.replace("http://", "https://") + "/file", timeout=WAIT, verify=context)
    assert answer.status_code == 200 and answer.content == BODY
    assert spliced == []


class SocketSource:
    """A SpliceSource over a socket that the test fills."""

    read_timeout = WAIT

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def took(self, count: int) -> None:
        pass

    def ended_early(self) -> Exception:
        return ConnectionError("the test's source closed early")

    def timed_out(self) -> Exception:
        return TimeoutError("the test's source stalled")


def test_a_splice_waits_until_what_the_server_buffered_has_left(spliced: list[int]) -> None:
    """Bytes written before the splice and still in the server's buffer go out first, in order."""
    buffered_part, spliced_part = BODY * 32, BODY[::-1]
    source, filler = socket.socketpair()
    source.setblocking(False)

    class App:
        def accepts_splice(self) -> bool:
            return True

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            length = b"%d" % (len(buffered_part) + len(spliced_part))
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
            await send({"type": "http.response.body", "body": buffered_part, "more_body": True})
            message = {"type": "gateway.response.splice", "source": SocketSource(source), "count": len(spliced_part)}
            await send(message)

    writer = threading.Thread(target=filler.sendall, args=(spliced_part,), daemon=True)
    writer.start()
    with source, filler, serve_app(App(), limits=LimitsSettings()) as url, open_client(url, 4096) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        time.sleep(0.2)  # nothing read meanwhile: most of the first part waits in the server's buffer
        _, body = read_response(sock, bytearray())
        writer.join(WAIT)
    assert body == buffered_part + spliced_part
    assert spliced == [len(spliced_part)]


def test_a_tls_upstream_relays_long_bodies_without_splicing(spliced: list[int], tmp_path: Path) -> None:
    """Bytes from a TLS upstream must be decrypted in Python: such a connection is never held for splicing."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "upstream.pem"))

    async def long_body(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"%d" % len(BODY))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})

    pem = str(tmp_path / "upstream.pem")
    with serve_app(long_body, ssl_certfile=pem, ssl_keyfile=pem, lifespan="off") as plain_url:
        upstream = plain_url.replace("http://", "https://")
        settings = settings_with({"prefix": "/", "upstreams": [upstream]}, client={"ca_file": str(tmp_path / "ca.pem")})
        with serve_app(create_app(settings), limits=LimitsSettings()) as url, httpx.Client(timeout=WAIT) as client:
            answers = [client.get(f"{url}/file") for _ in range(2)]
    assert [(answer.status_code, answer.content == BODY) for answer in answers] == [(200, True)] * 2
    assert spliced == []
