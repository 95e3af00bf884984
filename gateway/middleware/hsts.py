"""Strict-Transport-Security on every answer sent over HTTPS (`tls.hsts_max_age`)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HSTSMiddleware:
    """Adds the header unless the upstream set its own; never on plain HTTP, where browsers ignore it."""

    def __init__(self, app: ASGIApp, *, max_age: int) -> None:
        self.app = app
        self._header = (b"strict-transport-security", b"max-age=%d" % max_age)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == self._header[0] for name, _ in headers):
                    headers.append(self._header)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_hsts)
