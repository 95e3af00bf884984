"""Rate-limiter cost: µs per decision and memory per tracked client, memory store and Redis.

python -m bench.ratelimit            # Redis part runs when redis-server is installed
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import tracemalloc

import uvloop

from gateway.ratelimit import MemoryStore, RedisStore

CLIENTS = 1_000_000


async def memory_store() -> None:
    store = MemoryStore(max_keys=CLIENTS)
    tracemalloc.start()
    started = time.perf_counter()
    for client in range(CLIENTS):
        await store.hit(f"g:0:ip:10.{client >> 16 & 255}.{client >> 8 & 255}.{client & 255}", 0.1, 1.0)
    elapsed = time.perf_counter() - started
    size, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"memory store: {CLIENTS:,} distinct clients, {elapsed / CLIENTS * 1e6:.2f} µs per decision")
    print(f"  {size / CLIENTS:.0f} bytes per tracked client ({size / 2**20:.0f} MiB; peak {peak / 2**20:.0f} MiB)")
    bounded = MemoryStore(max_keys=100_000)
    tracemalloc.start()
    for client in range(CLIENTS):
        await bounded.hit(f"g:0:ip:{client}", 0.1, 1.0)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  with max_keys=100000: {len(bounded):,} buckets kept, {size / 2**20:.0f} MiB")


async def memory_decisions() -> None:
    store = MemoryStore(max_keys=100_000)
    started = time.perf_counter()
    for client in range(CLIENTS):
        await store.hit(f"g:0:ip:{client}", 0.1, 1.0)
    print(f"  without tracemalloc: {(time.perf_counter() - started) / CLIENTS * 1e6:.2f} µs per decision")


async def redis_decisions(port: int) -> None:
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=1.0)
    count = 20_000
    await store.hit("warm", 0.1, 1.0)
    cpu, started = time.process_time(), time.perf_counter()
    for client in range(count):
        await store.hit(f"g:0:ip:{client}", 0.1, 1.0)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"redis store: {elapsed / count * 1e6:.0f} µs per decision, {cpu / count * 1e6:.0f} µs of gateway CPU")
    await store.aclose()


def redis_part() -> None:
    server = shutil.which("redis-server")
    if server is None:
        print("redis store: skipped (no redis-server)")
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            uvloop.run(redis_decisions(port))
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    uvloop.run(memory_store())
    uvloop.run(memory_decisions())
    redis_part()
