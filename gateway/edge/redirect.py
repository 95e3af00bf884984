"""The plain-HTTP listener next to an HTTPS one: every request gets a 308 to the same URL over https."""

from __future__ import annotations

import re

from starlette.types import Receive, Scope, Send

from gateway.errors import send_problem

# A host name or IP literal, with an optional port (dropped: the https port replaces it).
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(:[0-9]*)?")


class RedirectToHttps:
    """308 keeps the method and body, so a POST sent to http:// is not silently turned into a GET."""

    def __init__(self, https_port: int) -> None:
        self._port_suffix = "" if https_port == 443 else f":{https_port}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # a WebSocket handshake on the plain port is refused by the server
        host = next((value for name, value in scope["headers"] if name == b"host"), b"")
        match = _HOST.fullmatch(host)
        if match is None:
            await send_problem(send, 400, "The request needs a valid Host header.")
            return
        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        location = b"https://" + match.group(1) + self._port_suffix.encode() + target
        await send(
            {
                "type": "http.response.start",
                "status": 308,
                "headers": [(b"location", location), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
