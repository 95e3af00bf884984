"""The least a Python relay costs: HTTP/1.1 on uvloop and httptools with parser callbacks only (no ASGI, no
tasks, no features), for comparison with the gateway in the same run. Not a proxy to use: it trusts both sides.

    python -m bench.floor ORIGIN_URL [--port 18100]

Keep-alive both ways, hop-by-hop fields dropped, bodies relayed as they come (chunked ones re-chunked), one
exchange at a time per client connection, an upstream connection pool (idle ones reused, new ones opened).
Only opening a connection takes a task; a request on an idle connection runs in the parser's callbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import urllib.parse

import httptools
import uvloop

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode()) for status in http.HTTPStatus
}
LAST_CHUNK = b"0\r\n\r\n"


def head_fields(headers: list[tuple[bytes, bytes]], chunked: bool) -> list[bytes]:
    fields: list[bytes] = []
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP:
            fields += (name, b": ", value, b"\r\n")
    if chunked:
        fields.append(b"transfer-encoding: chunked\r\n")
    fields.append(b"\r\n")
    return fields


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


class Upstream(asyncio.Protocol):
    """One connection to the origin; relays the response of the client exchange it is lent to."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            self.client.abort()
        self.origin.forget(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.client is not None
        self.chunked = any(name.lower() == b"transfer-encoding" for name, _ in self.headers)
        status = self.parser.get_status_code()
        line = STATUS_LINES.get(status) or b"HTTP/1.1 %d Other\r\n" % status
        self.client.write(b"".join([line, *head_fields(self.headers, self.chunked)]))

    def on_body(self, body: bytes) -> None:
        assert self.client is not None
        self.client.write(chunk(body) if self.chunked else body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        assert client is not None
        if self.chunked:
            client.write(LAST_CHUNK)
        if self.parser.should_keep_alive():
            self.origin.idle.append(self)
        else:
            assert self.transport is not None
            self.transport.close()
        client.exchange_done()


class Origin:
    """The pool of connections to the origin."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[Upstream] = []

    def forget(self, upstream: Upstream) -> None:
        if upstream in self.idle:
            self.idle.remove(upstream)

    def lend(self, client: Client, head: bytes) -> None:
        if self.idle:
            self.attach(self.idle.pop(), client, head)
        else:
            asyncio.get_running_loop().create_task(self._connect(client, head))

    async def _connect(self, client: Client, head: bytes) -> None:
        try:
            _, upstream = await asyncio.get_running_loop().create_connection(
                lambda: Upstream(self), self.host, self.port
            )
        except OSError:
            client.write(STATUS_LINES[502] + b"content-length: 0\r\nconnection: close\r\n\r\n")
            client.abort()
            return
        self.attach(upstream, client, head)

    @staticmethod
    def attach(upstream: Upstream, client: Client, head: bytes) -> None:
        upstream.client = client
        client.upstream = upstream
        assert upstream.transport is not None
        upstream.transport.write(head + b"".join(client.pending))
        client.pending = []


class Client(asyncio.Protocol):
    """One client connection: one exchange at a time; its request goes to a pooled upstream connection."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.pending: list[bytes] = []  # body pieces that came before the upstream connection
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None and upstream.client is self and upstream.transport is not None:
            upstream.client = None
            upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(STATUS_LINES[400] + b"content-length: 0\r\nconnection: close\r\n\r\n")
            self.abort()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def abort(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.chunked = any(name.lower() == b"transfer-encoding" for name, _ in self.headers)
        line = b"%s %s HTTP/1.1\r\n" % (self.parser.get_method(), self.url)
        head = b"".join([line, *head_fields(self.headers, self.chunked)])
        self.origin.lend(self, head)

    def on_body(self, body: bytes) -> None:
        self.send_body(chunk(body) if self.chunked else body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()  # one exchange at a time (no pipelining); resumed when its response is done
        if self.chunked:
            self.send_body(LAST_CHUNK)

    def send_body(self, data: bytes) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(data)
        else:
            self.pending.append(data)

    def exchange_done(self) -> None:
        self.upstream = None
        assert self.transport is not None
        if self.parser.should_keep_alive():
            self.transport.resume_reading()
        else:
            self.transport.close()


async def serve(origin_url: str, port: int) -> None:
    parts = urllib.parse.urlsplit(origin_url)
    origin = Origin(parts.hostname or "127.0.0.1", parts.port or 80)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(origin), "127.0.0.1", port, backlog=1024)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("origin", help="the origin's URL, e.g. http://127.0.0.1:18000")
    parser.add_argument("--port", type=int, default=18100)
    args = parser.parse_args()
    uvloop.run(serve(args.origin, args.port))


if __name__ == "__main__":
    main()
