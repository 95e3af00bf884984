"""splice_body on its own, between real loopback TCP connections: exact counts, the errors it tells apart, and
the pipes it keeps."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator

import httpx
import pytest

from gateway.client.transport.connection import SplicedBody, UpstreamConnection
from gateway.edge import splice
from gateway.errors import ClientGone, ClientTooSlow

pytestmark = pytest.mark.anyio


class Source:
    def __init__(self, sock: socket.socket, read_timeout: float | None = 5.0) -> None:
        self._sock = sock
        self.read_timeout = read_timeout
        self.taken = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def took(self, count: int) -> None:
        self.taken += count

    def ended_early(self) -> Exception:
        return EOFError("ended early")

    def timed_out(self) -> Exception:
        return TimeoutError("timed out")


@pytest.fixture
def pairs() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """(upstream's end, gateway's source end, gateway's sink end, client's end), all on 127.0.0.1."""
    upstream, source = _tcp_pair()
    sink, client = _tcp_pair()
    for sock in (source, sink):
        sock.setblocking(False)
    yield upstream, source, sink, client
    for sock in (upstream, source, sink, client):
        sock.close()


@pytest.fixture(autouse=True)
def idle_pipes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """The module's idle pipes, empty at the start of each test; those left are closed after it."""
    pipes: list[tuple[int, int]] = []
    monkeypatch.setattr(splice, "_idle_pipes", pipes)
    yield pipes
    for pipe in pipes:
        for fd in pipe:
            os.close(fd)


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        connecting = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    return connecting, accepted


def _receive(sock: socket.socket, count: int) -> bytes:
    sock.settimeout(5)
    received = bytearray()
    while len(received) < count:
        received += sock.recv(count - len(received))
    return bytes(received)


async def test_exactly_the_count_moves_and_what_follows_stays_in_the_source(
    pairs: tuple[socket.socket, ...], idle_pipes: list[tuple[int, int]]
) -> None:
    upstream, source_end, sink, client = pairs
    body = bytes(range(256)) * 1024
    upstream.sendall(body + b"NEXT")
    source, sent = Source(source_end), [0]
    await splice.splice_body(source, sink.fileno(), len(body), sent)
    assert _receive(client, len(body)) == body
    assert (source.taken, sent[0]) == (len(body), len(body))
    assert source_end.recv(16) == b"NEXT"
    assert len(idle_pipes) == 1  # emptied, so kept for the next body


async def test_an_upstream_that_closes_early_raises_its_error(pairs: tuple[socket.socket, ...]) -> None:
    upstream, source_end, sink, _ = pairs
    upstream.sendall(b"x" * 1000)
    upstream.close()
    with pytest.raises(EOFError):
        await splice.splice_body(Source(source_end), sink.fileno(), 5000, [0])


async def test_an_upstream_that_stalls_raises_its_timeout(pairs: tuple[socket.socket, ...]) -> None:
    upstream, source_end, sink, _ = pairs
    upstream.sendall(b"x" * 1000)
    with pytest.raises(TimeoutError):
        await splice.splice_body(Source(source_end, read_timeout=0.2), sink.fileno(), 5000, [0])


async def test_a_client_that_is_gone_raises_client_gone_and_the_pipe_with_bytes_left_is_dropped(
    pairs: tuple[socket.socket, ...], idle_pipes: list[tuple[int, int]]
) -> None:
    upstream, source_end, sink, client = pairs
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # with a reset
    await asyncio.sleep(0.05)
    upstream.sendall(b"x" * 100_000)
    with pytest.raises(ClientGone):
        await splice.splice_body(Source(source_end), sink.fileno(), 100_000, [0])
    assert idle_pipes == []  # the pipe it used still held bytes: closed, not kept


async def test_a_client_that_takes_nothing_for_the_sink_timeout_raises_client_too_slow(
    pairs: tuple[socket.socket, ...],
) -> None:
    upstream, source_end, sink, client = pairs
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = 16 * 1024 * 1024  # far more than the loopback buffers between sink and client hold
    feeding = asyncio.get_running_loop().run_in_executor(None, upstream.sendall, b"x" * body)
    sent = [0]
    with pytest.raises(ClientTooSlow):
        await splice.splice_body(Source(source_end), sink.fileno(), body, sent, sink_timeout=0.2)
    assert 0 < sent[0] < body
    upstream.shutdown(socket.SHUT_RDWR)  # ends the feeding thread's sendall
    with contextlib.suppress(OSError):
        await feeding


async def test_a_connection_that_is_closing_offers_no_descriptor() -> None:
    """The number of a closed connection may already be another's: the splice fails instead of using it."""
    loop = asyncio.get_running_loop()
    upstream, gateway_end = _tcp_pair()
    transport, conn = await loop.create_connection(lambda: UpstreamConnection(lambda _: None), sock=gateway_end)
    body = SplicedBody(conn, gateway_end.fileno(), [], 100_000, 5.0)
    assert body.fileno() == gateway_end.fileno()
    transport.close()
    with pytest.raises(httpx.ReadError):
        body.fileno()
    assert isinstance(conn.error, httpx.ReadError)
    upstream.close()


async def test_a_source_that_cannot_give_its_descriptor_leaves_no_descriptor_open(
    pairs: tuple[socket.socket, ...], idle_pipes: list[tuple[int, int]]
) -> None:
    _, source_end, sink, _ = pairs

    class Closing(Source):
        def fileno(self) -> int:
            raise ConnectionError("upstream connection lost")

    open_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ConnectionError):
        await splice.splice_body(Closing(source_end), sink.fileno(), 100_000, [0])
    assert len(idle_pipes) == 1  # the pipe it took went back, empty
    for pipe in idle_pipes:  # so that only what the call itself leaked is counted below
        for fd in pipe:
            os.close(fd)
    idle_pipes.clear()
    assert len(os.listdir("/proc/self/fd")) == open_before
