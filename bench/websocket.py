"""WebSockets and streams through the gateway, against the same upstream directly, in one run.

    python -m bench.websocket [--sessions 10000] [--messages 2000]

An upstream (uvicorn + Starlette: a WebSocket echo and a server-sent-events endpoint) runs on CPU 1, the gateway
(`python -m gateway`, access log off) on CPU 0, this client on CPU 1. Prints, direct and through the gateway:

- message round trip: one session, sequential 32-byte echoes, p50/p99
- messages per second: 8 sessions echoing 64-byte messages, pipelined, and gateway CPU per message
- server-sent events: time to the first event of a new stream, p50/p99; gaps of 5 events sent 200 ms apart
- idle sessions held by one gateway process, and its memory per session (RSS growth / sessions)

Each session through the gateway costs it two descriptors; the count is capped by this machine's descriptor
limit (printed when it applies). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from bench.run import free_port, pinned, process_tree_cpu, running

CLIENT_CPU = 1


def upstream_app() -> object:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    async def events(request: Request) -> StreamingResponse:
        count = int(request.query_params.get("n", "1"))
        gap = int(request.query_params.get("gap", "0")) / 1000

        async def stream():  # type: ignore[no-untyped-def]
            for number in range(count):
                if number:
                    await asyncio.sleep(gap)
                yield f"data: {number}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", health), Route("/events", events), WebSocketRoute("/echo", echo)])


def raise_descriptor_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


async def round_trips(url: str, count: int) -> list[float]:
    timings = []
    async with connect(url + "/echo", compression=None) as ws:
        for _ in range(count):
            started = time.perf_counter()
            await ws.send("r" * 32)
            await ws.recv()
            timings.append((time.perf_counter() - started) * 1000)
    return timings


async def messages_per_second(url: str, sessions: int, per_session: int) -> float:
    async def pump(ws: ClientConnection) -> None:
        async def reader() -> None:
            for _ in range(per_session):
                await ws.recv()

        receiving = asyncio.ensure_future(reader())
        for _ in range(per_session):
            await ws.send("m" * 64)
        await receiving

    connections = [await connect(url + "/echo", compression=None) for _ in range(sessions)]
    started = time.perf_counter()
    await asyncio.gather(*(pump(ws) for ws in connections))
    elapsed = time.perf_counter() - started
    for ws in connections:
        await ws.close()
    return sessions * per_session / elapsed


async def first_event_ms(url: str, count: int) -> list[float]:
    host, port = url.removeprefix("ws://").split(":")
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /events?n=1 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        buffered = b""
        while b"data: " not in buffered:
            chunk = await reader.read(65536)
            if not chunk:
                raise RuntimeError("stream ended before its first event")
            buffered += chunk
        timings.append((time.perf_counter() - started) * 1000)
        writer.close()
    return timings


async def event_gaps_ms(url: str) -> list[float]:
    host, port = url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /events?n=5&gap=200 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    arrivals: list[float] = []
    seen = 0
    buffered = b""
    while seen < 5:
        chunk = await reader.read(65536)
        if not chunk:
            break
        buffered += chunk
        while buffered.count(b"data: ") > seen:
            arrivals.append(time.perf_counter())
            seen += 1
    writer.close()
    return [(later - earlier) * 1000 for earlier, later in itertools.pairwise(arrivals)]


async def hold_sessions(url: str, count: int, gateway_pid: int) -> tuple[int, float, float]:
    """Open `count` idle sessions (200 handshakes at a time); (held, KiB per session, seconds to open)."""
    before = rss_kib(gateway_pid)
    gate = asyncio.Semaphore(200)
    sessions: list[ClientConnection] = []

    async def open_one() -> None:
        async with gate:
            sessions.append(await connect(url + "/echo", compression=None, ping_interval=None, open_timeout=60))

    started = time.perf_counter()
    results = await asyncio.gather(*(open_one() for _ in range(count)), return_exceptions=True)
    opened = time.perf_counter() - started
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        print(f"  {len(failures)} sessions failed to open, first: {failures[0]!r}")
    await asyncio.sleep(2)
    per_session = (rss_kib(gateway_pid) - before) / max(len(sessions), 1)
    sample = sessions[:: max(len(sessions) // 100, 1)]
    alive = 0
    for ws in sample:
        await ws.send("still here?")
        alive += await ws.recv() == "still here?"
    if alive != len(sample):
        print(f"  only {alive} of {len(sample)} sampled sessions still echoed")
    await asyncio.gather(*(ws.close() for ws in sessions), return_exceptions=True)
    return len(sessions), per_session, opened


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    return f"p50 {statistics.median(ordered):7.3f} ms   p99 {ordered[int(len(ordered) * 0.99) - 1]:7.3f} ms"


def run(coroutine_factory: Callable[[], Awaitable[object]]) -> object:
    return asyncio.run(coroutine_factory())  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000, help="idle sessions to hold (default 10000)")
    parser.add_argument("--messages", type=int, default=2000, help="round trips per target (default 2000)")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    limit = raise_descriptor_limit()
    if args.serve_upstream:
        import uvicorn

        uvicorn.run(
            upstream_app(),
            host="127.0.0.1",
            port=args.serve_upstream,
            log_level="warning",  # type: ignore[arg-type]
            ws_per_message_deflate=False,
            backlog=4096,
        )
        return
    os.sched_setaffinity(0, {CLIENT_CPU})
    sessions = min(args.sessions, (limit - 200) // 2)
    upstream_port, gateway_port = free_port(), free_port()
    upstream_command = pinned(
        str(CLIENT_CPU), [sys.executable, "-m", "bench.websocket", "--serve-upstream", str(upstream_port)]
    )
    direct = f"ws://127.0.0.1:{upstream_port}"
    routes = [{"prefix": "/", "upstreams": [f"http://127.0.0.1:{upstream_port}"]}]
    env = {
        **os.environ,
        "GATEWAY_ROUTES": json.dumps(routes),
        "GATEWAY_ACCESS_LOG__ENABLED": "false",
        "GATEWAY_SERVER__LOG_LEVEL": "warning",
        "GATEWAY_LIMITS__MAX_CONNECTIONS": str(4 * sessions),
    }
    gateway_command = pinned(
        os.environ.get("PROXY_CPU", "0"), [sys.executable, "-m", "gateway", "serve", "--port", str(gateway_port)]
    )
    through = f"ws://127.0.0.1:{gateway_port}"
    with (
        running(upstream_command, direct.replace("ws", "http") + "/"),
        running(gateway_command, through.replace("ws", "http") + "/_gateway/health", env) as gateway,
    ):
        report(direct, through, gateway.pid, args.messages, sessions, limit if sessions < args.sessions else None)


def report(direct: str, through: str, gateway_pid: int, messages: int, sessions: int, capped_by: int | None) -> None:
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPUs  gateway: CPU 0; upstream, client: CPU 1")
    for name, url in (("direct", direct), ("gateway", through)):
        timings = run(lambda url=url: round_trips(url, messages))
        print(f"round trip      {name:<8} {percentiles(timings)}")  # type: ignore[arg-type]
    for name, url in (("direct", direct), ("gateway", through)):
        cpu_before = process_tree_cpu(gateway_pid)
        rate = run(lambda url=url: messages_per_second(url, 8, 5000))
        cpu = (process_tree_cpu(gateway_pid) - cpu_before) / (8 * 5000) * 1e6
        cpu_text = f"   gateway CPU {cpu:6.1f} µs/message" if name == "gateway" else ""
        print(f"messages/s      {name:<8} {rate:9.0f}{cpu_text}")
    for name, url in (("direct", direct), ("gateway", through)):
        timings = run(lambda url=url: first_event_ms(url, 200))
        print(f"first SSE event {name:<8} {percentiles(timings)}")  # type: ignore[arg-type]
    for name, url in (("direct", direct), ("gateway", through)):
        gaps = run(lambda url=url: event_gaps_ms(url))
        print(f"SSE gaps (200)  {name:<8} " + " ".join(f"{gap:6.1f}" for gap in gaps))  # type: ignore[union-attr]
    if capped_by is not None:
        print(f"# idle sessions capped at {sessions}: descriptor limit {capped_by}, two descriptors per session")
    held, per_session, opened = run(lambda: hold_sessions(through, sessions, gateway_pid))  # type: ignore[misc]
    print(f"idle sessions   gateway  {held} held (opened in {opened:.1f} s), {per_session:.1f} KiB RSS each")


if __name__ == "__main__":
    main()
