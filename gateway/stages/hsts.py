"""Strict-Transport-Security on every answer sent over HTTPS (`tls.hsts_max_age`)."""

from __future__ import annotations

from starlette.types import Scope

from gateway.exchange import Exchange
from gateway.proxy.headers import Header
from gateway.stages.stage import Stage


class HSTSStage(Stage):
    """Adds the header unless the upstream set its own; never on plain HTTP, where browsers ignore it."""

    name = "HSTS (Strict-Transport-Security)"

    def __init__(self, max_age: int) -> None:
        self._header = (b"strict-transport-security", b"max-age=%d" % max_age)

    def on_response_head(self, exchange: Exchange, scope: Scope, headers: list[Header]) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            return
        if not any(name.lower() == self._header[0] for name, _ in headers):
            headers.append(self._header)
