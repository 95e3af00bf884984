"""Several listening sockets share one address, and together they take every connection."""

from __future__ import annotations

import select
import socket

import pytest
import uvicorn

from gateway.server.listen import ListenError, listening_sockets


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
