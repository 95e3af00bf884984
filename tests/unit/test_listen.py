"""Several listening sockets share one address, and together they take every connection; under plain uvicorn
the gateway's event loop listens that way."""

from __future__ import annotations

import asyncio
import select
import socket
from typing import cast

import pytest
import uvicorn

from gateway.server.listen import LISTENERS, ListenError, Listeners, ManyListenersLoop, listening_sockets


def test_the_sockets_share_one_port_and_all_of_them_accept() -> None:
    sockets = listening_sockets(uvicorn.Config("gateway.main:app", host="127.0.0.1", port=0), count=8)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(sockets) == 8 and len(ports) == 1
        port = ports.pop()
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
        accepted = 0
        for _ in range(200):  # bounded: each pass takes what is waiting
            if accepted == len(clients):
                break
            ready, _, _ = select.select(sockets, [], [], 1)
            for sock in ready:
                connection, _ = sock.accept()
                connection.close()
                accepted += 1
        assert accepted == len(clients)
        for client in clients:
            client.close()
    finally:
        for sock in sockets:
            sock.close()


def test_an_address_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
            listening_sockets(uvicorn.Config("gateway.main:app", host="127.0.0.1", port=port), count=4)


def test_a_second_gateway_cannot_join_the_port() -> None:
    first = listening_sockets(uvicorn.Config("gateway.main:app", host="127.0.0.1", port=0), count=4)
    try:
        port = first[0].getsockname()[1]
        with pytest.raises(ListenError, match="in use"):
            listening_sockets(uvicorn.Config("gateway.main:app", host="127.0.0.1", port=port), count=4)
    finally:
        for sock in first:
            sock.close()


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def test_the_loop_serves_a_host_and_port_on_many_sockets_and_closes_them_all() -> None:
    async def scenario() -> None:
        server = await asyncio.get_running_loop().create_server(_Echo, "127.0.0.1", 0, backlog=128)
        sockets = server.sockets
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(sockets) == LISTENERS and len(ports) == 1
        port = ports.pop()
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        for index, (reader, writer) in enumerate(streams):
            writer.write(b"%d\n" % index)
            assert await asyncio.wait_for(reader.readline(), 5) == b"%d\n" % index
            writer.close()
        server.close()
        await server.wait_closed()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    with asyncio.Runner(loop_factory=ManyListenersLoop) as runner:
        runner.run(scenario())


def test_the_loop_leaves_a_given_socket_to_uvloop() -> None:
    async def scenario() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            server = await asyncio.get_running_loop().create_server(_Echo, sock=sock)
            assert len(server.sockets) == 1
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=ManyListenersLoop) as runner:
        runner.run(scenario())


def test_the_loop_leaves_a_host_name_to_uvloop() -> None:
    async def scenario() -> None:
        server = await asyncio.get_running_loop().create_server(_Echo, "localhost", 0)
        assert not isinstance(server, Listeners)  # a name may stand for several addresses, bound one by one
        server.close()
        await server.wait_closed()

    with asyncio.Runner(loop_factory=ManyListenersLoop) as runner:
        runner.run(scenario())
