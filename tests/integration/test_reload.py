"""Hot reload under load: a real gateway, real upstreams, a client that never stops, and configuration changes."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import httpx

from gateway import create_app
from gateway.ops.metrics import FOLD_INTERVAL
from settings import GatewaySettings, SettingsError
from tests.conftest import settings_with
from tests.servers import (
    WAIT,
    Received,
    StderrLines,
    UpstreamHandler,
    free_port,
    python_m_gateway,
    scripted_upstream,
    serve_app,
    wait_for_health,
    wait_until,
)


def named(name: bytes) -> Any:
    def answer(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(name), name))

    return answer


class Source:
    """The settings a reload reads; a test swaps them (or makes them invalid) between reloads."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.problems: list[str] = []

    def __call__(self) -> GatewaySettings:
        if self.problems:
            raise SettingsError(self.problems)
        return self.settings


def test_reload_under_load_switches_atomically_and_keeps_unchanged_state() -> None:
    limited = {"prefix": "/limited", "upstreams": [], "rate_limit": [{"name": "few", "rate": 0.001, "burst": 3}]}
    with scripted_upstream(named(b"one")) as one, scripted_upstream(named(b"two")) as two:
        first = settings_with({"prefix": "/api", "upstreams": [one.url]}, {**limited, "upstreams": [one.url]})
        source = Source(first)
        with serve_app(create_app(first, settings_source=source)) as url:
            client = httpx.Client(base_url=url, timeout=10)
            assert [client.get("/limited/x").status_code for _ in range(4)] == [200, 200, 200, 429]
            failures: list[str] = []
            bodies: set[str] = set()
            stop = threading.Event()
            load = threading.Thread(target=_hammer, args=(url, stop, failures, bodies), daemon=True)
            load.start()
            try:
                wait_until(lambda: "one" in bodies, "the load to be served by the first configuration")
                # 1. A wrong configuration is refused with the keys named; the old one keeps serving.
                source.problems = ["routes[0].upstreams[0].url: 'nope' is not an http(s) URL"]
                refused = client.post("/_gateway/reload")
                source.problems = []
                # 2. A new route and a second instance for /api; /limited is unchanged.
                source.settings = settings_with(
                    {"prefix": "/api", "upstreams": [one.url, two.url]},
                    {**limited, "upstreams": [one.url]},
                    {"prefix": "/v2", "upstreams": [two.url]},
                )
                reloaded = client.post("/_gateway/reload")
                wait_until(lambda: "two" in bodies, "the load to reach the new instance")
            finally:
                stop.set()
                load.join(WAIT)
            after = {client.get("/api/x").text for _ in range(6)}
            new_route = client.get("/v2/x")
            still_limited = client.get("/limited/x")
            upstreams = client.get("/_gateway/upstreams").json()
    assert refused.status_code == 400
    assert refused.json()["errors"] == ["routes[0].upstreams[0].url: 'nope' is not an http(s) URL"]
    assert reloaded.status_code == 200, reloaded.text
    assert failures == [], "no request failed during the reloads"
    assert bodies == {"one", "two"}, "requests went to the old and then the new configuration"
    assert after == {"one", "two"} and new_route.text == "two"
    assert still_limited.status_code == 429, "an unchanged policy keeps its bucket"
    kept = next(u for u in upstreams["/api"] if u["url"] == one.url)
    assert kept["requests"] > 6, "an unchanged instance keeps its counters across the reload"


def _hammer(url: str, stop: threading.Event, failures: list[str], bodies: set[str]) -> None:
    deadline = time.monotonic() + WAIT
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                response = client.get("/api/x")
            except httpx.TransportError as exc:
                failures.append(repr(exc))
                continue
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:100]}")
            bodies.add(response.text)


