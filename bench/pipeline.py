"""Python CPU per proxied request along the whole path, with no sockets: the edge protocol parses the
request, the app runs its middleware and relays through the shared client and RelayTransport, and the
answer is written back, all on uvloop, over in-memory transports.

    python -m bench.pipeline [--requests 20000] [--rounds 5] [--features bare,default] [--body BYTES] [--upload BYTES]

The access log (in `default`) is written to /dev/null by its usual thread, whose CPU counts too. What it
leaves out is the kernel (socket reads and writes, epoll), so it is the steady, low-noise figure to
compare code changes by; `python -m bench.run` is the one under real load. Interleaved rounds, median shown.
`--body` sets the size of the upstream's response body (18 bytes by default); a larger one reaches the gateway
in pieces of READ_SIZE, each in its own loop turn, as uvloop reads a socket. `--upload` makes every request a
POST with a body of that many bytes, arriving with its head in one read (as `strace` shows for wrk's 64 KiB
POST).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from unittest import mock

import uvloop
from uvicorn.server import ServerState

from bench.protocol import MemoryTransport
from gateway import create_app
from gateway.client.transport.connection import UpstreamConnection
from gateway.client.transport.pool import OriginPool, _State
from gateway.edge import EdgeProtocol, GatewayConfig, server_options
from gateway.ops.logs import configure_logging
from settings import AccessLogSettings, GatewaySettings

REQUEST = (
    b"GET /api/users?page=2 HTTP/1.1\r\nHost: gateway.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    b"Accept: application/json\r\nAccept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Cookie: session=abcdef0123456789\r\nConnection: keep-alive\r\n\r\n"
)
UPLOAD_HEAD = (
    b"POST /api/upload HTTP/1.1\r\nHost: gateway.example\r\nUser-Agent: wrk\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
)
BODY_END = b"hello from origin\n"  # how every body ends, so that a client sees where an answer ends
READ_SIZE = 256_000  # what uvloop reads from a socket at most


def upstream_response(body_size: int) -> tuple[bytes, ...]:
    """What nginx answers (its headers, verbatim shape), in the pieces the gateway would read it in."""
    body = b"o" * max(body_size - len(BODY_END), 0) + BODY_END
    now = email.utils.formatdate(usegmt=True).encode()  # fresh for the cache (max-age counts from Date)
    response = (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: %s\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: keep-alive\r\n"
        b"Cache-Control: max-age=3600\r\n\r\n%s" % (now, len(body), body)
    )
    return tuple(response[start : start + READ_SIZE] for start in range(0, len(response), READ_SIZE))


# The one route every request takes; the upstream address is never dialled (connections are in memory).
ROUTE: dict[str, Any] = {"prefix": "/api", "upstreams": ["http://127.0.0.1:9"]}
FEATURES: dict[str, dict[str, Any]] = {
    "bare": {"access_log": {"enabled": False}},
    "no-metrics": {"access_log": {"enabled": False}, "metrics": {"enabled": False}},
    "default": {},
    # the access log off and the route's cache on: every request after the first is a hit
    "cache": {
        "access_log": {"enabled": False},
        "routes": [{**ROUTE, "cache": {"enabled": True}}],
    },
}


class EchoingUpstream(MemoryTransport):
    """An upstream connection that answers each complete request (its head, then `upload` bytes of body) at
    once (from the next loop turn on, a piece per turn)."""

    def __init__(self, protocol: UpstreamConnection, response: tuple[bytes, ...], upload: int) -> None:
        super().__init__()
        self._protocol = protocol
        self._response = response
        self._upload = upload
        self._body_left = 0
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        if self._body_left:
            self._body_left -= len(data)
        elif bytes(data).endswith(b"\r\n\r\n"):  # the relay writes a head as a piece of its own
            self._body_left = self._upload
        else:
            return
        if not self._body_left:
            self._loop.call_soon(self._answer, 0)

    def writelines(self, parts: Iterable[bytes | bytearray | memoryview]) -> None:
        for part in parts:  # as uvloop does (one writev): asyncio's default would join them first, a copy
            self.write(part)

    def _answer(self, index: int) -> None:
        self._protocol.data_received(self._response[index])
        if index + 1 < len(self._response):
            self._loop.call_soon(self._answer, index + 1)


def memory_opener(
    response: tuple[bytes, ...], upload: int = 0
) -> Callable[[OriginPool, float | None], Awaitable[UpstreamConnection]]:
    """OriginPool._open, with in-memory upstreams that answer `response` to requests with `upload`-byte bodies."""

    async def open_in_memory(pool: OriginPool, timeout: float | None) -> UpstreamConnection:
        conn = UpstreamConnection(pool._lost)
        conn.connection_made(EchoingUpstream(conn, response, upload))
        pool._state[conn] = _State.ACTIVE
        return conn

    return open_in_memory


class LoopingClient(MemoryTransport):
    """One keep-alive client connection: sends the next request as soon as the answer to the last one is
    written, until its share is done."""

    def __init__(self, request: bytes, requests: int, done: asyncio.Future[None], remaining: list[int]) -> None:
        super().__init__()
        self.protocol: EdgeProtocol | None = None
        self._request = request
        self._left = requests
        self._done = done
        self._remaining = remaining

    def writelines(self, parts: Iterable[bytes | bytearray | memoryview]) -> None:
        for part in parts:  # as uvloop does: no joining
            self.write(part)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        if not bytes(data).endswith(BODY_END):
            return
        self._left -= 1
        if self._left:
            asyncio.get_running_loop().call_soon(self.send_request)
            return
        self._remaining[0] -= 1
        if not self._remaining[0] and not self._done.done():
            self._done.set_result(None)

    def send_request(self) -> None:
        assert self.protocol is not None
        self.protocol.data_received(self._request)


async def per_request_us(settings: GatewaySettings, requests: int, connections: int, request: bytes = REQUEST) -> float:
    """CPU seconds (user + system) of the process per request, with `connections` clients at once."""
    app = create_app(settings)
    lifespan = Lifespan(app)
    await lifespan.start()
    config = GatewayConfig(app, limits=settings.limits, **server_options(settings))  # as `python -m gateway` serves
    config.load()
    await _drive(config, 20, connections, request)  # warm-up: upstream connections, caches
    started = time.process_time()
    await _drive(config, requests // connections, connections, request)
    elapsed = time.process_time() - started
    await lifespan.stop()
    return elapsed / (requests // connections * connections) * 1e6


async def _drive(config: GatewayConfig, each: int, connections: int, request: bytes = REQUEST) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remaining = [connections]
    clients = []
    for _ in range(connections):
        client = LoopingClient(request, each, done, remaining)
        client.protocol = EdgeProtocol(config, ServerState(), {})
        client.protocol.connection_made(client)
        clients.append(client)
    for client in clients:
        client.send_request()
    await asyncio.wait_for(done, 60)
    for client in clients:
        assert client.protocol is not None
        client.protocol.connection_lost(None)


class Lifespan:
    """Runs the app's lifespan (it owns the shared client) around a measurement."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._messages: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._sent: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(
            self._app({"type": "lifespan", "asgi": {"version": "3.0"}}, self._messages.get, self._sent.put)
        )
        await self._messages.put({"type": "lifespan.startup"})
        assert (await self._sent.get())["type"] == "lifespan.startup.complete"

    async def stop(self) -> None:
        await self._messages.put({"type": "lifespan.shutdown"})
        await self._sent.get()
        if self._task is not None:
            await self._task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--features", default="bare,default", help=f"comma-separated, of {', '.join(FEATURES)}")
    parser.add_argument("--body", type=int, default=18, help="bytes in the upstream's response body")
    parser.add_argument("--upload", type=int, default=0, help="bytes in each request's body (a POST); 0: a GET")
    args = parser.parse_args()
    request = UPLOAD_HEAD % args.upload + b"u" * args.upload if args.upload else REQUEST
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        configure_logging("warning", AccessLogSettings())  # the access log's writer thread writes to /dev/null
    chosen = {
        name: GatewaySettings.model_validate({"routes": [ROUTE], **FEATURES[name]}) for name in args.features.split(",")
    }
    results: dict[str, list[float]] = {name: [] for name in chosen}
    with mock.patch.object(OriginPool, "_open", memory_opener(upstream_response(args.body), args.upload)):
        for _ in range(args.rounds):
            for name, settings in chosen.items():
                results[name].append(uvloop.run(per_request_us(settings, args.requests, args.connections, request)))
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}  in-process, {args.connections} connections, "
        f"{args.requests} requests x {args.rounds} rounds, {args.body}-byte bodies"
        + (f", {args.upload}-byte uploads" if args.upload else "")
        + ", median CPU per request"
    )
    for name, values in results.items():
        print(f"{name:<12}{statistics.median(values):>8.1f} µs/request  (min {min(values):.1f})")


if __name__ == "__main__":
    main()
