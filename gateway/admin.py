"""The gateway's own endpoints under `/_gateway/`: never proxied, matched before any route."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from gateway import scope as keys
from gateway.errors import send_problem


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await send_problem(send, 404, "No such gateway endpoint.", scope.get(keys.REQUEST_ID, ""))


def gateway_endpoints() -> Router:
    return Router(
        routes=[Route("/_gateway/health", health, methods=["GET", "HEAD"])],
        redirect_slashes=False,
        default=_not_found,
    )
