"""RelayTransport on its own against raw upstreams: framing, reuse, retries and the pool's limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.client.shared import create_client
from gateway.client.transport import HOLD_FOR_SPLICE, RelayTransport
from settings import ClientSettings
from tests.conftest import cyclic_garbage
from tests.servers import Received, UpstreamHandler, scripted_upstream

pytestmark = pytest.mark.anyio


def client(**limits: int | float) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=RelayTransport(limits=httpx.Limits(**limits) if limits else None))


async def test_keep_alive_reuses_one_connection() -> None:
    with scripted_upstream() as upstream:
        async with client() as http:
            answers = [(await http.get(f"{upstream.url}/{index}")).text for index in range(5)]
    assert answers == [f"GET /{index}" for index in range(5)]
    assert upstream.connections == 1


async def test_close_delimited_body_and_interim_responses() -> None:
    def old_style(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
        handler.write(b"HTTP/1.1 200 OK\r\nX-Final: 1\r\n\r\nuntil the end")
        handler.connection.shutdown(2)

    with scripted_upstream(old_style) as upstream:
        async with client() as http:
            response = await http.get(upstream.url)
    assert response.status_code == 200
    assert response.text == "until the end"
    assert "link" not in response.headers and response.headers["x-final"] == "1"


async def test_trailer_fields_after_a_chunked_body_are_not_taken_for_head_fields() -> None:
    def with_trailers(handler: UpstreamHandler, request: Received) -> None:
        handler.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Digest: abc\r\n\r\n"
        )

    with scripted_upstream(with_trailers) as upstream:
        async with client() as http:
            async with http.stream("GET", upstream.url) as response:
                body = await response.aread()
                headers = response.headers.raw
            again = await http.get(upstream.url)  # and the connection stays usable
    assert body == b"hello" and again.text == "hello"
    assert [name for name, _ in headers] == [b"Transfer-Encoding", b"Trailer"]


async def test_head_responses_end_after_the_headers() -> None:
    def head(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")

    with scripted_upstream(head) as upstream:
        async with client() as http:
            first = await asyncio.wait_for(http.head(upstream.url), 10)
            second = await asyncio.wait_for(http.head(upstream.url), 10)
    assert first.headers["content-length"] == "1000" and first.content == b""
    assert second.status_code == 200


async def test_an_empty_piece_of_a_streamed_body_does_not_end_it() -> None:
    """A chunked upload whose stream yields b"" mid-way: written as is, that piece would be the last-chunk marker
    and the rest would reach the upstream as a request of its own."""

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"abc", b"", b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"):
            yield piece

    with scripted_upstream() as upstream:
        async with client() as http:
            response = await http.post(upstream.url + "/upload", content=pieces())
            again = await http.get(upstream.url + "/next")
    assert response.text == "POST /upload" and again.text == "GET /next"
    assert [(request.method, request.body) for request in upstream.requests] == [
        ("POST", b"abcGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("GET", b""),
    ]


async def test_header_injection_is_refused_before_anything_is_sent() -> None:
    with scripted_upstream() as upstream:
        async with client() as http:
            with pytest.raises(httpx.LocalProtocolError):
                await http.get(upstream.url, headers={"X-Evil": "a\r\nX-Injected: 1"})
    assert upstream.requests == []


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("POST", False)])
async def test_a_dead_reused_connection_is_retried_only_when_safe(method: str, retried: bool) -> None:
    state = {"served": 0}

    def once_then_vanish(handler: UpstreamHandler, request: Received) -> None:
        state["served"] += 1
        if state["served"] == 1:
            handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            # Keep the connection looking alive to the pool, then drop it as the next request lands.
            handler.rfile.peek(1)
            handler.reset()
            return
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain")

    with scripted_upstream(once_then_vanish) as upstream:
        upstream.close_after_response = False
        async with client() as http:
            assert (await http.request(method, upstream.url, content=b"x")).text == "ok"
            if retried:
                assert (await http.request(method, upstream.url, content=b"x")).text == "again"
            else:
                with pytest.raises(httpx.TransportError):
                    await http.request(method, upstream.url, content=b"x")
    assert len(upstream.requests) == (2 if retried else 1)


@pytest.mark.parametrize(
    ("head", "complaint"),
    [
        (b"HTTP/1.1 999 Made Up\r\nContent-Length: 2\r\n\r\nok", "invalid status code (999)"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xyz\r\n\r\nok", "cannot decode (xyz)"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "(gzip, chunked)"),
    ],
)
async def test_responses_the_relay_cannot_pass_on_are_protocol_errors(head: bytes, complaint: str) -> None:
    """A status outside 100-599 (uvicorn cannot even write one) and a body in a coding the gateway cannot undo
    (llhttp would read it to the connection's end and hand it on as plain bytes) become a 502, not a relay."""

    def answer(handler: UpstreamHandler, request: Received) -> None:
        handler.write(head)

    with scripted_upstream(answer) as upstream:
        async with client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
                await asyncio.wait_for(http.get(upstream.url), 10)


async def test_bytes_past_a_complete_response_leave_it_whole_but_end_the_connection() -> None:
    """A body longer than its Content-Length (nginx: "upstream sent more data than specified"): the client
    gets the declared length, and the next request does not read the surplus as its answer."""

    def overlong(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more")

    with scripted_upstream(overlong) as upstream:
        async with client() as http:
            first = await asyncio.wait_for(http.get(upstream.url), 10)
            second = await asyncio.wait_for(http.get(upstream.url), 10)
    assert (first.status_code, first.text) == (200, "hello")
    assert (second.status_code, second.text) == (200, "hello")
    assert upstream.connections == 2


async def test_a_body_arriving_in_pieces_is_whole_and_the_connection_stays_in_step() -> None:
    """Content-Length bodies are taken past the parser once the head is read (no copy per piece): the pieces
    must add up, and the next response on the same connection must parse from its first byte."""

    def in_pieces(handler: UpstreamHandler, request: Received) -> None:
        body = request.target * 40
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:7])
        for start in range(7, len(body), 100):
            time.sleep(0.005)  # separate segments, so that each reaches the gateway on its own
            handler.write(body[start : start + 100])

    with scripted_upstream(in_pieces) as upstream:
        async with client() as http:
            bodies = [(await asyncio.wait_for(http.get(f"{upstream.url}/{index}"), 10)).content for index in range(3)]
    assert bodies == [f"/{index}".encode() * 40 for index in range(3)]
    assert upstream.connections == 1


