"""The server side alone: cost per request of the gateway's edge protocol against uvicorn's own httptools one.

    python -m bench.protocol [--requests 50000] [--rounds 5]

Feeds the same keep-alive request (a browser-like head: 10 headers) into each protocol over an in-memory
transport, with an app that answers at once, on uvloop; interleaved rounds, median shown. This isolates what
`[limits]` cost (head timer, header counting, Host and framing checks) from the noise of a full load test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.edge import EdgeProtocol, GatewayConfig
from settings import LimitsSettings

REQUEST = (
    b"GET /api/users?page=2 HTTP/1.1\r\nHost: gateway.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    b"Accept: application/json\r\nAccept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://gateway.example/app\r\nCookie: session=abcdef0123456789\r\nCache-Control: no-cache\r\n"
    b"Authorization: Bearer abc.def.ghi\r\nConnection: keep-alive\r\n\r\n"
)


# As the gateway runs uvicorn (server/runner.py): no proxy headers, and no uvicorn access log (it writes its own).
OPTIONS: dict[str, Any] = {
    "limit_concurrency": 10_000,
    "log_level": "warning",
    "proxy_headers": False,
    "access_log": False,
}


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def per_request_us(protocol_class: type[HttpToolsProtocol], requests: int) -> float:
    config: Config
    if protocol_class is EdgeProtocol:
        config = GatewayConfig(answer, limits=LimitsSettings(), **OPTIONS)
    else:
        config = Config(answer, **OPTIONS)
    config.load()
    protocol = protocol_class(config, ServerState(), {})
    transport = MemoryTransport()
    protocol.connection_made(transport)
    started = time.perf_counter()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task answers
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    assert transport.written > requests * 20, "every request was answered"
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    classes = {"uvicorn httptools": HttpToolsProtocol, "gateway edge": EdgeProtocol}
    results: dict[str, list[float]] = {name: [] for name in classes}
    for _ in range(args.rounds):
        for name, protocol_class in classes.items():
            results[name].append(uvloop.run(per_request_us(protocol_class, args.requests)))
    base = statistics.median(results["uvicorn httptools"])
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {args.requests} requests x {args.rounds} rounds, median")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<20}{median:>8.2f} µs/request{median - base:>+8.2f} µs")


if __name__ == "__main__":
    main()
