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

import logging
import socket

import uvicorn

logger = logging.getLogger("gateway.server")

# Listening sockets per address: 128 new connections at once are all taken within two turns of the loop.
LISTENERS = 64


class ListenError(Exception):
    """The address cannot be listened on (in use, not ours); the message says which and why."""


def listening_sockets(config: uvicorn.Config, count: int = LISTENERS) -> list[socket.socket]:
    """`count` sockets bound to the config's host and port, or uvicorn's one socket where SO_REUSEPORT
    does not apply (a Unix socket, an inherited descriptor, a system without it)."""
    if config.uds is not None or config.fd is not None or not hasattr(socket, "SO_REUSEPORT"):
        return [config.bind_socket()]
    family = socket.AF_INET6 if config.host and ":" in config.host else socket.AF_INET
    port = config.port
    sockets: list[socket.socket] = []
    try:
        if port:
            with socket.socket(family, socket.SOCK_STREAM) as probe:  # fails while anything listens there
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((config.host, port))
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((config.host, port))
            port = sock.getsockname()[1]  # port 0: the first socket's pick, for all of them
            sock.listen(config.backlog)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ListenError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    scheme = "https" if config.is_ssl else "http"
    logger.info("listening on %s://%s:%d (%d sockets)", scheme, config.host, port, len(sockets))
    return sockets
