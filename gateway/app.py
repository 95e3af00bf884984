"""create_app(): the ASGI application, its middleware chain and the lifespan that owns the shared client."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway import scope as keys
from gateway.admin import gateway_routes, not_found
from gateway.balancers import balancer_for
from gateway.client import create_client, upstream_tls
from gateway.clientip import ClientIPResolver
from gateway.errors import PROBLEM_TYPE, problem_body
from gateway.health import HealthChecker
from gateway.metrics import GatewayMetrics
from gateway.middleware.accesslog import AccessLogMiddleware
from gateway.middleware.chain import from_settings, wrap
from gateway.middleware.clientip import ClientIPMiddleware
from gateway.middleware.hsts import HSTSMiddleware
from gateway.middleware.ipfilter import IPFilterMiddleware
from gateway.middleware.requestid import RequestIdMiddleware
from gateway.proxy import ProxyEndpoint
from gateway.ratelimit import MemoryStore, RateLimitMiddleware, RedisStore, Store
from gateway.retries import RetryPolicy
from gateway.routing import GatewayRouter, RouteTable
from gateway.static import StaticEndpoint
from gateway.upstreams import Upstream, UpstreamPool
from settings import (
    GatewaySettings,
    RateLimitPolicy,
    RateLimitSettings,
    RouteSettings,
    SettingsError,
    load_settings,
)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    """The gateway as a Starlette app.

    `settings` defaults to load_settings() (environment, .env, GATEWAY_CONFIG); `transport` goes under the
    shared httpx client (tests pass `httpx.MockTransport`); `middleware` runs after the request id is set
    and before the route is matched (after those from settings). A wrong middleware setting raises
    SettingsError naming the key.
    """
    settings = settings or load_settings()
    client = create_client(settings.client, transport)
    tls = upstream_tls(settings.client)
    resolver = ClientIPResolver(settings.proxy.trusted_proxies)
    limits = settings.rate_limit
    store = _rate_limit_store(settings)
    pools = {route.prefix: _pool(route, index) for index, route in enumerate(settings.routes) if route.upstreams}
    table = RouteTable(
        {
            route.prefix: _route_stack(route, index, client, resolver, store, limits, pools.get(route.prefix), tls)
            for index, route in enumerate(settings.routes)
        }
    )
    metrics = GatewayMetrics(pools, store) if settings.metrics.enabled else None
    checkers = [
        HealthChecker(pools[route.prefix], route.balancing.health_check, client)
        for route in settings.routes
        if route.upstreams and route.balancing.health_check is not None
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        checks = [asyncio.create_task(checker.run()) for checker in checkers]
        try:
            yield
        finally:
            for task in checks:
                task.cancel()
            await asyncio.gather(*checks, return_exceptions=True)
            await client.aclose()
            if store is not None:
                await store.aclose()

    # Cheap refusals first; the route table is the innermost middleware: proxied and static requests end
    # there, so they skip Starlette's exception middleware and router, which serve only `/_gateway/...`
    # and the lifespan.
    chain = [Middleware(RequestIdMiddleware), Middleware(ClientIPMiddleware, resolver=resolver)]
    if settings.tls.enabled and settings.tls.hsts_max_age:
        chain.insert(0, Middleware(HSTSMiddleware, max_age=settings.tls.hsts_max_age))
    if settings.access_log.enabled or metrics is not None:
        quiet = [route.prefix for route in settings.routes if not route.access_log]
        chain.append(
            Middleware(AccessLogMiddleware, quiet_routes=quiet, log=settings.access_log.enabled, metrics=metrics)
        )
    if settings.ip_filter.active:
        chain.append(Middleware(IPFilterMiddleware, allow=settings.ip_filter.allow, deny=settings.ip_filter.deny))
    if store is not None and limits.policies:
        chain.append(_rate_limits(limits.policies, store, limits, "g:"))
    chain += [*from_settings(settings.middleware, "middleware"), *middleware, Middleware(GatewayRouter, table=table)]
    app = Starlette(
        routes=gateway_routes(settings, pools, metrics),
        middleware=chain,
        exception_handlers={500: _internal_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.router.default = not_found
    try:
        app.build_middleware_stack()  # a trial build, so that a middleware refusing its options stops start-up
    except (TypeError, ValueError) as exc:
        raise SettingsError([f"middleware: {exc}"]) from None
    app.state.settings = settings
    app.state.client = client
    app.state.metrics = metrics
    return app


def _pool(route: RouteSettings, index: int) -> UpstreamPool:
    """The route's instances and balancer; a balancer that cannot be loaded stops start-up naming the key."""
    balancing = route.balancing
    try:
        balancer = balancer_for(balancing.policy)
    except (ValueError, TypeError) as exc:
        raise SettingsError([f"routes[{index}].balancing.policy: {exc}"]) from None
    return UpstreamPool(
        [Upstream(upstream) for upstream in route.upstreams],
        balancer,
        balancing.outlier,
        max_in_flight=balancing.max_in_flight,
        panic=balancing.panic,
    )


def _rate_limit_store(settings: GatewaySettings) -> Store | None:
    """The one bucket store, when any policy needs it."""
    limits = settings.rate_limit
    if not limits.policies and not any(route.rate_limit for route in settings.routes):
        return None
    if limits.store == "redis":
        return RedisStore(limits.redis_url, limits.redis_timeout)
    return MemoryStore(limits.max_keys)


def _rate_limits(
    policies: Sequence[RateLimitPolicy], store: Store, limits: RateLimitSettings, prefix: str
) -> Middleware:
    return Middleware(
        RateLimitMiddleware,
        policies=policies,
        store=store,
        bucket_prefix=prefix,
        fail_closed=limits.on_store_failure == "closed",
        headers_on_success=limits.headers_on_success,
    )


def _route_stack(
    route: RouteSettings,
    index: int,
    client: httpx.AsyncClient,
    resolver: ClientIPResolver,
    store: Store | None,
    limits: RateLimitSettings,
    pool: UpstreamPool | None,
    tls: ssl.SSLContext,
) -> ASGIApp:
    """The route's endpoint inside its own IP filter, rate limits and user middleware (outermost first)."""
    endpoint: ASGIApp
    if route.static_dir is not None:
        endpoint = StaticEndpoint(route.prefix, route.static_dir)
    else:
        assert pool is not None
        if route.upstream_tls is not None:
            tls = upstream_tls(route.upstream_tls)
        endpoint = ProxyEndpoint(route, client, resolver, pool, RetryPolicy(route.balancing.retries), tls)
    stack: list[Middleware] = []
    if route.ip_filter.active:
        stack.append(Middleware(IPFilterMiddleware, allow=route.ip_filter.allow, deny=route.ip_filter.deny))
    if store is not None and route.rate_limit:
        stack.append(_rate_limits(route.rate_limit, store, limits, f"r{index}:"))
    stack += from_settings(route.middleware, f"routes[{index}].middleware")
    try:
        return wrap(endpoint, stack)
    except (TypeError, ValueError) as exc:
        raise SettingsError([f"routes[{index}].middleware: {exc}"]) from None


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Last resort for a bug in the gateway or a user middleware; the traceback goes to the server log only."""
    request_id = request.scope.get(keys.REQUEST_ID, "")
    body = problem_body(500, "The gateway failed to handle this request.", request_id)
    return Response(body, 500, {"x-request-id": request_id} if request_id else None, media_type=PROBLEM_TYPE)
