"""The edge protocol's response path: a small response in one write, a held head never waiting past its loop
turn, an app's own Date instead of the server's, no garbage left for the collector, the same bytes as uvicorn
writes, and no head that a field could split."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any, cast

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.edge import EdgeProtocol, GatewayConfig, cycle
from gateway.edge.offer import EDGE_EXTENSION
from gateway.edge.writes import HeadHoldingTransport
from gateway.stages.pipeline import Pipeline
from gateway.stages.requestid import RequestIdStage
from settings import LimitsSettings
from tests.conftest import cyclic_garbage

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


def connect(app: Any, state: ServerState | None = None) -> tuple[EdgeProtocol, RecordingTransport]:
    config = GatewayConfig(app, limits=LimitsSettings(), log_level="warning", proxy_headers=False)
    config.load()
    protocol = EdgeProtocol(config, state or ServerState(), {})
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


async def test_an_app_may_send_its_own_date_instead_of_the_servers() -> None:
    """The route cache answers with the stored Date (RFC 9111: Age counts from it); uvicorn would add its own."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"2")]
        if scope["path"] == "/stored":
            scope["extensions"][EDGE_EXTENSION].leave_out_date()
            headers.append((b"date", b"Tue, 24 Nov 2026 08:00:00 GMT"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    state = ServerState()
    state.default_headers = [(b"date", b"Thu, 26 Nov 2026 21:00:00 GMT")]
    protocol, transport = connect(app, state)
    protocol.data_received(b"GET /stored HTTP/1.1\r\nHost: gw\r\n\r\n" + GET)
    await turns()
    dates = [[line for line in write.split(b"\r\n") if line.lower().startswith(b"date:")] for write in transport.writes]
    assert dates == [[b"date: Tue, 24 Nov 2026 08:00:00 GMT"], [b"date: Thu, 26 Nov 2026 21:00:00 GMT"]]


async def _answer_ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _garbage_of_20_requests(app: Any) -> tuple[list[bytes], list[str]]:
    """What 20 keep-alive requests to `app` through the edge protocol wrote, and what they left for the garbage
    collector (after 3 to warm up)."""
    protocol, transport = connect(app)
    for _ in range(3):
        protocol.data_received(GET)
        await turns()
    with cyclic_garbage() as left:
        for _ in range(20):
            protocol.data_received(GET)
            await turns()
    return transport.writes, left


async def test_requests_leave_no_cyclic_garbage() -> None:
    """Objects in a reference cycle wait for the garbage collector, whose passes cost ~20 µs per request under
    load: what the protocol makes per request (cycle, scope, hooks) must be freed by reference counting."""
    writes, left = await _garbage_of_20_requests(_answer_ok)
    assert len(writes) == 23
    assert left == []


async def test_exchanges_attached_to_the_edge_leave_no_cyclic_garbage() -> None:
    """The app's Exchange attaches to the edge's per-connection offer and the running cycle holds it: that chain
    must end with the request, not loop back to it."""
    pipeline = Pipeline(_answer_ok, stages=[RequestIdStage()])

    async def app(scope: Any, receive: Any, send: Any) -> None:  # as inside Starlette (uvicorn wants ASGI3 here)
        await pipeline(scope, receive, send)

    writes, left = await _garbage_of_20_requests(app)
    assert len(writes) == 23 and all(b"x-request-id: " in write for write in writes)
    assert left == []


HEADS: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {
    "with a length": (200, [(b"content-type", b"text/plain"), (b"content-length", b"2")], b"ok"),
    "without a length: chunked": (200, [(b"content-type", b"text/plain")], b"ok"),
    "already chunked": (200, [(b"transfer-encoding", b"chunked")], b"ok"),
    "asking to close": (200, [(b"content-length", b"2"), (b"connection", b"Keep-Alive, Close")], b"ok"),
    "no content": (204, [(b"x-request-id", b"abc")], b""),
    "not modified": (304, [(b"etag", b'"v1"'), (b"content-length", b"10")], b""),
    "a tab in a value": (200, [(b"x-note", b"a\tb"), (b"content-length", b"0")], b""),
    "no fields at all": (200, [], b""),
    "names in capitals": (200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"2")], b"ok"),
    "bytes past ASCII in a value": (200, [(b"x-note", b"caf\xc3\xa9"), (b"content-length", b"0")], b""),
    "a long head": (200, [(b"x-field-%d" % index, b"v" * 200) for index in range(40)], b"ok"),
}


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
@pytest.mark.parametrize("case", HEADS)
async def test_responses_are_written_byte_for_byte_as_uvicorn_writes_them(case: str, method: bytes) -> None:
    status, headers, body = HEADS[case]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    request = method + b" /x HTTP/1.1\r\nHost: gw\r\n\r\n"
    written = []
    for protocol_class in (EdgeProtocol, HttpToolsProtocol):
        options: dict[str, Any] = {"log_level": "warning", "proxy_headers": False, "access_log": False}
        if protocol_class is EdgeProtocol:
            config: Config = GatewayConfig(app, limits=LimitsSettings(), **options)
        else:
            config = Config(app, **options)
        config.load()
        state = ServerState()
        state.default_headers = [(b"date", b"Thu, 26 Nov 2026 21:00:00 GMT")]
        protocol = protocol_class(config, state, {})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        await turns()
        written.append((b"".join(transport.writes), transport.closed))
    assert written[0] == written[1]


