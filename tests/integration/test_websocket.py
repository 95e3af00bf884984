"""WebSocket routes with a real client, a real gateway and a real echo upstream, all on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from gateway import create_app
from settings import LimitsSettings
from tests.conftest import settings_with
from tests.servers import WAIT, gateway_process, read_to_close, serve_app

MEBIBYTE = b"m" * (1 << 20)
STALL = 3.0  # seconds a stalled side stops reading
BUDGET_KIB = 64 * 1024  # the gateway may grow by less than 64 MiB while relaying 200 MiB


async def echo(connection: ServerConnection) -> None:
    """Echoes messages; `close:<code>:<reason>` makes it close; `die` drops the TCP connection."""
    try:
        async for message in connection:
            if message == "die":
                connection.transport.abort()
                return
            if isinstance(message, str) and message.startswith("close:"):
                _, code, reason = message.split(":", 2)
                await connection.close(int(code), reason)
                return
            if isinstance(message, str) and message.startswith("big:"):
                await connection.send(b"y" * int(message[4:]))
                continue
            if isinstance(message, str) and message.startswith("flood:"):  # n messages of 1 MiB, at once
                for _ in range(int(message[6:])):
                    await connection.send(MEBIBYTE)
                continue
            if isinstance(message, str) and message.startswith("sink:"):  # stall 3 s, then read n messages
                await asyncio.sleep(STALL)
                for _ in range(int(message[5:])):
                    await connection.recv()
                await connection.send(f"got {message[5:]}")
                continue
            if message == "whoami":
                request = connection.request
                assert request is not None
                await connection.send(
                    f"{request.path} {request.headers.get('cookie')} {request.headers.get('x-forwarded-for')}"
                )
                continue
            await connection.send(message)
    except ConnectionClosed:
        connection.server_closed_with = connection.close_code  # type: ignore[attr-defined]


def guard(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.startswith("/private"):
        return connection.respond(403, "no\n")
    return None


@contextlib.contextmanager
def echo_upstream(tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, list[int | None]]]:
    """A websockets server in its own thread and loop; yields its URL and the close codes it saw."""
    ready = threading.Event()
    stop: list[asyncio.Future[None]] = []
    codes: list[int | None] = []
    url: list[str] = []

    async def handler(connection: ServerConnection) -> None:
        await echo(connection)
        codes.append(connection.close_code)

    async def main() -> None:
        async with serve(
            handler,
            "127.0.0.1",
            0,
            ssl=tls,
            process_request=guard,
            select_subprotocol=lambda c, offered: "v2.chat" if "v2.chat" in offered else None,
            max_size=None,
        ) as server:
            port = server.sockets[0].getsockname()[1]
            url.append(f"http://127.0.0.1:{port}")
            stop.append(asyncio.get_running_loop().create_future())
            ready.set()
            await stop[0]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield url[0], codes
    finally:
        loop.call_soon_threadsafe(stop[0].set_result, None)
        thread.join(10)


@contextlib.contextmanager
def gateway_to(
    upstream: str, client: dict[str, str] | None = None, limits: LimitsSettings | None = None, **route: object
) -> Iterator[str]:
    """The gateway with one WebSocket route; with `limits`, served as `python -m gateway` serves (the edge)."""
    settings = settings_with(
        {"prefix": "/ws", "upstreams": [upstream], "strip_prefix": True, **route}, client=client or {}
    )
    with serve_app(create_app(settings), limits=limits) as url:
        yield url.replace("http://", "ws://")


def run(coroutine: object) -> object:
    return asyncio.run(asyncio.wait_for(coroutine, 30))  # type: ignore[arg-type]


def test_text_binary_large_and_ordered_messages() -> None:
    async def session(url: str) -> None:
        async with connect(
            url + "/ws/chat?room=1", max_size=None, compression=None, additional_headers={"Cookie": "sid=abc"}
        ) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01binary")
            assert await ws.recv() == b"\x00\x01binary"
            big = bytes(range(256)) * (16 * 4096)  # 16 MiB
            await ws.send(big)
            assert await ws.recv() == big
            for index in range(1000):
                await ws.send(f"m{index}")
            assert [await ws.recv() for _ in range(1000)] == [f"m{index}" for index in range(1000)]
            await ws.send("whoami")
            assert await ws.recv() == "/chat?room=1 sid=abc 127.0.0.1"

    with echo_upstream() as (upstream, _), gateway_to(upstream) as url:
        run(session(url))


def test_subprotocol_is_negotiated_through_the_gateway() -> None:
    async def session(url: str) -> str | None:
        async with connect(url + "/ws/", subprotocols=["v1.chat", "v2.chat"]) as ws:
            return ws.subprotocol

    with echo_upstream() as (upstream, _), gateway_to(upstream) as url:
        assert run(session(url)) == "v2.chat"


def test_close_codes_pass_both_ways() -> None:
    async def upstream_closes(url: str) -> tuple[int | None, str | None]:
        async with connect(url + "/ws/") as ws:
            await ws.send("close:4001:bye from upstream")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason

    async def client_closes(url: str) -> None:
        async with connect(url + "/ws/") as ws:
            await ws.close(4002, "bye from client")

    with echo_upstream() as (upstream, codes), gateway_to(upstream) as url:
        assert run(upstream_closes(url)) == (4001, "bye from upstream")
        run(client_closes(url))
        deadline = time.monotonic() + 5
        while 4002 not in codes and time.monotonic() < deadline:  # the upstream records it as it closes
            time.sleep(0.02)
    assert 4002 in codes


async def handshake_status(url: str) -> int:
    """The HTTP status a refused WebSocket handshake was answered with."""
    return (await refused_handshake(url)).status_code


async def refused_handshake(url: str) -> Response:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    return refused.value.response


def test_upstream_refusal_reaches_the_client_as_http() -> None:
    with echo_upstream() as (upstream, _), gateway_to(upstream) as url:
        assert run(handshake_status(url + "/ws/private")) == 403


def test_upstream_dying_closes_the_client_with_1011() -> None:
    async def session(url: str) -> int | None:
        async with connect(url + "/ws/") as ws:
            await ws.send("die")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    with echo_upstream() as (upstream, _), gateway_to(upstream) as url:
        assert run(session(url)) == 1011


def test_unreachable_upstream_is_a_502_handshake_answer() -> None:
    with gateway_to("http://127.0.0.1:9") as url:
        assert run(handshake_status(url + "/ws/")) == 502


def test_idle_sessions_are_closed_and_oversized_messages_refused() -> None:
    async def idle(url: str) -> tuple[int | None, str | None]:
        async with connect(url + "/ws/") as ws:
            await ws.send("ping-pong keeps nothing alive here")
            await ws.recv()
            with pytest.raises(ConnectionClosed):
                await ws.recv()  # nothing more is sent: the gateway closes after its idle timeout
            return ws.close_code, ws.close_reason

    async def oversized(url: str, first: str | bytes) -> int | None:
        async with connect(url + "/ws/", max_size=None) as ws:
            await ws.send(first)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    with echo_upstream() as (upstream, _):
        with gateway_to(upstream, websocket={"idle_timeout": 0.5}) as url:
            assert run(idle(url)) == (1001, "idle")
        with gateway_to(upstream, websocket={"max_message_bytes": 1024}) as url:
            assert run(oversized(url, b"x" * 2048)) == 1009  # too big from the client
            assert run(oversized(url, "big:2048")) == 1009  # too big from the upstream


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout_and_its_upstream_session_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The upstream floods a client that takes nothing: without the send timeout, both sessions would stay open
    for as long as the client's TCP connection lives (the idle timeout's close frame cannot be sent either)."""
    caplog.set_level(logging.INFO)
    with echo_upstream() as (upstream, codes):
        with gateway_to(upstream, limits=LimitsSettings(send_timeout=0.5)) as url:
            host, port = url.removeprefix("ws://").split(":")
            with socket.create_connection((host, int(port)), timeout=WAIT) as client:
                client.sendall(HANDSHAKE % host.encode())
                assert client.recv(4096).startswith(b"HTTP/1.1 101 ")
                client.sendall(masked_text_frame(b"flood:64"))  # 64 MiB, of which the client reads nothing
                wait_for(lambda: bool(codes), 10)  # the client's connection stays open meanwhile
                closed = list(codes)
    assert closed, "the upstream session is still open 10 s after the client stopped reading"
    [session] = access_records(caplog)
    assert (session["status"], session["reason"]) == (101, "send_timeout")
    assert session["bytes_out"] < 64 << 20


