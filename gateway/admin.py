"""The gateway's own endpoints under `/_gateway/`: never proxied, matched before any route."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway import scope as keys
from gateway.errors import send_problem


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Default of the Starlette router, which only ever sees `/_gateway/...` requests."""
    await send_problem(send, 404, "No such gateway endpoint.", scope.get(keys.REQUEST_ID, ""))


def gateway_routes() -> list[BaseRoute]:
    return [Route("/_gateway/health", health, methods=["GET", "HEAD"])]
