"""create_app(): the ASGI application, its middleware chain, the lifespan that owns the shared client, and
reloading: a new generation of all that, switched to atomically."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from gateway.cache import CacheMiddleware, CacheStore, MemoryCacheStore, RedisCacheStore
from gateway.client.shared import create_client, upstream_tls
from gateway.errors import PROBLEM_TYPE, problem_body
from gateway.exchange import request_id_of
from gateway.ops import heap
from gateway.ops.admin import gateway_routes, not_found
from gateway.ops.metrics import FOLD_INTERVAL, GatewayMetrics
from gateway.ops.workers import supervisor_pid
from gateway.plan import Plan, Resources, RoutePlan, plan
from gateway.proxy.endpoint import ProxyEndpoint
from gateway.proxy.retries import RetryPolicy
from gateway.proxy.static import StaticEndpoint
from gateway.ratelimit import MemoryStore, RedisStore, Store
from gateway.routing.table import GatewayRouter, RouteTable
from gateway.stages.clientip_resolver import ClientIPResolver
from gateway.stages.pipeline import Pipeline, RoutePass
from gateway.stages.user_middleware import from_settings, wrap
from gateway.upstream.health import HealthChecker
from gateway.upstream.pool import Upstream, UpstreamPool
from gateway.upstream.selection import balancer_for
from settings import (
    CacheStoreSettings,
    GatewaySettings,
    RouteSettings,
    SettingsError,
    UpstreamSettings,
    load_settings,
)
from settings.gateway import CONFIG_VARIABLE

logger = logging.getLogger("gateway.reload")
WATCH_INTERVAL = 1.0  # seconds between looks at the config file, with `server.watch_config`


def create_app(
    settings: GatewaySettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    middleware: Sequence[Middleware] = (),
    settings_source: Callable[[], GatewaySettings] = load_settings,
) -> Starlette:
    """The gateway as a Starlette app.

    `settings` defaults to load_settings() (environment, .env, GATEWAY_CONFIG); `transport` goes under the
    shared httpx client (tests pass `httpx.MockTransport`); `middleware` runs after the request id is set
    and before the route is matched (after those from settings). A wrong middleware setting raises
    SettingsError naming the key. A reload (SIGHUP, `POST /_gateway/reload`) reads `settings_source()`.
    """
    runtime = Runtime(settings_source, transport, middleware)
    generation = runtime.build(settings or load_settings())
    app = GatewayApp(
        routes=generation.routes,
        middleware=generation.chain,
        exception_handlers={500: _internal_error},
        lifespan=runtime.lifespan,
    )
    app.router.redirect_slashes = False
    app.router.default = not_found
    try:
        app.build_middleware_stack()  # a trial build, so that a middleware refusing its options stops start-up
    except (TypeError, ValueError) as exc:
        raise SettingsError([f"middleware: {exc}"]) from None
    runtime.attach(app, generation)
    return app


# The gateway's own layers, which let a splice message (gateway.edge.splice) through to the server.
SPLICE_AWARE = frozenset({Pipeline, GatewayRouter})


class GatewayApp(Starlette):
    """The gateway's Starlette app, which the edge server asks whether it may offer splicing."""

    def accepts_splice(self) -> bool:
        """True while the app's middleware are all the gateway's own: one added by settings, by `create_app`'s
        `middleware` or by `add_middleware` might not know the splice message (GZip would drop it)."""
        return all(cast(object, entry.cls) in SPLICE_AWARE for entry in self.user_middleware)


@dataclass
class Generation:
    """Everything built from one version of the settings; requests started on it finish on it."""

    settings: GatewaySettings
    chain: list[Middleware]
    routes: list[BaseRoute]
    pools: dict[str, UpstreamPool]
    checkers: list[HealthChecker]
    client: httpx.AsyncClient
    store: Store | None
    cache: CacheStore | None


