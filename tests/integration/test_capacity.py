"""Bounded memory for huge bodies with stalled readers, and a pool that does not queue 500 clients."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from gateway import create_app
from tests.conftest import settings_with
from tests.servers import Received, UpstreamHandler, gateway_process, scripted_upstream, serve_app

MIB = 1024 * 1024
SIZE = 200 * MIB
BUDGET_KIB = 64 * 1024  # the gateway may grow by less than 64 MiB while relaying 200 MiB


def routes_to(url: str) -> dict[str, str]:
    return {"GATEWAY_ROUTES": json.dumps([{"prefix": "/", "upstreams": [url], "max_body_bytes": None}])}


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_response(conn: socket.socket, *, stall_after: int = 0, stall: float = 0.0) -> tuple[bytes, int]:
    """Read one Content-Length response; optionally stop reading for `stall` seconds after `stall_after` bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body_start = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    received = len(body_start)
    stalled = stall == 0
    while received < length:
        if not stalled and received >= stall_after:
            time.sleep(stall)
            stalled = True
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
    return head, received


@pytest.mark.slow
def test_200_mib_download_to_a_stalled_client_keeps_memory_bounded() -> None:
    block = b"d" * MIB

    def big(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE)
        for _ in range(SIZE // MIB):
            handler.wfile.write(block)

    with scripted_upstream(big) as upstream, gateway_process(routes_to(upstream.url)) as gateway:
        before = gateway.rss_kib()
        with connect(gateway.url) as conn:
            conn.sendall(b"GET /big HTTP/1.1\r\nHost: gw\r\n\r\n")
            head, received = read_response(conn, stall_after=MIB, stall=3.0)
        growth = gateway.peak_rss_kib() - before
    assert head.startswith(b"HTTP/1.1 200")
    assert received == SIZE
    assert growth < BUDGET_KIB, f"gateway grew by {growth} KiB"


@pytest.mark.slow
def test_200_mib_upload_to_a_stalled_upstream_keeps_memory_bounded() -> None:
    def slow_sink(handler: UpstreamHandler, request: Received) -> None:
        time.sleep(3.0)  # the upstream stalls before reading anything
        remaining = int(request.header(b"content-length")[0])
        while remaining:
            remaining -= len(handler.rfile.read(min(remaining, MIB)))
        body = b"%d" % int(request.header(b"content-length")[0])
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    with scripted_upstream(slow_sink) as upstream, gateway_process(routes_to(upstream.url)) as gateway:
        upstream.read_body = False
        before = gateway.rss_kib()
        block = b"u" * MIB
        with connect(gateway.url) as conn:
            conn.sendall(b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % SIZE)
            for _ in range(SIZE // MIB):
                conn.sendall(block)
            head, _ = read_response(conn)
            tail = conn.recv(64)
        growth = gateway.peak_rss_kib() - before
    assert head.startswith(b"HTTP/1.1 200")
    assert tail == b"%d" % SIZE or tail == b""
    assert growth < BUDGET_KIB, f"gateway grew by {growth} KiB"


def test_500_concurrent_clients_are_all_in_flight_upstream_at_once() -> None:
    """Each upstream handler waits until all 500 requests have arrived; a pool of 100 would never get there."""
    clients = 500
    barrier = threading.Barrier(clients, timeout=60)

    def gathered(handler: UpstreamHandler, request: Received) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            handler.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            return
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def one(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        return answer.split(b"\r\n")[0]

    async def crowd(port: int) -> list[bytes]:
        return await asyncio.wait_for(asyncio.gather(*(one(port) for _ in range(clients))), 90)

    with scripted_upstream(gathered) as upstream:
        settings = settings_with({"prefix": "/", "upstreams": [upstream.url], "timeouts": {"read": 90}})
        with serve_app(create_app(settings), backlog=2048) as url:
            statuses = asyncio.run(crowd(int(url.rsplit(":", 1)[1])))
    assert statuses == [b"HTTP/1.1 200 OK"] * clients
    assert upstream.connections == clients