async def test_bytes_past_a_body_read_in_pieces_end_the_connection() -> None:
    def overlong(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        time.sleep(0.05)
        handler.write(b"world and then some")

    with scripted_upstream(overlong) as upstream:
        async with client() as http:
            answers = [(await asyncio.wait_for(http.get(upstream.url), 10)).text for _ in range(2)]
    assert answers == ["helloworld", "helloworld"]
    assert upstream.connections == 2


@pytest.mark.parametrize(("keep_alive", "connections"), [(b"timeout=5", 1), (b"timeout=1, max=100", 2)])
async def test_an_upstream_keep_alive_timeout_is_respected(keep_alive: bytes, connections: int) -> None:
    """`Keep-Alive: timeout=N`: an idle connection is not reused within a second of the upstream closing it
    (a request sent as the upstream's timer fires would fail), so timeout=1 means no reuse at all."""

    def answer(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nKeep-Alive: " + keep_alive + b"\r\nContent-Length: 2\r\n\r\nok")

    with scripted_upstream(answer) as upstream:
        async with client() as http:
            for _ in range(2):
                assert (await asyncio.wait_for(http.get(upstream.url), 10)).text == "ok"
    assert upstream.connections == connections


async def test_the_pool_cap_queues_then_times_out() -> None:
    release = threading.Event()

    def held(handler: UpstreamHandler, request: Received) -> None:
        release.wait(10)
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with scripted_upstream(held) as upstream:
        async with client(max_connections=2, max_keepalive_connections=2) as http:
            busy = [asyncio.create_task(http.get(upstream.url, timeout=20)) for _ in range(2)]
            await asyncio.sleep(0.2)
            with pytest.raises(httpx.PoolTimeout):
                await http.get(upstream.url, timeout=httpx.Timeout(20, pool=0.2))
            queued = asyncio.create_task(http.get(upstream.url, timeout=20))
            await asyncio.sleep(0.1)
            release.set()
            answers = [response.text for response in await asyncio.gather(*busy, queued)]
    assert answers == ["ok", "ok", "ok"]
    assert upstream.connections == 2


async def test_cancelled_exchanges_free_their_slots() -> None:
    def slow(handler: UpstreamHandler, request: Received) -> None:
        time.sleep(0.5)
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with scripted_upstream(slow) as upstream:
        async with client(max_connections=3) as http:
            for _ in range(5):
                tasks = [asyncio.create_task(http.get(upstream.url)) for _ in range(6)]
                await asyncio.sleep(0.05)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            response = await http.get(upstream.url, timeout=httpx.Timeout(10, pool=2))
    assert response.text == "ok"


async def test_connect_failures_are_connect_errors() -> None:
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://127.0.0.1:9/")


async def test_the_shared_client_leaves_no_cyclic_garbage() -> None:
    """Objects in a reference cycle wait for the garbage collector, whose passes cost the relay CPU under
    load: a streamed exchange through the gateway's client must free everything by reference counting."""
    with scripted_upstream() as upstream:
        async with create_client(ClientSettings()) as http:
            for _ in range(3):  # the pool's connection and first-use caches are made once, not per exchange
                await (await http.send(http.build_request("GET", upstream.url), stream=True)).aclose()
            with cyclic_garbage() as left:
                for index in range(20):
                    response = await http.send(http.build_request("GET", f"{upstream.url}/{index}"), stream=True)
                    body = b"".join([chunk async for chunk in response.aiter_raw()])
                    await response.aclose()
                    assert body == f"GET /{index}".encode()
                del response
    assert left == []


async def test_a_body_held_for_splicing_can_still_be_read_as_usual() -> None:
    """HOLD_FOR_SPLICE leaves a long body in the socket at its head; a caller that reads it instead gets it all."""
    body = bytes(range(256)) * 400  # 100 KiB, past the splicing threshold and within one read

    def long_body(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.05)  # the head arrives alone, so the whole body is held
        handler.write(body)

    def whole_at_once(handler: UpstreamHandler, request: Received) -> None:
        handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    for respond in (long_body, whole_at_once):  # held at the head, or not held as it all came in one read
        with scripted_upstream(respond) as upstream:
            async with client() as http:
                request = http.build_request("GET", upstream.url, extensions={HOLD_FOR_SPLICE: True})
                answers = [await http.send(request) for _ in range(3)]
        assert [answer.content == body for answer in answers] == [True] * 3
        assert upstream.connections == 1