def test_a_client_closing_after_a_stall_closes_the_upstream_session_at_once() -> None:
    """While the client stalled, the upstream's messages filled the gateway's queue; once the client has closed,
    they are dropped, so that the upstream's close frame behind them is read at once instead of the closing
    handshake waiting out the library's close timeout (10 s)."""
    with echo_upstream() as (upstream, codes), gateway_to(upstream) as url:
        host, port = url.removeprefix("ws://").split(":")
        with socket.create_connection((host, int(port)), timeout=WAIT) as client:
            client.sendall(HANDSHAKE % host.encode())
            assert client.recv(4096).startswith(b"HTTP/1.1 101 ")
            client.sendall(masked_text_frame(b"flood:64"))
            time.sleep(1)  # reading nothing meanwhile
            client.sendall(masked_frame(0x8, (4000).to_bytes(2, "big") + b"enough"))
            read_to_close(client)  # what was buffered for it, the close frame among it
        wait_for(lambda: bool(codes), CLOSE_TIMEOUT / 2)
        closed = list(codes)
    assert closed == [4000], "the upstream session was not closed before the close timeout could pass"


CLOSE_TIMEOUT = 10.0  # the websockets library's default: how long a closing handshake may take


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    """Until `condition` holds, for `seconds` at most."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


HANDSHAKE = (
    b"GET /ws/ HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def masked_text_frame(payload: bytes) -> bytes:
    return masked_frame(0x1, payload)


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client's frame (RFC 6455 5.2) of under 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_wss_upstream_verified_against_the_configured_ca(tmp_path: Path) -> None:
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)

    async def session(url: str) -> str:
        async with connect(url + "/ws/") as ws:
            await ws.send("over tls")
            return str(await ws.recv())

    with echo_upstream(server_context) as (upstream, _):
        secure = "https://localhost:" + upstream.rsplit(":", 1)[1]
        with gateway_to(secure, client={"ca_file": str(tmp_path / "ca.pem")}) as url:
            assert run(session(url)) == "over tls"
        with gateway_to(secure) as url:  # the system CAs do not know this one: refused, never downgraded
            assert run(handshake_status(url + "/ws/")) == 502


def test_sessions_pass_the_same_rate_limit_ip_filter_and_access_log_as_http(caplog: pytest.LogCaptureFixture) -> None:
    async def session(url: str) -> None:
        async with connect(url + "/ws/room") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00" * 10)
            assert await ws.recv() == b"\x00" * 10

    limited = {"rate_limit": [{"name": "handshakes", "rate": 0.001, "burst": 1}]}
    with echo_upstream() as (upstream, _), caplog.at_level(logging.INFO, logger="gateway.access"):
        with gateway_to(upstream, **limited) as url:
            run(session(url))
            over_limit = run(refused_handshake(url + "/ws/room"))
        with gateway_to(upstream, ip_filter={"deny": ["127.0.0.0/8"]}) as url:
            filtered = run(handshake_status(url + "/ws/room"))
        deadline = time.monotonic() + 5
        while len(access_records(caplog)) < 3 and time.monotonic() < deadline:  # written as each session ends
            time.sleep(0.02)
    assert isinstance(over_limit, Response)
    assert over_limit.status_code == 429 and over_limit.headers["retry-after"]
    assert filtered == 403
    by_status = {record["status"]: record for record in access_records(caplog)}
    assert set(by_status) == {101, 429, 403}
    accepted = by_status[101]
    assert (accepted["method"], accepted["path"], accepted["route"]) == ("GET", "/ws/room", "/ws")
    assert accepted["upstream"] == upstream and (accepted["bytes_in"], accepted["bytes_out"]) == (15, 15)
    assert (by_status[429]["reason"], by_status[403]["reason"]) == ("rate_limit", "ip_filter")


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [record.msg for record in caplog.records if record.name == "gateway.access"]  # type: ignore[misc]


@pytest.mark.slow
def test_200_mib_each_way_past_a_stalled_reader_keeps_gateway_memory_bounded() -> None:
    """The client stalls while the upstream floods it, then the upstream stalls while the client floods it."""

    async def download(url: str) -> int:
        async with connect(url + "/ws/", max_size=2 << 20, max_queue=1) as ws:
            await ws.send("flood:200")
            await asyncio.sleep(STALL)  # not reading: back-pressure must reach the upstream
            return sum([len(await ws.recv()) for _ in range(200)])  # type: ignore[arg-type]

    async def upload(url: str) -> str | bytes:
        async with connect(url + "/ws/", max_size=2 << 20) as ws:
            # Offered by default, refused: a few KiB of deflated frames could inflate to 200 MiB in one read.
            assert ws.response is not None and "sec-websocket-extensions" not in ws.response.headers
            await ws.send("sink:200")
            for _ in range(200):
                await ws.send(MEBIBYTE)  # waits whenever the stalled upstream's side is full
            return await ws.recv()

    with echo_upstream() as (upstream, _):
        routes = [{"prefix": "/ws", "upstreams": [upstream], "strip_prefix": True}]
        with gateway_process({"GATEWAY_ROUTES": json.dumps(routes)}) as gateway:
            url = gateway.url.replace("http://", "ws://")
            before = gateway.rss_kib()
            received = run(download(url))
            after_download = gateway.peak_rss_kib() - before
            answer = run(upload(url))
            growth = gateway.peak_rss_kib() - before
    assert received == 200 << 20
    assert answer == "got 200"
    assert after_download < BUDGET_KIB, f"gateway grew by {after_download} KiB relaying to a stalled client"
    assert growth < BUDGET_KIB, f"gateway grew by {growth} KiB relaying to a stalled upstream"
