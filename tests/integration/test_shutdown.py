"""Graceful shutdown of `python -m gateway` on SIGTERM: in-flight requests finish, long streams end, exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import signal
import socket
import subprocess
import threading
import time

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.integration.test_websocket import echo_upstream
from tests.servers import (
    WAIT,
    Received,
    UpstreamHandler,
    accepted,
    free_port,
    python_m_gateway,
    scripted_upstream,
    wait_for_health,
    wait_until,
)


def slow_answer(handler: UpstreamHandler, request: Received) -> None:
    time.sleep(1.5)
    handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nfinished")


def endless_stream(handler: UpstreamHandler, request: Received) -> None:
    handler.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for number in range(300):  # at most 30 s
        event = b"data: %d\n\n" % number
        handler.write(b"%x\r\n%s\r\n" % (len(event), event))
        time.sleep(0.1)


def test_sigterm_finishes_in_flight_requests_ends_streams_and_exits_0() -> None:
    port = free_port()
    with scripted_upstream(slow_answer) as slow, scripted_upstream(endless_stream) as stream:
        routes = [{"prefix": "/slow", "upstreams": [slow.url]}, {"prefix": "/events", "upstreams": [stream.url]}]
        env = {"GATEWAY_ROUTES": json.dumps(routes), "GATEWAY_SERVER__GRACEFUL_SHUTDOWN_TIMEOUT": "3"}
        process = python_m_gateway("serve", "--port", str(port), env=env)
        try:
            wait_for_health(f"http://127.0.0.1:{port}", process)
            events = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
            events.request("GET", "/events")
            stream_response = events.getresponse()
            first_event = stream_response.read1(64)
            slow_result: list[httpx.Response] = []
            in_flight = threading.Thread(
                target=lambda: slow_result.append(httpx.get(f"http://127.0.0.1:{port}/slow", timeout=WAIT))
            )
            in_flight.start()
            deadline = time.monotonic() + WAIT
            while not slow.requests and time.monotonic() < deadline:
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            refused = _refuses_new_connections(port)
            streamed = _read_until_closed(stream_response)
            in_flight.join(WAIT)
            code = process.wait(WAIT)
        finally:
            process.kill()
            _, stderr = process.communicate(timeout=WAIT)
    assert first_event.startswith(b"data: 0")
    assert refused, "new connections are refused once shutdown starts"
    assert slow_result and slow_result[0].status_code == 200 and slow_result[0].text == "finished"
    assert b"data: " in streamed, "the stream kept flowing during the grace period, then ended"
    assert code == 0
    log = stderr.decode()
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert "still open as the shutdown grace ends" in log


def test_a_connection_accepted_just_before_sigterm_gets_its_request_answered() -> None:
    """A request may sit unread in a connection accepted just before the shutdown (a worker replaced on reload
    met one): it is answered, and the connection closes after it, rather than closing with the request
    unanswered."""
    port = free_port()
    with scripted_upstream() as upstream:
        env = {"GATEWAY_ROUTES": json.dumps([{"prefix": "/api", "upstreams": [upstream.url]}])}
        process = python_m_gateway("serve", "--port", str(port), env=env)
        try:
            wait_for_health(f"http://127.0.0.1:{port}", process)
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
                wait_until(lambda: accepted(process.pid, port, conn), "the gateway to accept the connection")
                process.send_signal(signal.SIGTERM)
                assert _refuses_new_connections(port), "the shutdown has begun: the listener is closed"
                conn.sendall(b"GET /api/late HTTP/1.1\r\nHost: gw\r\n\r\n")
                answer = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := conn.recv(65536):
                        answer += chunk
            code = process.wait(WAIT)
        finally:
            process.kill()
            process.communicate(timeout=WAIT)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"GET /api/late")
    assert code == 0


def _refuses_new_connections(port: int) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


def _read_until_closed(response: http.client.HTTPResponse) -> bytes:
    received = b""
    try:
        while chunk := response.read1(65536):
            received += chunk
    except (http.client.IncompleteRead, ConnectionError) as exc:
        received += getattr(exc, "partial", b"")
    return received


def test_sigterm_closes_websocket_sessions_with_1012_so_clients_reconnect_elsewhere() -> None:
    """uvicorn's behaviour, kept: a session has no natural end to wait for, and 1012 says "service restart"."""

    async def session(url: str, process: subprocess.Popen[bytes]) -> tuple[int | None, str]:
        async with connect(url + "/ws/") as ws:
            await ws.send("hello")
            echoed = await ws.recv()
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WAIT)
            return ws.close_code, str(echoed)

    port = free_port()
    with echo_upstream() as (upstream, upstream_codes):
        routes = [{"prefix": "/ws", "upstreams": [upstream], "strip_prefix": True}]
        process = python_m_gateway("serve", "--port", str(port), env={"GATEWAY_ROUTES": json.dumps(routes)})
        try:
            wait_for_health(f"http://127.0.0.1:{port}", process)
            code, echoed = asyncio.run(session(f"ws://127.0.0.1:{port}", process))
            exit_code = process.wait(WAIT)
        finally:
            process.kill()
            process.communicate(timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while not upstream_codes and time.monotonic() < deadline:
            time.sleep(0.02)
    assert echoed == "hello"
    assert code == 1012
    assert upstream_codes == [1012], "the upstream session is closed with the same code"
    assert exit_code == 0
