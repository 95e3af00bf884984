"""The gateway's loop accepts through many descriptors of each listening socket, and closes them all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import cast

import pytest

from gateway.edge.listen import LISTENERS, ManyListenersLoop


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _descriptors_of(sock: socket.socket) -> int:
    """This process's descriptors for the socket `sock` is (one inode, however many dup(2) made)."""
    target = os.readlink(f"/proc/self/fd/{sock.fileno()}")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            count += os.readlink(f"/proc/self/fd/{fd}") == target
    return count


async def _echoes(port: int, count: int) -> None:
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
    for index, (reader, writer) in enumerate(streams):
        writer.write(b"%d\n" % index)
        assert await asyncio.wait_for(reader.readline(), 5) == b"%d\n" % index
        writer.close()


@pytest.mark.parametrize("given_socket", [False, True], ids=["host-and-port", "given-socket"])
def test_a_server_listens_through_many_descriptors_serves_and_closes_them_all(given_socket: bool) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        if given_socket:  # as uvicorn's worker processes, --fd and --reload hand it one
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            server = await loop.create_server(_Echo, sock=sock, backlog=128)
        else:
            server = await loop.create_server(_Echo, "127.0.0.1", 0, backlog=128)
        assert len(server.sockets) == 1
        listening = server.sockets[0]
        assert _descriptors_of(listening) == LISTENERS
        port = listening.getsockname()[1]
        await _echoes(port, 40)
        server.close()
        await server.wait_closed()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    with asyncio.Runner(loop_factory=ManyListenersLoop) as runner:
        runner.run(scenario())


def test_a_burst_of_connections_is_taken_within_a_few_turns_of_the_loop() -> None:
    """128 connections waiting at once: with one descriptor, uvloop takes one a turn (128 turns)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        accepted: list[int] = []
        turns = [0]

        class Counting(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.append(turns[0])

        def turn() -> None:
            turns[0] += 1
            if turns[0] < 1000:
                loop.call_soon(turn)

        server = await loop.create_server(Counting, "127.0.0.1", 0, backlog=256)
        port = server.sockets[0].getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(128)]
        loop.call_soon(turn)
        for _ in range(1000):  # bounded: as many turns as the counter runs
            if len(accepted) == len(clients):
                break
            await asyncio.sleep(0)
        for client in clients:
            client.close()
        server.close()
        await server.wait_closed()
        assert len(accepted) == 128
        assert max(accepted) - min(accepted) <= 4

    with asyncio.Runner(loop_factory=ManyListenersLoop) as runner:
        runner.run(scenario())