@pytest.mark.parametrize(
    "field",
    [
        (b"x-split", b"a\r\nset-cookie: stolen=1"),
        (b"x-split", b"a\nset-cookie: stolen=1"),
        (b"x-split", b"a\rb"),
        (b"x-nul", b"a\x00b"),
        (b"x-control", b"a\x1bb"),
        (b"x-delete", b"a\x7fb"),
        (b"bad name", b"v"),
        (b"", b"v"),  # uvicorn writes ": v", a line with no name
        (b"x-split\r\nset-cookie", b"stolen=1"),
    ],
)
async def test_a_head_with_a_field_that_could_split_it_is_never_written(field: tuple[bytes, bytes]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"2"), field]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol, transport = connect(app)
    protocol.data_received(GET)
    await turns()
    assert transport.writes == [] and transport.closed


async def test_a_body_longer_than_its_content_length_is_never_written() -> None:
    """The bytes past the declared length would reach the client as the start of another response."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"okHTTP/1.1 200 OK\r\nX-Smuggled: 1\r\n\r\n"})

    protocol, transport = connect(app)
    protocol.data_received(GET)
    await turns()
    assert b"X-Smuggled" not in b"".join(transport.writes) and transport.closed


async def test_the_remembered_field_names_stay_bounded() -> None:
    """Each field name is checked once and remembered: an upstream sending ever new names cannot grow that."""
    served = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal served
        served += 1
        headers = [(b"X-Odd-%d-%d" % (served, index), b"v") for index in range(50)] + [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol, transport = connect(app)
    for _ in range(40):
        protocol.data_received(GET)
        await turns()
    assert len(transport.writes) == 40 and b"\r\nx-odd-40-49: v\r\n" in transport.writes[-1]
    assert len(cycle._CHECKED_NAMES) <= cycle._CHECKED_NAMES_LIMIT


async def test_the_message_event_behaves_as_an_asyncio_event() -> None:
    """The cycle's event is a flag until something waits: set before a wait, waiters woken by set, clear."""
    event = cycle.MessageEvent()
    event.set()
    assert event.is_set() and await asyncio.wait_for(event.wait(), 1)
    event.clear()
    assert not event.is_set()
    woken: list[int] = []

    async def waiter(number: int) -> None:
        await event.wait()
        woken.append(number)

    waiters = [asyncio.ensure_future(waiter(number)) for number in range(2)]
    await turns()
    assert woken == []  # cleared: nobody passes
    event.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert sorted(woken) == [0, 1]
    event.clear()
    late = asyncio.ensure_future(event.wait())
    await turns()
    assert not late.done()  # a wait after clear() blocks again, on the event made at the first wait
    event.set()
    assert await asyncio.wait_for(late, 1)


async def test_a_splice_starts_only_once_the_servers_buffer_is_empty() -> None:
    """A spliced body bypasses the transport: what the transport still holds must have left first."""
    loop = asyncio.get_running_loop()
    server_side, client_side = socket.socketpair()
    flow: list[FlowControl] = []

    class Forwarding(asyncio.Protocol):  # what the edge protocol does with the transport's flow control
        def pause_writing(self) -> None:
            flow[0].pause_writing()

        def resume_writing(self) -> None:
            flow[0].resume_writing()

    raw, _ = await loop.create_connection(Forwarding, sock=server_side)
    transport = HeadHoldingTransport(raw, loop)
    flow.append(FlowControl(cast(asyncio.Transport, transport)))
    limits = raw.get_write_buffer_limits()
    edge_cycle = cycle.EdgeCycle(
        {"method": "GET"},
        transport,
        flow[0],
        logging.getLogger("t"),
        logging.getLogger("t"),
        False,
        [],
        False,
        True,
        lambda: None,
        60.0,
    )
    written = b"x" * (8 * 1024 * 1024)
    transport.write(written)  # the peer reads nothing yet: most of it stays in the transport's buffer
    draining = asyncio.ensure_future(edge_cycle._drain_all())
    await asyncio.sleep(0.05)
    assert not draining.done() and raw.get_write_buffer_size() > 0
    reader = threading.Thread(target=_read_exactly, args=(client_side, len(written)), daemon=True)
    reader.start()
    await asyncio.wait_for(draining, 10)
    assert raw.get_write_buffer_size() == 0 and raw.get_write_buffer_limits() == limits
    reader.join(10)
    raw.close()
    client_side.close()


def _read_exactly(sock: socket.socket, count: int) -> None:
    while count > 0:
        count -= len(sock.recv(min(count, 1 << 20)))
