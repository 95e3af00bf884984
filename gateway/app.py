"""create_app(): the ASGI application, the generations it serves (each built from the plan), the lifespan that
owns the shared client, and reloading: a new generation, switched to in one assignment."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.cache import CACHE_STORES, CacheMiddleware, CacheStore
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
from gateway.ratelimit import RATE_LIMIT_STORES, Store
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
    RateLimitSettings,
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
    shared httpx client (tests pass `httpx.MockTransport`); `middleware` runs after the global stages and
    before the route is matched (after those from settings). A wrong middleware setting raises
    SettingsError naming the key. A reload (SIGHUP, `POST /_gateway/reload`) reads `settings_source()`.
    """
    runtime = Runtime(settings_source, transport, middleware)
    generation = runtime.build(settings or load_settings())
    app = GatewayApp(runtime)
    runtime.switch_to(generation)
    return app


class GatewayApp(Starlette):
    """The gateway's Starlette app: its stack is built once, the way Starlette builds one (the last-resort error
    handler, then middleware added with `add_middleware`), around the Runtime, which hands each request to the
    current generation. The edge server asks it whether it may offer splicing."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(lifespan=runtime.lifespan)
        self._runtime = runtime
        runtime.serve_lifespan_with(self.router)

    def build_middleware_stack(self) -> ASGIApp:
        """The Runtime (each generation's global pass is its last-resort error handler), inside what was added
        with `add_middleware`, inside Starlette's error middleware when there is any."""
        if not self.user_middleware:
            return self._runtime
        app: ASGIApp = self._runtime
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return ServerErrorMiddleware(app, handler=_internal_error, debug=self.debug)

    def accepts_splice(self) -> bool:
        """True while no middleware but the gateway's own runs before the routes: one added by settings, by
        `create_app`'s `middleware` or by `add_middleware` might not know the splice message (GZip would drop
        it). A route's own middleware turn it off for that route (gateway.plan)."""
        return not self.user_middleware and self._runtime.accepts_splice()


@dataclass
class Generation:
    """Everything built from one version of the settings; requests started on it finish on it."""

    settings: GatewaySettings
    app: ASGIApp  # the global pass, user middleware, the router and the routes
    global_middleware: bool  # whether any user middleware runs before the routes
    pools: dict[str, UpstreamPool]
    checkers: list[HealthChecker]
    client: httpx.AsyncClient
    store: Store | None
    cache: CacheStore | None
    metrics: GatewayMetrics | None


class Runtime:
    """Builds generations and switches between them (Traefik's handler switcher): the reload, the lifespan and
    the SIGHUP handler. Called as an ASGI app, it hands each request to the current generation.

    Building a generation validates and builds it completely and changes nothing; the switch is one assignment,
    with no await, so that a request sees either the old configuration or the new one, and a refused reload
    leaves nothing to undo. Unchanged parts carry over: the shared client when `[client]` is unchanged, the
    rate-limit store (and so the buckets of unchanged policies) when its settings are unchanged, and each
    upstream instance (health, ejection, counters) whose route prefix and settings are unchanged. Replaced
    clients and stores are closed at shutdown.
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
        self._lifespan_app: ASGIApp | None = None
        self._checks: list[asyncio.Task[None]] = []
        self._retired: list[httpx.AsyncClient | Store | CacheStore] = []
        self._lock = asyncio.Lock()
        self.metrics: GatewayMetrics | None = None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "lifespan":
            assert self._lifespan_app is not None
            return self._lifespan_app(scope, receive, send)
        assert self._current is not None
        return self._current.app(scope, receive, send)

    def serve_lifespan_with(self, app: ASGIApp) -> None:
        """The app that runs the lifespan (the Starlette app's own router, which calls `lifespan`)."""
        self._lifespan_app = app

    def accepts_splice(self) -> bool:
        return self._current is not None and not self._current.global_middleware

    def build(self, settings: GatewaySettings) -> Generation:
        """A generation for `settings`, or SettingsError naming what is wrong; nothing in use is changed. A
        client or store made for a generation that is then refused is closed at shutdown with the retired ones."""
        made: list[httpx.AsyncClient | Store | CacheStore] = []
        try:
            return self._assemble(settings, *self._shared_parts(settings, made))
        except BaseException:
            self._retired += made
            raise

    def _shared_parts(
        self, settings: GatewaySettings, made: list[httpx.AsyncClient | Store | CacheStore]
    ) -> tuple[httpx.AsyncClient, Store | None, CacheStore | None]:
        """The client and the stores: the current generation's where their settings are unchanged, else new ones
        (added to `made`)."""
        previous = self._current
        if previous is not None and previous.settings.client == settings.client:
            client = previous.client
        else:
            client = create_client(settings.client, self._transport)
            made.append(client)
        store = previous.store if previous is not None and _same_store(previous.settings, settings) else None
        if store is None and (store := _rate_limit_store(settings)) is not None:
            made.append(store)
        cache: CacheStore | None = None
        if any(route.cache.enabled for route in settings.routes):
            same = previous is not None and previous.cache is not None and previous.settings.cache == settings.cache
            cache = previous.cache if same and previous is not None else None
            if cache is None:
                cache = _cache_store(settings.cache)
                made.append(cache)
        return client, store, cache

    def _assemble(
        self, settings: GatewaySettings, client: httpx.AsyncClient, store: Store | None, cache: CacheStore | None
    ) -> Generation:
        previous = self._current
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
        if settings.metrics.enabled and metrics is None:
            metrics = GatewayMetrics(pools, [store, cache])
        served_metrics = metrics if settings.metrics.enabled else None
        layout = plan(settings)
        resources = Resources(ClientIPResolver(settings.proxy.trusted_proxies), store, served_metrics)
        tls = upstream_tls(settings.client)
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
        # The gateway's own endpoints (`/_gateway/...`) behind Starlette's router and exception middleware;
        # proxied and static requests end in the route table and never pass them.
        endpoints = Router(gateway_routes(settings, pools, served_metrics, self.reload, cache), redirect_slashes=False)
        endpoints.default = not_found
        user = [*from_settings(settings.middleware, "middleware"), *self._middleware]
        count_in = settings.access_log.enabled or served_metrics is not None
        try:
            routed = wrap(GatewayRouter(ExceptionMiddleware(endpoints), table=table), user)
        except (TypeError, ValueError) as exc:  # a middleware refusing its options
            raise SettingsError([f"middleware: {exc}"]) from None
        app = Pipeline(routed, stages=layout.build_global(resources), count_in=count_in)
        return Generation(settings, app, bool(user), pools, checkers, client, store, cache, metrics)

    def switch_to(self, generation: Generation) -> None:
        """Make `generation` current: no await, so every request sees one generation or the other."""
        old = self._current
        self._current = generation
        self.metrics = generation.metrics
        if generation.metrics is not None and generation.settings.metrics.enabled:
            generation.metrics.track(generation.pools, [generation.store, generation.cache])
        if old is not None:
            for resource in (old.client, old.store, old.cache):
                if resource is not None and resource not in (generation.client, generation.store, generation.cache):
                    self._retired.append(resource)

    async def reload(self) -> list[str]:
        """Switch to `settings_source()`; the problems (one `key: reason` each) when it is refused."""
        supervisor = supervisor_pid()
        if supervisor is not None:
            return self._replace_workers(supervisor)
        async with self._lock:
            try:
                generation = self.build(self._source())
            except SettingsError as exc:
                logger.error("reload refused, still serving the previous configuration: %s", "; ".join(exc.problems))
                return exc.problems
            self.switch_to(generation)
            self._stop_checks()
            self._start_checks()
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
    """Whether the rate-limit store's own settings are unchanged (its policies may change freely)."""
    return _store_part(old.rate_limit) == _store_part(new.rate_limit)


def _store_part(limits: RateLimitSettings) -> RateLimitSettings:
    return limits.model_copy(update={"policies": [], "on_store_failure": "open", "headers_on_success": False})


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
    try:
        return CACHE_STORES.make(settings.store, settings)
    except ValueError as exc:
        raise SettingsError([f"cache.store: {exc}"]) from None


def _rate_limit_store(settings: GatewaySettings) -> Store | None:
    """The one bucket store, when any policy needs it."""
    limits = settings.rate_limit
    if not limits.policies and not any(route.rate_limit for route in settings.routes):
        return None
    try:
        return RATE_LIMIT_STORES.make(limits.store, limits)
    except ValueError as exc:
        raise SettingsError([f"rate_limit.store: {exc}"]) from None


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
