"""The gateway's own endpoints under `/_gateway/`: never proxied, matched before any route."""

from __future__ import annotations

import time
from collections.abc import Mapping
from ipaddress import ip_address

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway import scope as keys
from gateway.errors import PROBLEM_TYPE, problem_body, send_problem
from gateway.upstreams import UpstreamPool


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Default of the Starlette router, which only ever sees `/_gateway/...` requests."""
    await send_problem(send, 404, "No such gateway endpoint.", scope.get(keys.REQUEST_ID, ""))


def _from_loopback(request: Request) -> bool:
    client = request.scope.get(keys.CLIENT_IP) or (request.client.host if request.client else "")
    try:
        return ip_address(client).is_loopback
    except ValueError:
        return False


def gateway_routes(pools: Mapping[str, UpstreamPool]) -> list[BaseRoute]:
    async def upstreams(request: Request) -> Response:
        """Each route's instances with health, in-flight requests and counters. Loopback only for now."""
        if not _from_loopback(request):
            return Response(
                problem_body(403, "Gateway endpoints answer only on loopback.", request.scope.get(keys.REQUEST_ID, "")),
                403,
                media_type=PROBLEM_TYPE,
            )
        now = time.monotonic()
        return JSONResponse({prefix: [u.describe(now) for u in pool.upstreams] for prefix, pool in pools.items()})

    return [
        Route("/_gateway/health", health, methods=["GET", "HEAD"]),
        Route("/_gateway/upstreams", upstreams, methods=["GET"]),
    ]
