"""The gateway's own endpoints under `/_gateway/`: never proxied, matched before any route.

`/_gateway/health` is open (platform health checks). Everything else is guarded by `[admin]`: loopback only
by default; an `allow` list of networks and/or a bearer `token` open it to others.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway.cache import CacheStore
from gateway.errors import PROBLEM_TYPE, problem_body, send_problem
from gateway.exchange import exchange_of, request_id_of
from gateway.ops.metrics import GatewayMetrics
from gateway.routing.table import by_precedence
from gateway.stages.netset import NetworkSet
from gateway.upstream.pool import UpstreamPool
from settings import AdminSettings, GatewaySettings

Endpoint = Callable[[Request], Awaitable[Response]]
DASHBOARD = Path(__file__).with_name("dashboard.html")  # one page, no build step, nothing from the internet
# scheme://user:password@host -> scheme://user:***@host, for URLs anywhere in the effective configuration.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]*:)[^/@\s]+(?P<tail>@)", re.IGNORECASE)


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Default of the Starlette router, which only ever sees `/_gateway/...` requests."""
    await send_problem(send, 404, "No such gateway endpoint.", request_id_of(scope))


class AdminGuard:
    """Decides who may call a guarded endpoint: an allowed address, and the bearer token when one is set."""

    def __init__(self, settings: AdminSettings) -> None:
        networks = settings.networks
        self._networks = None if networks is None else NetworkSet(networks)
        self._token = settings.token.get_secret_value().encode() if settings.token is not None else None

    def refusal(self, request: Request, *, token: bool = True) -> Response | None:
        """None when allowed, else the 403 or 401 answer. `token=False` checks the address only (the dashboard's
        page, which holds no data: its script sends the token with each data request)."""
        request_id = request_id_of(request.scope)
        client = exchange_of(request.scope).client_ip
        if self._networks is not None and not self._networks.contains(client):
            body = problem_body(403, "Gateway endpoints are not open to your address.", request_id)
            return Response(body, 403, media_type=PROBLEM_TYPE)
        if self._token is not None and token:
            scheme, _, offered = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(offered.strip().encode(), self._token):
                body = problem_body(401, "A valid bearer token is required.", request_id)
                return Response(body, 401, media_type=PROBLEM_TYPE, headers={"WWW-Authenticate": "Bearer"})
        return None

    def protect(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            return self.refusal(request) or await endpoint(request)

        return guarded


def redacted(settings: GatewaySettings) -> dict[str, Any]:
    """The effective configuration as JSON, secrets masked (SecretStr fields, passwords inside URLs)."""
    masked: dict[str, Any] = _mask_urls(settings.model_dump(mode="json"))
    return masked


def _mask_urls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _mask_urls(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_urls(item) for item in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\g<head>***\g<tail>", value)
    return value


def shown_path(path: Path) -> str:
    """A folder as an operator reads it: relative to where the gateway runs when it lies below, else whole."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def route_table(settings: GatewaySettings) -> list[dict[str, Any]]:
    """Routes as the router sees them: longest prefix first."""
    table = []
    for route in by_precedence(settings.routes):
        table.append(
            {
                "prefix": route.prefix,
                "upstreams": [{"url": upstream.url, "weight": upstream.weight} for upstream in route.upstreams],
                "static_dir": shown_path(route.static_dir) if route.static_dir is not None else None,
                "strip_prefix": route.strip_prefix,
                "balancing": route.balancing.policy,
                "middleware": [item.dotted_path for item in route.middleware],
            }
        )
    return table


def gateway_routes(
    settings: GatewaySettings,
    pools: Mapping[str, UpstreamPool],
    metrics: GatewayMetrics | None,
    reload: Callable[[], Awaitable[list[str]]],
    cache: CacheStore | None = None,
) -> list[BaseRoute]:
    guard = AdminGuard(settings.admin)

    async def purge(request: Request) -> Response:
        """`{"path": "/a/b"}` drops that URL (any query, any host); `"prefix": true` everything below it."""
        request_id = request_id_of(request.scope)
        try:
            order = await request.json()
            path, below = order["path"], bool(order.get("prefix", False))
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(path)
        except (ValueError, KeyError, TypeError):
            body = problem_body(400, 'Send JSON like {"path": "/api/items", "prefix": false}.', request_id)
            return Response(body, 400, media_type=PROBLEM_TYPE)
        dropped = await cache.purge(path, prefix=below) if cache is not None else 0
        return JSONResponse({"purged": dropped})

    async def reload_settings(request: Request) -> Response:
        """Validate the configuration sources again and switch to them, or keep the current one and say why."""
        problems = await reload()
        if problems:
            body = json.loads(problem_body(400, "The new configuration is invalid; nothing changed.", ""))
            body["errors"] = problems
            body["request_id"] = request_id_of(request.scope)
            return JSONResponse(body, 400, media_type=PROBLEM_TYPE)
        return JSONResponse({"status": "reloaded"})

    async def upstreams(request: Request) -> Response:
        """Each route's instances with health, in-flight requests and counters."""
        now = time.monotonic()
        return JSONResponse({prefix: [u.describe(now) for u in pool.upstreams] for prefix, pool in pools.items()})

    async def routes(request: Request) -> Response:
        return JSONResponse(route_table(settings))

    async def config(request: Request) -> Response:
        return JSONResponse(redacted(settings))

    endpoints: list[BaseRoute] = [
        Route("/_gateway/health", health, methods=["GET", "HEAD"]),
        Route("/_gateway/upstreams", guard.protect(upstreams), methods=["GET"]),
        Route("/_gateway/routes", guard.protect(routes), methods=["GET"]),
        Route("/_gateway/config", guard.protect(config), methods=["GET"]),
        Route("/_gateway/reload", guard.protect(reload_settings), methods=["POST"]),
        Route("/_gateway/cache/purge", guard.protect(purge), methods=["POST"]),
    ]
    if metrics is not None:

        async def metrics_text(request: Request) -> Response:
            return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

        async def stats(request: Request) -> Response:
            """What the dashboard polls: cumulative totals, the route table and upstream state."""
            now = time.monotonic()
            return JSONResponse(
                {
                    "metrics": metrics.snapshot(),
                    "routes": route_table(settings),
                    "upstreams": {prefix: [u.describe(now) for u in pool.upstreams] for prefix, pool in pools.items()},
                    "cache_enabled": any(route.cache.enabled for route in settings.routes),
                }
            )

        async def dashboard(request: Request) -> Response:
            return guard.refusal(request, token=False) or HTMLResponse(DASHBOARD.read_bytes())

        endpoints += [
            Route("/_gateway/metrics", guard.protect(metrics_text), methods=["GET"]),
            Route("/_gateway/stats", guard.protect(stats), methods=["GET"]),
            Route("/_gateway/", dashboard, methods=["GET"]),
            Route("/_gateway", dashboard, methods=["GET"]),
        ]
    return endpoints
