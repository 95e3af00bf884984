"""The edge protocol sends a small response in one write, and a held head never waits past its loop turn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.server import ServerState

from gateway.server import EdgeProtocol, GatewayConfig
from settings import LimitsSettings

pytestmark = pytest.mark.anyio

GET = b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(app: Any) -> tuple[EdgeProtocol, RecordingTransport]:
    config = GatewayConfig(app, limits=LimitsSettings(), log_level="warning", proxy_headers=False)
    config.load()
    protocol = EdgeProtocol(config, ServerState(), {})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_small_response_leaves_in_one_write() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol, transport = connect(app)
    protocol.data_received(GET + GET)  # pipelined: each response still leaves whole and in order
    await turns()
    assert len(transport.writes) == 2
    assert all(write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b"\r\n\r\nok") for write in transport.writes)


async def test_a_streamed_head_goes_out_within_its_loop_turn() -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await release.wait()
        await send({"type": "http.response.body", "body": b"data: 1\n\n"})

    protocol, transport = connect(app)
    protocol.data_received(GET)
    await turns()
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    release.set()
    await turns()
    assert transport.writes[1:] == [b"9\r\ndata: 1\n\n\r\n0\r\n\r\n"]  # the chunk and the end of the body


async def test_a_head_response_and_a_closing_one_are_not_held_back() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else b"ok"})

    protocol, transport = connect(app)
    protocol.data_received(b"HEAD /x HTTP/1.1\r\nHost: gw\r\n\r\n")
    await turns()
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"content-length: 2\r\n\r\n")
    protocol.data_received(b"GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    await turns()
    assert transport.closed and transport.writes[1].endswith(b"\r\n\r\nok")
