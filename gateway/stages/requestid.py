"""Request ids: keep a sane incoming X-Request-ID or make one, and echo it on every response."""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import scope as keys

# Ids a client may choose: short, and nothing that could break a log line or a header.
_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


class RequestIdMiddleware:
    """Settles `scope["gateway.request_id"]` and adds `x-request-id` to the response.

    Trusts an incoming X-Request-ID only as far as its shape; anything else is replaced by a random id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine: it settles the id and wraps send, then hands back the next app's awaitable (one
        # coroutine frame less per exchange).
        if scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _ACCEPTABLE_ID.fullmatch(candidate):
                    request_id = candidate
                break
        # Unique, not secret: the process's seeded PRNG (random reseeds after fork), no system call per request.
        request_id = request_id or f"{random.getrandbits(128):032x}"
        scope[keys.REQUEST_ID] = request_id
        id_header = (b"x-request-id", request_id.encode("latin-1"))

        def send_with_id(message: Message) -> Awaitable[None]:  # hands back send's awaitable, as __call__ does
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message["headers"] = [*message.get("headers", ()), id_header]
            return send(message)

        return self.app(scope, receive, send_with_id)
