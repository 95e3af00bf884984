"""What metrics cost per request: the same in-process gateway with `[metrics]` on and off.

    python -m bench.metrics [--requests 20000] [--rounds 5]

Drives requests straight into the ASGI app (no sockets; the upstream is an httpx.MockTransport answering at
once) with the access log off, so the difference is the metrics alone; interleaved rounds, median shown.
Also times one `GatewayMetrics.observe()` call on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import timeit
from typing import Any

import httpx

from gateway import create_app
from gateway.ops.metrics import GatewayMetrics
from settings import GatewaySettings, RouteSettings


def app(metrics: bool) -> Any:
    settings = GatewaySettings(
        routes=[RouteSettings(prefix="/api", upstreams=["http://api.internal"])],
        access_log={"enabled": False},
        metrics={"enabled": metrics},
    )
    return create_app(settings, transport=httpx.MockTransport(lambda request: httpx.Response(200, text="ok")))


async def per_request_us(application: Any, requests: int) -> float:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/users",
        "raw_path": b"/api/users",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gw"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    started = time.perf_counter()
    for _ in range(requests):
        await application(dict(scope), receive, send)
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    apps = {"metrics off": app(False), "metrics on": app(True)}
    results: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(args.rounds):
        for name, application in apps.items():
            results[name].append(asyncio.run(per_request_us(application, args.requests)))
    metrics = GatewayMetrics({})
    calls = 200_000
    observe = (
        timeit.timeit(lambda: metrics.observe("/api", "GET", 200, 0.001, 0.0005, 0, 2, None), number=calls)
        / calls
        * 1e6
    )
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {args.requests} requests x {args.rounds} rounds, median")
    base = statistics.median(results["metrics off"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<14}{median:>8.2f} µs/request{median - base:>+8.2f} µs")
    print(f"observe()     {observe:>8.2f} µs/call")


if __name__ == "__main__":
    main()
