"""Balancing, health and retries with real upstream servers behind a real gateway."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from gateway import create_app
from tests.conftest import settings_with
from tests.servers import Received, ScriptedServer, UpstreamHandler, scripted_upstream, serve_app


def named(name: bytes, delay: float = 0.0) -> Any:
    def respond(handler: UpstreamHandler, request: Received) -> None:
        if delay:
            time.sleep(delay)
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(name), name))

    return respond


@contextlib.contextmanager
def upstreams(*responders: Any) -> Iterator[list[ScriptedServer]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(scripted_upstream(responder)) for responder in responders]


def test_round_robin_shares_and_weights_over_3000_requests() -> None:
    with upstreams(named(b"a"), named(b"b"), named(b"c")) as (a, b, c):
        plain = {"prefix": "/", "upstreams": [a.url, b.url, c.url]}
        weighted = {
            "prefix": "/w",
            "upstreams": [{"url": a.url, "weight": 1}, {"url": b.url, "weight": 2}, {"url": c.url, "weight": 3}],
        }
        with serve_app(create_app(settings_with(plain, weighted))) as url, httpx.Client() as client:
            even = Counter(client.get(url + "/x").text for _ in range(3000))
            skewed = Counter(client.get(url + "/w/x").text for _ in range(3000))
    for name in "abc":
        assert abs(even[name] - 1000) <= 50
    for name, share in zip("abc", (500, 1000, 1500), strict=True):
        assert abs(skewed[name] - share) <= 0.05 * share


def test_a_killed_instance_costs_no_client_an_error_and_returns_after_it_restarts() -> None:
    interval = 0.2
    with upstreams(named(b"a"), named(b"b"), named(b"c")) as servers:
        doomed = servers[1]
        port = doomed.server_address[1]
        route = {
            "prefix": "/",
            "upstreams": [server.url for server in servers],
            "balancing": {"health_check": {"path": "/health", "interval": interval, "timeout": 0.5}},
        }
        with serve_app(create_app(settings_with(route))) as url, httpx.Client(timeout=10) as client:
            statuses = [client.get(url + "/x").status_code for _ in range(150)]
            doomed.kill()
            statuses += [client.get(url + "/x").status_code for _ in range(300)]
            state = client.get(url + "/_gateway/upstreams").json()["/"][1]
            assert state["healthy"] is False or state["ejected_for_s"] > 0
            with scripted_upstream(named(b"b"), port=port):
                deadline = time.monotonic() + 2 * interval + 2.0  # two intervals, plus slack for a busy machine
                while time.monotonic() < deadline:
                    state = client.get(url + "/_gateway/upstreams").json()["/"][1]
                    if state["healthy"] and state["ejected_for_s"] == 0:
                        break
                    time.sleep(0.05)
                back = Counter(client.get(url + "/x").text for _ in range(60))
    assert statuses == [200] * 450
    assert state["healthy"] is True and state["ejected_for_s"] == 0
    assert back["b"] > 10  # in rotation again


def test_a_post_that_reached_an_upstream_is_never_sent_twice() -> None:
    seen: list[bytes] = []
    lock = threading.Lock()

    def read_then_drop(handler: UpstreamHandler, request: Received) -> None:
        with lock:
            seen.append(request.body)
        handler.reset()

    with upstreams(read_then_drop, read_then_drop) as (a, b):
        route = {"prefix": "/", "upstreams": [a.url, b.url]}
        with serve_app(create_app(settings_with(route))) as url:
            response = httpx.post(url + "/orders", content=b'{"item": 1}', timeout=10)
    assert response.status_code == 502
    assert seen == [b'{"item": 1}']


def test_an_idempotent_request_is_retried_on_another_instance() -> None:
    def drop(handler: UpstreamHandler, request: Received) -> None:
        handler.reset()

    with upstreams(drop, named(b"ok")) as (a, b):
        route = {"prefix": "/", "upstreams": [a.url, b.url], "balancing": {"policy": "first"}}
        with serve_app(create_app(settings_with(route))) as url:
            response = httpx.get(url + "/x", timeout=10)
    assert response.text == "ok"
    assert len(a.requests) == 1 and len(b.requests) == 1


def unavailable(handler: UpstreamHandler, request: Received) -> None:
    handler.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")


def test_a_status_in_on_statuses_moves_a_get_to_another_instance_but_never_a_post() -> None:
    """`[routes.balancing.retries] on_statuses`: a GET answered 503 is tried on the next instance; a POST that
    reached an instance is never sent twice, whatever it was answered (issue 31)."""
    with upstreams(unavailable, named(b"ok")) as (busy, ok):
        route = {"prefix": "/", "upstreams": [busy.url, ok.url], "balancing": {"policy": "first"}}
        with serve_app(create_app(settings_with(route))) as url, httpx.Client(timeout=10) as client:
            fetched = client.get(url + "/x")
            posted = client.post(url + "/orders/42/cancel")  # no body: only its method forbids a second try
    assert (fetched.status_code, fetched.text) == (200, "ok")
    assert (posted.status_code, posted.text) == (503, "busy")
    assert [request.method for request in busy.requests] == ["GET", "POST"]
    assert [request.method for request in ok.requests] == ["GET"]


def test_a_request_whose_body_was_already_read_is_not_retried() -> None:
    """A streamed PUT is idempotent, but once part of its body went upstream it cannot be replayed: the instance
    that resets mid-body gets it once, the client a 502, and the other instance nothing (issue 31)."""
    read_before_reset = threading.Event()

    def reset_mid_body(handler: UpstreamHandler, request: Received) -> None:
        handler.rfile.read(4096)  # a part of the body, then the connection is reset
        read_before_reset.set()
        handler.reset()

    def body() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 8192
            time.sleep(0.02)

    with upstreams(reset_mid_body, named(b"ok")) as (resetting, ok):
        resetting.read_body = False  # the responder reads the body itself
        route = {"prefix": "/", "upstreams": [resetting.url, ok.url], "balancing": {"policy": "first"}}
        with serve_app(create_app(settings_with(route))) as url:
            response = httpx.put(url + "/files/a", content=body(), timeout=10)
    assert read_before_reset.is_set()
    assert response.status_code == 502
    assert len(resetting.requests) == 1 and ok.requests == []


def test_least_in_flight_sends_most_traffic_to_the_fast_instance() -> None:
    with upstreams(named(b"slow", delay=0.2), named(b"fast", delay=0.005)) as (slow, fast):
        route = {"prefix": "/", "upstreams": [slow.url, fast.url], "balancing": {"policy": "least_in_flight"}}
        with serve_app(create_app(settings_with(route))) as url, ThreadPoolExecutor(8) as pool:
            answers = Counter(pool.map(lambda _: httpx.get(url + "/x", timeout=10).text, range(200)))
    assert answers["fast"] > 2 * answers["slow"]  # round robin would split them evenly


def test_every_instance_down_is_a_quick_503() -> None:
    with upstreams(named(b"a")) as (a,):
        route = {
            "prefix": "/",
            "upstreams": [a.url],
            "balancing": {"health_check": {"interval": 0.1, "unhealthy_threshold": 1, "path": "/h"}},
        }
        a.kill()
        with serve_app(create_app(settings_with(route))) as url:
            deadline = time.monotonic() + 5
            response = httpx.get(url + "/x", timeout=10)
            while response.status_code != 503 and time.monotonic() < deadline:
                time.sleep(0.1)
                response = httpx.get(url + "/x", timeout=10)
    assert response.status_code == 503
    assert response.json()["detail"] == "No upstream instance is available right now."


def test_per_try_timeout_moves_a_slow_get_to_another_instance() -> None:
    with upstreams(named(b"stuck", delay=2.0), named(b"quick")) as (stuck, quick):
        route = {
            "prefix": "/",
            "upstreams": [stuck.url, quick.url],
            "balancing": {"policy": "first", "retries": {"per_try_timeout": 0.3}},
        }
        with serve_app(create_app(settings_with(route))) as url:
            response = httpx.get(url + "/x", timeout=10)
    assert response.text == "quick"
    assert len(stuck.requests) == 1 and len(quick.requests) == 1


def test_over_the_in_flight_cap_is_503_at_once_not_a_queue() -> None:
    release = threading.Event()

    def held(handler: UpstreamHandler, request: Received) -> None:
        release.wait(10)
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with upstreams(held) as (only,):
        route = {"prefix": "/", "upstreams": [only.url], "balancing": {"max_in_flight": 2}}
        with serve_app(create_app(settings_with(route))) as url, ThreadPoolExecutor(3) as pool:
            holding = [pool.submit(httpx.get, url + "/held", timeout=10) for _ in range(2)]
            deadline = time.monotonic() + 5
            while len(only.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            refused = httpx.get(url + "/more", timeout=10)
            release.set()
            held_statuses = [future.result().status_code for future in holding]
    assert refused.status_code == 503
    assert held_statuses == [200, 200]
    assert [request.target for request in only.requests] == [b"/held", b"/held"]
