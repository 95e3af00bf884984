"""The access log of a real gateway process: one JSON object per line on stdout (or text, by setting)."""

from __future__ import annotations

import json
import socket
import time

import httpx

from tests.servers import Received, UpstreamHandler, gateway_process, scripted_upstream


def routes_to(url: str) -> dict[str, str]:
    return {"GATEWAY_ROUTES": json.dumps([{"prefix": "/api", "upstreams": [url]}])}


def test_json_access_log_lines() -> None:
    with scripted_upstream() as upstream, gateway_process(routes_to(upstream.url)) as gateway:
        httpx.get(gateway.url + "/api/x?q=1", headers={"X-Request-ID": "log-1", "Authorization": "Bearer hush"})
        httpx.get(gateway.url + "/elsewhere")
        lines = gateway.stdout_lines(2)
        health = gateway.stdout_lines(1, skip="/api")  # the start-up health polls are logged too
    records = [json.loads(line) for line in lines]
    proxied, missing = records
    assert json.loads(health[0])["path"] == "/_gateway/health"
    assert proxied["request_id"] == "log-1" and proxied["status"] == 200 and proxied["route"] == "/api"
    assert proxied["upstream"] == upstream.url and proxied["query"] is True and proxied["path"] == "/api/x"
    assert proxied["time"].endswith("+00:00") and proxied["duration_ms"] > 0
    assert (missing["status"], missing["reason"]) == (404, "no_route")
    assert "hush" not in "\n".join(lines)


def test_text_access_log_and_a_client_that_left() -> None:
    def slow(handler: UpstreamHandler, request: Received) -> None:
        time.sleep(1.0)
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    env = {**routes_to(""), "GATEWAY_ACCESS_LOG__FORMAT": "text"}
    with scripted_upstream(slow) as upstream:
        env.update(routes_to(upstream.url))
        with gateway_process(env) as gateway:
            host, port = gateway.url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(b"GET /api/slow HTTP/1.1\r\nHost: gw\r\n\r\n")
                time.sleep(0.3)
            lines = gateway.stdout_lines(1)
            health = gateway.stdout_lines(1, skip="/api")
    assert " GET /_gateway/health 200 " in health[0]
    assert " GET /api/slow 499 " in lines[0] and lines[0].endswith("reason=client_closed")
