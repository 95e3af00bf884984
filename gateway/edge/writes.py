"""The transport a response is written through: the head waits for the body's first write, so that a small
response leaves in one send() instead of two."""

from __future__ import annotations

import asyncio
from typing import Any


class HeadHoldingTransport:
    """Wraps a connection's transport for its response cycles.

    uvicorn writes a response head and body in separate calls, and on loopback each send() costs the gateway
    about 6 µs of CPU (bench/RESULTS.md). The head is held until the body's first write, or until the end of the
    loop turn (call_soon) when no body follows at once, so a streamed response (SSE) still shows its head at once.
    Everything that writes on the connection goes through here, so nothing can overtake a held head.
    """

    __slots__ = ("_expect_head", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._expect_head = False

    def start_response(self) -> None:
        """The next write is a response's head (a new response cycle starts)."""
        self.flush()
        self._expect_head = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._expect_head:
            self._expect_head = False
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))  # one writev() with uvloop, and no copy
            return
        self._transport.write(data)

    def write_interim(self, data: bytes) -> None:
        """An interim (1xx) response, out at once: the final head is still the next write to hold."""
        self.flush()
        self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