def test_sighup_reloads_python_m_gateway_from_its_config_file(tmp_path: Any) -> None:
    port = free_port()
    config = tmp_path / "gateway.toml"
    with scripted_upstream(named(b"one")) as one, scripted_upstream(named(b"two")) as two:
        config.write_text(f'[[routes]]\nprefix = "/api"\nupstreams = ["{one.url}"]\n')
        process = python_m_gateway("serve", "--port", str(port), env={"GATEWAY_CONFIG": str(config)})
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_health(url, process)
            log = StderrLines(process)
            before = httpx.get(url + "/api/x").text
            config.write_text(f'[[routes]]\nprefix = "/api"\nupstreams = ["{two.url}"]\n')
            os.kill(process.pid, signal.SIGHUP)
            deadline = time.monotonic() + WAIT
            while (after := httpx.get(url + "/api/x").text) != "two" and time.monotonic() < deadline:
                time.sleep(0.05)
            config.write_text("[[routes]]\nprefix = 'no-slash'\n")
            os.kill(process.pid, signal.SIGHUP)
            # The reload was attempted and refused before the old configuration is checked:
            wait_until(lambda: "reload refused" in log.text(), "the gateway to refuse the reload")
            still = httpx.get(url + "/api/x").text
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(WAIT)
    assert (before, after, still) == ("one", "two", "two")
    assert "routes[0].prefix" in log.text()


def test_several_workers_sum_their_metrics_and_are_replaced_on_reload(tmp_path: Any) -> None:
    port = free_port()
    config = tmp_path / "gateway.toml"
    with scripted_upstream(named(b"one")) as one, scripted_upstream(named(b"two")) as two:
        config.write_text(f'[[routes]]\nprefix = "/api"\nupstreams = ["{one.url}"]\n')
        env = {"GATEWAY_CONFIG": str(config), "GATEWAY_SERVER__WORKERS": "2"}
        process = python_m_gateway("serve", "--port", str(port), env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(url, process)
            for _ in range(20):  # new connections: the kernel spreads them over both workers
                assert httpx.get(url + "/api/x").text == "one"
            # Each worker folds its tallies into the shared files every FOLD_INTERVAL (and the one that answers
            # the scrape at once), so the sum is complete within that interval.
            summed = 'gateway_requests_total{method="GET",route="/api",status="2xx"} 20.0'
            deadline = time.monotonic() + WAIT
            metrics = httpx.get(url + "/_gateway/metrics").text
            while summed not in metrics and time.monotonic() < deadline:
                time.sleep(FOLD_INTERVAL / 2)
                metrics = httpx.get(url + "/_gateway/metrics").text
            config.write_text("[[routes]]\nprefix = 'no-slash'\n")
            refused = httpx.post(url + "/_gateway/reload")
            config.write_text(f'[[routes]]\nprefix = "/api"\nupstreams = ["{two.url}"]\n')
            accepted = httpx.post(url + "/_gateway/reload")
            deadline = time.monotonic() + WAIT
            answers: list[str] = []
            while time.monotonic() < deadline:
                answers = [httpx.get(url + "/api/x").text for _ in range(10)]
                if set(answers) == {"two"}:
                    break
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=WAIT)
    assert summed in metrics
    assert refused.status_code == 400 and refused.json()["errors"][0].startswith("routes[0].prefix")
    assert accepted.status_code == 200
    assert set(answers) == {"two"}, "every worker was replaced and serves the new configuration"


def test_watch_config_reloads_when_the_file_changes(tmp_path: Any) -> None:
    port = free_port()
    config = tmp_path / "gateway.toml"
    with scripted_upstream(named(b"one")) as one, scripted_upstream(named(b"two")) as two:
        config.write_text(f'[server]\nwatch_config = true\n[[routes]]\nprefix = "/api"\nupstreams = ["{one.url}"]\n')
        process = python_m_gateway("serve", "--port", str(port), env={"GATEWAY_CONFIG": str(config)})
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(url, process)
            before = httpx.get(url + "/api/x").text
            config.write_text(
                f'[server]\nwatch_config = true\n[[routes]]\nprefix = "/api"\nupstreams = ["{two.url}"]\n'
            )
            deadline = time.monotonic() + WAIT
            while (after := httpx.get(url + "/api/x").text) != "two" and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=WAIT)
    assert (before, after) == ("one", "two")
