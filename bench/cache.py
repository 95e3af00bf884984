"""The cache's memory per stored object, and its cost per hit against a proxied request, in-process.

    python -m bench.cache [--objects 10000] [--body 1024]

Memory: `--objects` responses with a `--body`-byte body and typical headers put in the memory store, measured
with tracemalloc (Python's own allocations), per object, beside the body size. Cost: the same GET driven
straight into the ASGI app (no sockets; a mock upstream answering at once) on a route with the cache (hits)
and without (proxied), median of 5 interleaved rounds. `python -m bench.run --features bare,cache` gives the
figures under load, with p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import tracemalloc
from typing import Any

import httpx

from bench.metrics import per_request_us
from gateway import create_app
from gateway.cache import MemoryCacheStore
from gateway.cache.policy import Stored, vary_snapshot
from settings import GatewaySettings, RouteSettings

HEADERS = [
    (b"content-type", b"application/json; charset=utf-8"),
    (b"cache-control", b"public, max-age=3600"),
    (b"etag", b'"5d8c72a5edda8d6a"'),
    (b"last-modified", b"Thu, 26 Nov 2026 10:00:00 GMT"),
    (b"date", b"Thu, 26 Nov 2026 18:00:00 GMT"),
    (b"vary", b"Accept-Encoding"),
    (b"content-length", b"1024"),
]


def memory_per_object(objects: int, body: int) -> float:
    store = MemoryCacheStore(1 << 40)
    request = [(b"accept-encoding", b"gzip, br")]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    now = time.time()
    for index in range(objects):
        stored = Stored(200, list(HEADERS), b"x" * body, now, now, 3600.0, vary_snapshot(request, HEADERS))
        asyncio.run(store.put(f"shop.example /api/items/{index}?page=1", stored))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / objects


def app(cache: bool) -> Any:
    route = RouteSettings(prefix="/api", upstreams=["http://api.internal"], cache={"enabled": cache})
    settings = GatewaySettings(routes=[route], access_log={"enabled": False})

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="ok", headers={"cache-control": "max-age=3600"})

    return create_app(settings, transport=httpx.MockTransport(upstream))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--body", type=int, default=1024)
    args = parser.parse_args()
    per_object = memory_per_object(args.objects, args.body)
    apps = {"proxied": app(False), "cache hit": app(True)}
    results: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(5):
        for name, application in apps.items():
            results[name].append(asyncio.run(per_request_us(application, 10_000)))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  in-process, median of 5 rounds")
    print(f"memory per cached object  {per_object:8.0f} bytes ({args.body}-byte body, 7 headers, one Vary field)")
    proxied = statistics.median(results["proxied"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<12}{median:>8.1f} µs/request   {proxied / median:5.2f}x proxied")


if __name__ == "__main__":
    main()
