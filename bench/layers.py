"""The gateway cut short at each layer, served as `python -m gateway serve` serves it, for bench/run.py --layers:
what a small proxied request's CPU goes to under wrk, layer by layer, in the same run as the whole gateway.

    python -m bench.layers {server,app,relay} ORIGIN_URL [--port 18100]

- server: a bare ASGI app (two sends) on the gateway's server (edge protocol, loop, options): the server alone.
- app: the gateway (default settings, one route to ORIGIN_URL) whose route answers in a middleware of its own
  before the proxy endpoint: the server, the app's middleware chain, the route match and the access log.
- relay: the whole gateway over a transport that answers at once (no upstream connection, no parsing): adds the
  proxy endpoint and the shared client. What the whole gateway costs beyond this is RelayTransport and the
  upstream's system calls.

Each answers every request with the same 18-byte body as the origin's `/`, so only the small scenarios apply.
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app import create_app
from gateway.client.prebuilt import PairHeaders, prebuilt_response
from gateway.client.transport import COMPLETE_BODY
from gateway.edge.runner import GatewayConfig, server_options
from gateway.ops.logs import configure_logging
from settings import GatewaySettings

BODY = b"hello from origin\n"
FIELDS = ((b"content-type", b"text/plain"), (b"content-length", b"18"), (b"cache-control", b"max-age=3600"))
# What nginx's origin sends for `/` (bench/run.py's NGINX_ORIGIN).
ORIGIN_FIELDS = [
    (b"Server", b"nginx"),
    (b"Date", b"Fri, 27 Nov 2026 15:00:00 GMT"),
    (b"Content-Type", b"text/plain"),
    (b"Content-Length", b"18"),
    (b"Connection", b"keep-alive"),
    (b"Cache-Control", b"max-age=3600"),
]


async def answer(send: Send) -> None:
    # Fresh messages each time: middleware may add to them (the request id does).
    await send({"type": "http.response.start", "status": 200, "headers": list(FIELDS)})
    await send({"type": "http.response.body", "body": BODY})


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await answer(send)


class AnswerAtOnce:
    """Route middleware that answers instead of the proxy endpoint."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await answer(send)


class AnsweringTransport(httpx.AsyncBaseTransport):
    """Answers as RelayTransport does for a small response that came whole with its head, without an upstream."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        extensions = {"http_version": b"HTTP/1.1", COMPLETE_BODY: BODY}
        return prebuilt_response(200, PairHeaders(list(ORIGIN_FIELDS)), httpx.ByteStream(BODY), extensions)


def layer_app(layer: str, origin: str) -> tuple[Any, GatewaySettings]:
    route: dict[str, Any] = {"prefix": "/", "upstreams": [origin], "max_body_bytes": None}
    if layer == "app":
        route["middleware"] = [{"factory": "bench.layers:AnswerAtOnce"}]
    settings = GatewaySettings.model_validate({"routes": [route], "server": {"log_level": "warning"}})
    if layer == "server":
        return bare_app, settings
    configure_logging(settings.server.log_level, settings.access_log)
    return create_app(settings, transport=AnsweringTransport() if layer == "relay" else None), settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("layer", choices=("server", "app", "relay"))
    parser.add_argument("origin", help="the upstream's URL (app and relay route to it but never reach it)")
    parser.add_argument("--port", type=int, default=18100)
    args = parser.parse_args()
    app, settings = layer_app(args.layer, args.origin)
    options = server_options(settings, host="127.0.0.1", port=args.port)
    config = GatewayConfig(app, limits=settings.limits, **{**options, "workers": 1})
    if args.layer == "server":
        config.lifespan = "off"
    uvicorn.Server(config).run(sockets=[config.bind_socket()])


if __name__ == "__main__":
    main()
