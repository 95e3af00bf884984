"""Request ids: keep a sane incoming X-Request-ID or make one, and echo it on every response."""

from __future__ import annotations

import random
import re

from starlette.types import Scope

from gateway.exchange import Exchange
from gateway.proxy.headers import Header
from gateway.stages.stage import Stage

# Ids a client may choose: short, and nothing that could break a log line or a header.
_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


class RequestIdStage(Stage):
    """Settles `exchange.request_id` and adds `x-request-id` to the response.

    Trusts an incoming X-Request-ID only as far as its shape; anything else is replaced by a random id.
    """

    name = "request id (X-Request-ID)"

    def on_request(self, exchange: Exchange, scope: Scope) -> None:
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _ACCEPTABLE_ID.fullmatch(candidate):
                    request_id = candidate
                break
        # Unique, not secret: the process's seeded PRNG (random reseeds after fork), no system call per request.
        exchange.request_id = request_id or f"{random.getrandbits(128):032x}"

    def on_response_head(self, exchange: Exchange, scope: Scope, headers: list[Header]) -> None:
        headers.append((b"x-request-id", exchange.request_id.encode("latin-1")))
