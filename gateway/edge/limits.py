"""The edge's limits as its protocols use them: where they come from, and the send timeout they share."""

from __future__ import annotations

import asyncio
import functools

from uvicorn.config import Config

from gateway.edge.deadline import Deadline
from settings import LimitsSettings, load_settings


@functools.cache
def _limits_from_environment() -> LimitsSettings:
    return load_settings().limits


def limits_for(config: Config) -> LimitsSettings:
    """The limits `python -m gateway` put on its config, else those of the settings (`uvicorn --http ...`)."""
    limits = getattr(config, "limits", None)
    return limits if isinstance(limits, LimitsSettings) else _limits_from_environment()


class SendTimeout(asyncio.Protocol):
    """nginx's send_timeout for a protocol, HTTP or WebSocket: the transport asks it to pause writing when the
    client leaves too much unread, and to resume once it took enough; a client that stays paused for
    `send_timeout` seconds gets `_send_timed_out()`. One lazily re-armed Deadline per connection, so a response
    that never fills the buffer costs nothing."""

    _send_timeout: float
    _send_deadline: Deadline

    def _start_send_timeout(self, loop: asyncio.AbstractEventLoop, send_timeout: float) -> None:
        """Called from the protocol's __init__."""
        self._send_timeout = send_timeout
        self._send_deadline = Deadline(loop, self._send_timed_out)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._send_deadline.set(self._send_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._send_deadline.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._send_deadline.cancel()
        super().connection_lost(exc)

    def _send_timed_out(self) -> None:
        """Drop the client: abort the transport (close() would wait for the bytes it does not take)."""
        raise NotImplementedError
