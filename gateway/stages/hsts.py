"""Strict-Transport-Security on every answer sent over HTTPS (`tls.hsts_max_age`)."""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HSTSMiddleware:
    """Adds the header unless the upstream set its own; never on plain HTTP, where browsers ignore it."""

    def __init__(self, app: ASGIApp, *, max_age: int) -> None:
        self.app = app
        self._header = (b"strict-transport-security", b"max-age=%d" % max_age)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not coroutines: both hand back the next awaitable, as the request-id middleware does.
        if scope["type"] != "http" or scope.get("scheme") != "https":
            return self.app(scope, receive, send)

        def send_with_hsts(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == self._header[0] for name, _ in headers):
                    headers.append(self._header)
                message = {**message, "headers": headers}
            return send(message)

        return self.app(scope, receive, send_with_hsts)