class Runtime:
    """Builds generations and switches between them: the reload, the lifespan and the SIGHUP handler.

    A reload validates and builds the new generation completely before switching, in one step with no await,
    so that a request sees either the old configuration or the new one. Unchanged parts carry over: the shared
    client when `[client]` is unchanged, the rate-limit store (and so the buckets of unchanged policies) when
    its settings are unchanged, and each upstream instance (health, ejection, counters) whose route prefix and
    settings are unchanged. Replaced clients and stores are closed at shutdown.
    """

    def __init__(
        self,
        settings_source: Callable[[], GatewaySettings],
        transport: httpx.AsyncBaseTransport | None,
        middleware: Sequence[Middleware],
    ) -> None:
        self._source = settings_source
        self._transport = transport
        self._middleware = middleware
        self._current: Generation | None = None
        self._app: Starlette | None = None
        self._checks: list[asyncio.Task[None]] = []
        self._retired: list[httpx.AsyncClient | Store | CacheStore] = []
        self._lock = asyncio.Lock()
        self.metrics: GatewayMetrics | None = None

    def build(self, settings: GatewaySettings) -> Generation:
        previous = self._current
        if previous is not None and previous.settings.client == settings.client:
            client = previous.client
        else:
            client = create_client(settings.client, self._transport)
        store = previous.store if previous is not None and _same_store(previous.settings, settings) else None
        store = store or _rate_limit_store(settings)
        cache: CacheStore | None = None
        if any(route.cache.enabled for route in settings.routes):
            same = previous is not None and previous.cache is not None and previous.settings.cache == settings.cache
            cache = previous.cache if same and previous is not None else _cache_store(settings.cache)
        upstreams = {
            (prefix, upstream.settings): upstream
            for prefix, pool in (previous.pools.items() if previous is not None else ())
            for upstream in pool.upstreams
        }
        pools = {
            route.prefix: _pool(route, index, upstreams)
            for index, route in enumerate(settings.routes)
            if route.upstreams
        }
        metrics = self.metrics
        if settings.metrics.enabled:
            metrics = metrics or GatewayMetrics(pools, [store, cache])
            metrics.track(pools, [store, cache])
        tls = upstream_tls(settings.client)
        served_metrics = metrics if settings.metrics.enabled else None
        layout = plan(settings)
        resources = Resources(ClientIPResolver(settings.proxy.trusted_proxies), store, served_metrics)
        table = RouteTable(
            {
                route.route.prefix: _route_app(
                    layout, route, resources, client, pools.get(route.route.prefix), tls, cache
                )
                for route in layout.routes
            }
        )
        checkers = [
            HealthChecker(pools[route.prefix], route.balancing.health_check, client)
            for route in settings.routes
            if route.upstreams and route.balancing.health_check is not None
        ]
        # The global pass first; the route table is the innermost middleware: proxied and static requests end
        # there, so they skip Starlette's exception middleware and router, which serve only `/_gateway/...`
        # and the lifespan.
        count_in = settings.access_log.enabled or served_metrics is not None
        chain = [
            Middleware(Pipeline, stages=layout.build_global(resources), count_in=count_in),
            *from_settings(settings.middleware, "middleware"),
            *self._middleware,
            Middleware(GatewayRouter, table=table),
        ]
        routes = gateway_routes(settings, pools, served_metrics, self.reload, cache)
        self.metrics = metrics
        return Generation(settings, chain, routes, pools, checkers, client, store, cache)

    def attach(self, app: Starlette, generation: Generation) -> None:
        self._app = app
        self._current = generation
        app.state.settings = generation.settings
        app.state.client = generation.client
        app.state.metrics = self.metrics if generation.settings.metrics.enabled else None

    async def reload(self) -> list[str]:
        """Switch to `settings_source()`; the problems (one `key: reason` each) when it is refused."""
        supervisor = supervisor_pid()
        if supervisor is not None:
            return self._replace_workers(supervisor)
        async with self._lock:
            assert self._app is not None and self._current is not None
            old = self._current
            try:
                generation = self.build(self._source())
                app = self._app
                app.user_middleware = generation.chain
                stack = app.build_middleware_stack()
            except SettingsError as exc:
                logger.error("reload refused, still serving the previous configuration: %s", "; ".join(exc.problems))
                self._restore(old)
                return exc.problems
            except (TypeError, ValueError) as exc:
                logger.error("reload refused, still serving the previous configuration: middleware: %s", exc)
                self._restore(old)
                return [f"middleware: {exc}"]
            # The switch: no await from here on.
            app.router.routes = generation.routes
            app.middleware_stack = stack
            self.attach(app, generation)
            self._stop_checks()
            self._start_checks()
            for resource in (old.client, old.store, old.cache):
                if resource is not None and resource not in (generation.client, generation.store, generation.cache):
                    self._retired.append(resource)
        logger.warning("configuration reloaded: %d routes", len(generation.settings.routes))
        return []

    def _replace_workers(self, supervisor: int) -> list[str]:
        """With several workers, each has its own generation: once the sources validate, the supervisor replaces
        the workers one by one (uvicorn's SIGHUP), each new one serving before an old one stops."""
        try:
            self._source()
        except SettingsError as exc:
            logger.error("reload refused, still serving the previous configuration: %s", "; ".join(exc.problems))
            return exc.problems
        os.kill(supervisor, signal.SIGHUP)
        logger.warning("configuration valid: the workers are being replaced one by one")
        return []

    def _restore(self, old: Generation) -> None:
        """Undo what a refused build touched (the Starlette app's middleware list, the metrics' pools)."""
        assert self._app is not None
        self._app.user_middleware = old.chain
        if self.metrics is not None:
            self.metrics.track(old.pools, [old.store, old.cache])

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._start_checks()
        hangup = _on_sighup(lambda: asyncio.ensure_future(self.reload()))
        assert self._current is not None
        config_file = os.environ.get(CONFIG_VARIABLE)
        watching = self._current.settings.server.watch_config and config_file and supervisor_pid() is None
        watcher = asyncio.create_task(self._watch(Path(config_file))) if watching and config_file else None
        folder = asyncio.create_task(self._fold_metrics())
        heap.settle()
        try:
            yield
        finally:
            hangup()
            folder.cancel()
            if self.metrics is not None:
                self.metrics.fold()  # this worker's last exchanges, for the other workers' scrapes
            if watcher is not None:
                watcher.cancel()
            self._stop_checks()
            await asyncio.gather(*self._checks, return_exceptions=True)
            assert self._current is not None
            for resource in [self._current.client, self._current.store, self._current.cache, *self._retired]:
                if resource is not None:
                    await resource.aclose()

    async def _watch(self, path: Path) -> None:
        """Reload when the config file's modification time or size changes (a poll: no extra dependency)."""
        seen = _stamp(path)
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            stamp = _stamp(path)
            if stamp != seen:
                seen = stamp
                logger.warning("%s changed: reloading", path)
                await self.reload()

    async def _fold_metrics(self) -> None:
        while True:
            await asyncio.sleep(FOLD_INTERVAL)
            if self.metrics is not None:
                self.metrics.fold()

    def _start_checks(self) -> None:
        assert self._current is not None
        self._checks = [asyncio.create_task(checker.run()) for checker in self._current.checkers]

    def _stop_checks(self) -> None:
        for task in self._checks:
            task.cancel()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def _on_sighup(reload: Callable[[], object]) -> Callable[[], None]:
    """Reload on SIGHUP, where this process can take signals (the main thread); returns the undo."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread (tests), or no SIGHUP
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


def _same_store(old: GatewaySettings, new: GatewaySettings) -> bool:
    fields = ("store", "redis_url", "redis_timeout", "max_keys")
    return all(getattr(old.rate_limit, name) == getattr(new.rate_limit, name) for name in fields)


def _pool(route: RouteSettings, index: int, existing: Mapping[tuple[str, UpstreamSettings], Upstream]) -> UpstreamPool:
    """The route's instances and balancer; a balancer that cannot be loaded stops start-up naming the key.
    Instances in `existing` (from before a reload) are kept, with their health and counters."""
    balancing = route.balancing
    try:
        balancer = balancer_for(balancing.policy)
    except (ValueError, TypeError) as exc:
        raise SettingsError([f"routes[{index}].balancing.policy: {exc}"]) from None
    return UpstreamPool(
        [existing.get((route.prefix, upstream)) or Upstream(upstream) for upstream in route.upstreams],
        balancer,
        balancing.outlier,
        max_in_flight=balancing.max_in_flight,
        panic=balancing.panic,
    )


def _cache_store(settings: CacheStoreSettings) -> CacheStore:
    if settings.store == "redis":
        return RedisCacheStore(settings.redis_url, settings.redis_timeout, settings.keep_stale_seconds)
    return MemoryCacheStore(settings.max_bytes)


def _rate_limit_store(settings: GatewaySettings) -> Store | None:
    """The one bucket store, when any policy needs it."""
    limits = settings.rate_limit
    if not limits.policies and not any(route.rate_limit for route in settings.routes):
        return None
    if limits.store == "redis":
        return RedisStore(limits.redis_url, limits.redis_timeout)
    return MemoryStore(limits.max_keys)


def _route_app(
    layout: Plan,
    route_plan: RoutePlan,
    resources: Resources,
    client: httpx.AsyncClient,
    pool: UpstreamPool | None,
    tls: ssl.SSLContext,
    cache: CacheStore | None,
) -> ASGIApp:
    """The route's endpoint inside its user middleware and cache, behind its stages (outermost first: the cache
    answers only what the route's filters and authentication let through)."""
    route, index = route_plan.route, route_plan.index
    endpoint: ASGIApp
    if route.static_dir is not None:
        endpoint = StaticEndpoint(route.prefix, route.static_dir)
    else:
        assert pool is not None
        if route.upstream_tls is not None:
            tls = upstream_tls(route.upstream_tls)
        retries = RetryPolicy(route.balancing.retries)
        endpoint = ProxyEndpoint(route, client, resources.resolver, pool, retries, tls, splice=route_plan.splice)
    inner = from_settings(route_plan.middleware, f"routes[{index}].middleware")
    if route_plan.cache and cache is not None:
        inner.append(Middleware(CacheMiddleware, settings=route.cache, store=cache))
    try:
        app = wrap(endpoint, inner)
    except (TypeError, ValueError) as exc:
        raise SettingsError([f"routes[{index}].middleware: {exc}"]) from None
    stages = layout.build_route(route_plan, resources)
    return RoutePass(app, stages) if stages else app


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Last resort for a bug in the gateway or a user middleware; the traceback goes to the server log only."""
    request_id = request_id_of(request.scope)
    body = problem_body(500, "The gateway failed to handle this request.", request_id)
    return Response(body, 500, {"x-request-id": request_id} if request_id else None, media_type=PROBLEM_TYPE)
