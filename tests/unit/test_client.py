"""The shared client's helpers that stand in for httpx's own."""

from __future__ import annotations

import httpx
import pytest

from gateway.client.shared import close_response

pytestmark = pytest.mark.anyio


class ClosingStream(httpx.AsyncByteStream):
    def __init__(self, error: Exception | None = None) -> None:
        self.closed = 0
        self._error = error

    async def aclose(self) -> None:
        self.closed += 1
        if self._error is not None:
            raise self._error


async def test_close_response_closes_the_stream_once() -> None:
    stream = ClosingStream()
    response = httpx.Response(200, stream=stream)
    await close_response(response)
    await close_response(response)
    assert stream.closed == 1 and response.is_closed


async def test_a_transport_error_while_closing_names_the_request_as_httpx_does() -> None:
    request = httpx.Request("GET", "http://up.internal/")
    ours = httpx.Response(200, stream=ClosingStream(httpx.ReadError("lost")), request=request)
    theirs = httpx.Response(200, stream=ClosingStream(httpx.ReadError("lost")), request=request)
    with pytest.raises(httpx.ReadError) as raised_here:
        await close_response(ours)
    with pytest.raises(httpx.ReadError) as raised_by_httpx:
        await theirs.aclose()
    assert raised_here.value.request is raised_by_httpx.value.request is request
