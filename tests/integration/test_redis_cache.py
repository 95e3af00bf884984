"""The Redis cache store: two gateways share stored responses through a real redis-server on loopback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from gateway import create_app
from tests.conftest import settings_with
from tests.integration.test_redis_ratelimit import redis_server
from tests.servers import Received, UpstreamHandler, free_port, scripted_upstream, serve_app

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("CI"),
    reason="redis-server is not installed (.ci/run installs it)",
)


def answer(handler: UpstreamHandler, request: Received) -> None:
    if request.method == "POST":
        handler.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        return
    body = b"stored at the upstream"
    handler.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_two_gateways_share_hits_invalidations_and_purges_and_survive_redis_going_away(tmp_path: Path) -> None:
    port = free_port()
    with redis_server(port, tmp_path) as redis, scripted_upstream(answer) as upstream:
        route = {"prefix": "/", "upstreams": [upstream.url], "cache": {"enabled": True}}
        store = {"store": "redis", "redis_url": f"redis://127.0.0.1:{port}/0"}
        first_app = create_app(settings_with(route, cache=store))
        second_app = create_app(settings_with(route, cache=store))
        client = httpx.Client(timeout=10, headers={"host": "shop.example"})  # both instances behind one name
        with serve_app(first_app) as first, serve_app(second_app) as second, client:
            stored = client.get(first + "/shared")
            shared_hit = client.get(second + "/shared")
            client.post(second + "/shared", content=b"change")
            after_post = client.get(first + "/shared")
            purged = client.post(first + "/_gateway/cache/purge", json={"path": "/shared"})
            after_purge = client.get(second + "/shared")
            redis.terminate()
            redis.wait(10)
            without_redis = client.get(first + "/shared")
            metrics = client.get(first + "/_gateway/metrics").text
    assert stored.headers["cache-status"] == "gateway; fwd=uri-miss; stored"
    assert shared_hit.headers["cache-status"] == "gateway; hit" and shared_hit.text == "stored at the upstream"
    assert after_post.headers["cache-status"].startswith("gateway; fwd=uri-miss")
    assert purged.json() == {"purged": 1}
    assert after_purge.headers["cache-status"].startswith("gateway; fwd=uri-miss")
    assert without_redis.status_code == 200 and without_redis.text == "stored at the upstream"
    assert "gateway_redis_errors_total" in metrics
    assert [request.method for request in upstream.requests] == ["GET", "POST", "GET", "GET", "GET"]
