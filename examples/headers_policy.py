"""Example middleware: a response-header policy (security headers on, internal headers off).

    [[middleware]]
    factory = "examples.headers_policy:HeaderPolicyMiddleware"
    options = { set = { "x-content-type-options" = "nosniff" }, remove = ["x-powered-by"] }

It touches only the response head, so bodies keep streaming as they come.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeaderPolicyMiddleware:
    """Sets (replacing any upstream value) and removes response headers."""

    def __init__(self, app: ASGIApp, *, set: Mapping[str, str] = {}, remove: Iterable[str] = ()) -> None:
        self.app = app
        self._set = [(name.lower().encode(), value.encode()) for name, value in set.items()]
        self._drop = {name.lower().encode() for name in remove} | {name for name, _ in self._set}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def apply_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in self._drop]
                message["headers"] = kept + self._set
            await send(message)

        await self.app(scope, receive, apply_policy)
