"""Rate limits shared through a real redis-server by two gateway processes, and what happens when it dies."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import WAIT, free_port, gateway_process, scripted_upstream

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS is None and not os.environ.get("CI"), reason="redis-server is not installed (.ci/run installs it)"
)


@contextlib.contextmanager
def redis_server(port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    assert REDIS is not None, "redis-server is missing: .ci/run installs it with apt-get"
    command = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    command += ["--save", "", "--appendonly", "no"]
    command += ["--enable-debug-command", "yes"]  # DEBUG SLEEP makes a slow Redis on demand
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + WAIT
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            if conn.recv(16).startswith(b"+PONG"):
                break
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(WAIT)


def redis_command(port: int, command: bytes) -> list[int]:
    """Send one inline command; parse an array-of-integers reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(command + b"\r\n")
        reply = b""
        for _ in range(100):  # bounded: a reply this small arrives in a packet or two
            chunk = conn.recv(4096)
            reply += chunk
            count = int(reply[1:].split(b"\r\n")[0] or 0) if reply.startswith(b"*") and b"\r\n" in reply else -1
            if not chunk or (count >= 0 and reply.count(b"\r\n") >= count + 1):
                break
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"*"), reply
    return [int(line[1:]) for line in lines[1:] if line.startswith(b":")]


def gateway_env(upstream: str, redis_port: int, **limits: object) -> dict[str, str]:
    rate_limit = {
        "store": "redis",
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
        "redis_timeout": 0.2,
        "policies": [{"name": "shared", "rate": 0.01, "burst": 10}],
        **limits,
    }
    return {
        "GATEWAY_ROUTES": json.dumps([{"prefix": "/", "upstreams": [upstream]}]),
        "GATEWAY_RATE_LIMIT": json.dumps(rate_limit),
        "GATEWAY_ACCESS_LOG__ENABLED": "false",
    }


def test_two_instances_share_one_limit(tmp_path: Path) -> None:
    port = free_port()
    with redis_server(port, tmp_path), scripted_upstream() as upstream:
        env = gateway_env(upstream.url, port)
        with gateway_process(env) as first, gateway_process(env) as second:
            statuses = [httpx.get((first, second)[index % 2].url + "/x").status_code for index in range(30)]
        bucket_ttls = redis_command(
            port,
            b"EVAL \"local t = {} for _, k in ipairs(redis.call('KEYS', 'gateway:ratelimit:*')) do t[#t+1] = redis.call('PTTL', k) end return t\" 0",
        )
    assert len(bucket_ttls) == 1 and 0 < bucket_ttls[0] <= 1000_000  # one shared bucket, expiring by itself
    assert statuses.count(200) in (10, 11)  # what one instance alone would allow, within one
    assert statuses[:10] == [200] * 10
    assert statuses[-5:] == [429] * 5


@pytest.mark.parametrize(("failure", "while_down"), [("open", 200), ("closed", 503)])
def test_redis_outage_fails_open_or_closed_and_recovers(tmp_path: Path, failure: str, while_down: int) -> None:
    port = free_port()
    with scripted_upstream() as upstream:
        env = gateway_env(upstream.url, port, on_store_failure=failure)
        env["GATEWAY_RATE_LIMIT"] = env["GATEWAY_RATE_LIMIT"].replace('"burst": 10', '"burst": 2')
        with gateway_process(env) as gateway:
            with redis_server(port, tmp_path):
                limited = [httpx.get(gateway.url + "/x").status_code for _ in range(3)]
            down = [httpx.get(gateway.url + "/x").status_code for _ in range(5)]  # redis-server stopped
            health = httpx.get(gateway.url + "/_gateway/health").status_code
            with redis_server(port, tmp_path):
                back = [httpx.get(gateway.url + "/x").status_code for _ in range(3)]
            log = gateway.stderr()
    assert limited == [200, 200, 429]
    assert down == [while_down] * 5
    assert health == 200
    assert back == [200, 200, 429]  # the restarted Redis has empty buckets, and limits again
    assert log.count("rate-limit store unavailable") == 1  # once per interval, not per request
    assert "rate-limit store is back" in log


def test_a_slow_redis_is_given_up_on_after_its_deadline(tmp_path: Path) -> None:
    port = free_port()
    with scripted_upstream() as upstream, redis_server(port, tmp_path):
        env = gateway_env(upstream.url, port, redis_timeout=0.05, on_store_failure="closed")
        with gateway_process(env) as gateway:
            assert httpx.get(gateway.url + "/x").status_code == 200
            with socket.create_connection(("127.0.0.1", port), timeout=10) as admin:
                admin.sendall(b"DEBUG SLEEP 1.5\r\n")  # Redis stalls for 1.5 s
                time.sleep(0.1)
                stalled = httpx.get(gateway.url + "/x", timeout=10)
                assert admin.recv(16).startswith(b"+OK")
    # fail-closed: had the decision waited for Redis to wake up, it would have been allowed (200)
    assert stalled.status_code == 503
