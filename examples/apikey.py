"""Example middleware: only requests carrying one of the configured API keys get through.

[[routes.middleware]]
factory = "examples.apikey:ApiKeyMiddleware"
options = { keys = ["k-123", "k-456"], header = "x-api-key" }
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import send_problem
from gateway.exchange import exchange_of


class ApiKeyMiddleware:
    """401 unless the request's `header` holds one of `keys`. The key is removed before the request goes
    upstream unless `forward` is set, so upstream logs never see it."""

    def __init__(self, app: ASGIApp, *, keys: Iterable[str], header: str = "x-api-key", forward: bool = False) -> None:
        self.app = app
        self._keys = [key.encode() for key in keys]
        if not self._keys:
            raise ValueError("keys must name at least one API key")
        self._header = header.lower().encode()
        self._forward = forward

    def _valid(self, presented: bytes) -> bool:
        # compare_digest against every key: the time taken does not tell which key was close.
        return any([hmac.compare_digest(presented, key) for key in self._keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = next((value for name, value in scope["headers"] if name == self._header), None)
        if presented is None or not self._valid(presented):
            exchange = exchange_of(scope)  # the gateway's facts about this request (see README, Extending)
            exchange.reason = "api_key"
            await send_problem(send, 401, "A valid API key is required.", exchange.request_id)
            return
        if not self._forward:
            scope = dict(scope)
            scope["headers"] = [(name, value) for name, value in scope["headers"] if name != self._header]
        await self.app(scope, receive, send)
