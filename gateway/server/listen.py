"""The listening sockets: several on one address (SO_REUSEPORT), so that a busy worker still takes new
connections promptly.

uvloop takes one connection off a listening socket per turn of its loop. On a saturated core a turn lasts tens
of milliseconds, so a burst of new connections waited in the listen queue: wrk opening 128 at once saw its
last connections' first requests wait 1-2 s (bench/RESULTS.md). The kernel spreads new connections over
sockets that share a port, and each turn takes one from each.

SO_REUSEPORT would also let a second gateway of the same user join the port silently and take part of the
connections, so the address is first probed with an ordinary bind: a port in use is refused, as before.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
import uvloop

logger = logging.getLogger("gateway.server")

# Listening sockets per address: 128 new connections at once are all taken within two turns of the loop.
LISTENERS = 64


class ListenError(OSError):
    """The address cannot be listened on (in use, not ours); the message says which and why."""


def listening_sockets(config: uvicorn.Config, count: int = LISTENERS) -> list[socket.socket]:
    """`count` sockets bound to the config's host and port, or uvicorn's one socket where SO_REUSEPORT
    does not apply (a Unix socket, an inherited descriptor, a system without it)."""
    if config.uds is not None or config.fd is not None or not hasattr(socket, "SO_REUSEPORT"):
        return [config.bind_socket()]
    sockets = _bind(config.host, config.port, config.backlog, count)
    scheme = "https" if config.is_ssl else "http"
    logger.info("listening on %s://%s:%d (%d sockets)", scheme, config.host, sockets[0].getsockname()[1], count)
    return sockets


def _bind(host: str, port: int, backlog: int, count: int) -> list[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    requested = port
    sockets: list[socket.socket] = []
    try:
        if port:
            with socket.socket(family, socket.SOCK_STREAM) as probe:  # fails while anything listens there
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # port 0: the first socket's pick, for all of them
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ListenError(f"cannot listen on {host}:{requested}: {exc.strerror or exc}") from None
    return sockets


class ManyListenersLoop(uvloop.Loop):
    """uvloop, where a server asked for one host and port listens on LISTENERS sockets: the loop `uvicorn
    gateway.main:app` runs on (gateway.server.adopt), so that it takes bursts of connections as `python -m
    gateway` does. uvicorn creates its server this way when it is not handed sockets (one process)."""

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None, port: Any = None, **options: Any
    ) -> asyncio.AbstractServer | Listeners:
        if not _is_address(host) or not isinstance(port, int) or options.keys() - _PLAIN_OPTIONS:
            return await super().create_server(protocol_factory, host, port, **options)
        sockets = _bind(host, port, options.get("backlog", 100), LISTENERS)
        servers = []
        try:
            for sock in sockets:
                servers.append(await super().create_server(protocol_factory, sock=sock, **options))
        except BaseException:
            Listeners(servers).close()
            for sock in sockets[len(servers) :]:
                sock.close()
            raise
        return Listeners(servers)


# What uvicorn passes besides host and port: anything else (a family, reuse_port) gets uvloop's own server.
_PLAIN_OPTIONS = frozenset({"ssl", "backlog"})


def _is_address(host: object) -> bool:
    """An IP address (a name such as localhost may stand for several, which uvloop binds one by one)."""
    try:
        ipaddress.ip_address(host)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


class Listeners:
    """One server per listening socket, with what uvicorn uses of a server: its sockets, close, wait_closed."""

    def __init__(self, servers: list[asyncio.AbstractServer]) -> None:
        self._servers = servers

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(sock for server in self._servers for sock in getattr(server, "sockets", ()))

    def close(self) -> None:
        for server in self._servers:
            server.close()

    async def wait_closed(self) -> None:
        for server in self._servers:
            await server.wait_closed()
