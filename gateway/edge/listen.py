"""The event loop the gateway serves on: uvloop, with every listening socket drained by many descriptors, so that
a busy worker still takes new connections promptly.

uvloop takes one connection off a listening descriptor per turn of its loop. On a saturated core a turn lasts
tens of milliseconds, so a burst of new connections waited in the listen queue: wrk opening 128 at once saw its
last connections' first requests wait 1-2 s (bench/RESULTS.md). Descriptors made by dup(2) share the socket and
its one queue, and each turn takes a connection through each of them.

`python -m gateway` runs on this loop (`server_options`), and so does `uvicorn gateway.main:app` unless `--loop`
chooses another (gateway.edge.adopt). It applies to whatever socket uvicorn listens on: one it binds, one bound
for its worker processes, one inherited with `--fd`, a Unix socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

import uvloop

# Descriptors per listening socket: 128 new connections at once are all taken within two turns of the loop.
LISTENERS = 64


class ManyListenersLoop(uvloop.Loop):
    """uvloop, whose servers accept through LISTENERS descriptors of each socket they listen on."""

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None, port: Any = None, **options: Any
    ) -> Listeners:
        server = await super().create_server(protocol_factory, host, port, **options)
        listeners = Listeners(server)
        same: dict[str, Any] = {name: options[name] for name in ("ssl", "backlog") if name in options}
        try:
            for sock in getattr(server, "sockets", ()):  # an asyncio.Server's (AbstractServer does not say)
                for _ in range(LISTENERS - 1):
                    listeners.add(await self._serve_duplicate(protocol_factory, sock, same))
        except BaseException:
            listeners.close()
            raise
        return listeners

    async def _serve_duplicate(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], sock: socket.socket, options: dict[str, Any]
    ) -> asyncio.AbstractServer:
        duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        try:
            return await super().create_server(protocol_factory, sock=duplicate, **options)
        except BaseException:
            duplicate.close()
            raise


LOOP = f"{ManyListenersLoop.__module__}:{ManyListenersLoop.__qualname__}"  # as uvicorn's `loop` option names it


class Listeners:
    """A server and the servers on its duplicate descriptors, with what uvicorn uses of a server: its sockets,
    close and wait_closed."""

    def __init__(self, server: asyncio.AbstractServer) -> None:
        self._server = server
        self._all = [server]

    def add(self, duplicate: asyncio.AbstractServer) -> None:
        self._all.append(duplicate)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The server's own sockets (each listens through LISTENERS descriptors)."""
        return tuple(getattr(self._server, "sockets", ()))

    def close(self) -> None:
        for server in self._all:
            server.close()

    async def wait_closed(self) -> None:
        for server in self._all:
            await server.wait_closed()
