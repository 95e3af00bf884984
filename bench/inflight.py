"""Memory per exchange in flight: what the gateway holds for each request while it waits for the upstream.

    python -m bench.inflight [--connections 128] [--features bare,default]

Runs `bench.pipeline`'s in-memory path, lets every connection's request reach the upstream wait at once, and
measures there (after a full collection) the Python heap (tracemalloc) and the objects the garbage collector
tracks, against the idle gateway just before. The connections' own state (protocol, parser) is counted in,
as each measurement opens fresh connections. At 128 concurrent requests a request costs the gateway more CPU
than at 16 with barely more instructions, so the working set per exchange is worth keeping small.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any
from unittest import mock

import uvloop

from bench.pipeline import FEATURES, ROUTE, Lifespan, _drive, memory_opener, upstream_response
from gateway import create_app
from gateway.client.transport.connection import UpstreamConnection
from gateway.client.transport.pool import OriginPool
from gateway.edge import GatewayConfig, server_options
from gateway.ops.logs import configure_logging
from settings import AccessLogSettings, GatewaySettings


def counting_waits(connections: int, measured: list[tuple[int, int]]) -> Callable[..., Any]:
    """UpstreamConnection._wait that measures once, when the last of `connections` requests starts waiting."""
    wait = UpstreamConnection._wait
    waiting = 0

    def measuring_wait(self: UpstreamConnection, *args: Any, **kwargs: Any) -> Any:
        nonlocal waiting
        waiting += 1
        if waiting == connections:
            gc.collect()
            measured.append((tracemalloc.get_traced_memory()[0], len(gc.get_objects())))
        return wait(self, *args, **kwargs)

    return measuring_wait


async def per_exchange(settings: GatewaySettings, connections: int) -> tuple[float, float]:
    app = create_app(settings)
    lifespan = Lifespan(app)
    await lifespan.start()
    config = GatewayConfig(app, limits=settings.limits, **server_options(settings))
    config.load()
    await _drive(config, 3, connections)  # warm: upstream connections pooled, caches filled
    gc.collect()
    idle = (tracemalloc.get_traced_memory()[0], len(gc.get_objects()))
    measured: list[tuple[int, int]] = []
    with mock.patch.object(UpstreamConnection, "_wait", counting_waits(connections, measured)):
        await _drive(config, 1, connections)
    await lifespan.stop()
    heap, objects = measured[0]
    return (heap - idle[0]) / connections, (objects - idle[1]) / connections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--features", default="bare,default", help=f"comma-separated, of {', '.join(FEATURES)}")
    args = parser.parse_args()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        configure_logging("warning", AccessLogSettings())
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  in-process, {args.connections} requests in flight at once")
    tracemalloc.start()
    with mock.patch.object(OriginPool, "_open", memory_opener(upstream_response(18))):
        for name in args.features.split(","):
            settings = GatewaySettings.model_validate({"routes": [ROUTE], **FEATURES[name]})
            heap, objects = uvloop.run(per_exchange(settings, args.connections))
            print(f"{name:12} {heap:8.0f} bytes and {objects:5.0f} tracked objects per exchange in flight")


if __name__ == "__main__":
    main()
