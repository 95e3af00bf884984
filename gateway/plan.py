"""The plan: settings -> the ordered stages, global and per route. The one place that knows the order.

The app builds its passes from it (gateway.app), `python -m gateway explain` prints it, the README's chain section
is generated from it (`python -m gateway.ops.docs README.md`; a test keeps it current), and whether a route's long
bodies may be spliced is read from it. Adding a built-in feature: a stage module, a line in GLOBAL_STAGES or
ROUTE_STAGES below, and its settings model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.ops.metrics import GatewayMetrics
from gateway.ratelimit import RateLimitStage, Store
from gateway.stages.accesslog import AccessLogStage
from gateway.stages.clientip import ClientIPStage
from gateway.stages.clientip_resolver import ClientIPResolver
from gateway.stages.hsts import HSTSStage
from gateway.stages.ipfilter import IPFilterStage
from gateway.stages.requestid import RequestIdStage
from gateway.stages.stage import Stage
from settings import GatewaySettings, MiddlewareSettings, RateLimitPolicy, RateLimitSettings, RouteSettings


@dataclass(frozen=True, slots=True)
class Resources:
    """What stages are built with beyond their settings: made once per generation by the app."""

    resolver: ClientIPResolver
    store: Store | None
    metrics: GatewayMetrics | None  # None unless [metrics] enabled


@dataclass(frozen=True, slots=True)
class GlobalStage:
    """A global stage in the chain: `when` says which settings put it there (for the docs), `applies` decides it,
    `lines` says what it will do (explain), `build` makes it."""

    name: str
    when: str
    applies: Callable[[GatewaySettings], bool]
    lines: Callable[[GatewaySettings, str], list[str]]
    build: Callable[[GatewaySettings, Resources], Stage]


@dataclass(frozen=True, slots=True)
class RouteStage:
    """A route's stage, as GlobalStage, decided by the route's settings (and the gateway's, for shared ones)."""

    name: str
    when: str
    applies: Callable[[RouteSettings], bool]
    lines: Callable[[RouteSettings, str], list[str]]
    build: Callable[[GatewaySettings, RouteSettings, Resources], Stage]


def _rate_limit_stage(
    policies: Sequence[RateLimitPolicy], limits: RateLimitSettings, store: Store, prefix: str
) -> Stage:
    return RateLimitStage(
        policies=policies,
        store=store,
        bucket_prefix=prefix,
        fail_closed=limits.on_store_failure == "closed",
        headers_on_success=limits.headers_on_success,
    )


def _policy_line(label: str, policy: RateLimitPolicy, method: str) -> str:
    applies = not policy.methods or method.upper() in policy.methods
    name = f" {policy.name}" if policy.name else ""
    note = "" if applies else f" — not for {method.upper()}"
    return f"{label}{name}: {policy.rate}/s, burst {policy.burst}, per {policy.key}{note}"


def _store(resources: Resources) -> Store:
    assert resources.store is not None, "a rate-limit stage is planned only where the store is made"
    return resources.store


def _trusted(settings: GatewaySettings) -> str:
    return ", ".join(str(network) for network in settings.proxy.trusted_proxies) or "none"


# The global stages, in the order their request hooks run (response-head hooks run in reverse).
GLOBAL_STAGES: tuple[GlobalStage, ...] = (
    GlobalStage(
        "HSTS",
        "`[tls]` with `hsts_max_age`",
        lambda s: s.tls.enabled and bool(s.tls.hsts_max_age),
        lambda s, method: [f"HSTS (max-age {s.tls.hsts_max_age})"],
        lambda s, r: HSTSStage(s.tls.hsts_max_age),
    ),
    GlobalStage(
        "request id",
        "always",
        lambda s: True,
        lambda s, method: ["request id (X-Request-ID)"],
        lambda s, r: RequestIdStage(),
    ),
    GlobalStage(
        "client IP",
        "always (`[proxy] trusted_proxies`)",
        lambda s: True,
        lambda s, method: [f"client IP (trusted proxies: {_trusted(s)})"],
        lambda s, r: ClientIPStage(r.resolver),
    ),
    GlobalStage(
        "access log and metrics",
        "`[access_log]` or `[metrics]` enabled",
        lambda s: s.access_log.enabled or s.metrics.enabled,
        lambda s, method: ["access log and metrics"],
        lambda s, r: AccessLogStage(
            quiet_routes=[route.prefix for route in s.routes if not route.access_log],
            log=s.access_log.enabled,
            metrics=r.metrics,
        ),
    ),
    GlobalStage(
        "IP filter",
        "`[ip_filter]`",
        lambda s: s.ip_filter.active,
        lambda s, method: ["IP filter (global)"],
        lambda s, r: IPFilterStage(s.ip_filter.allow, s.ip_filter.deny),
    ),
    GlobalStage(
        "rate limits",
        "`[[rate_limit.policies]]`",
        lambda s: bool(s.rate_limit.policies),
        lambda s, method: [_policy_line("rate limit (global)", p, method) for p in s.rate_limit.policies],
        lambda s, r: _rate_limit_stage(s.rate_limit.policies, s.rate_limit, _store(r), "g:"),
    ),
)

# A route's stages, in order, after routing and before the route's user middleware.
ROUTE_STAGES: tuple[RouteStage, ...] = (
    RouteStage(
        "IP filter",
        "`[routes.ip_filter]`",
        lambda route: route.ip_filter.active,
        lambda route, method: [f"IP filter ({route.prefix})"],
        lambda s, route, r: IPFilterStage(route.ip_filter.allow, route.ip_filter.deny),
    ),
    RouteStage(
        "rate limits",
        "`[[routes.rate_limit]]`",
        lambda route: bool(route.rate_limit),
        lambda route, method: [_policy_line(f"rate limit ({route.prefix})", p, method) for p in route.rate_limit],
        lambda s, route, r: _rate_limit_stage(route.rate_limit, s.rate_limit, _store(r), f"r:{route.prefix}:"),
    ),
)


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """One route's part of the plan: its stages, its user middleware, whether its cache runs, and whether its
    long bodies may be spliced (nothing between its endpoint and the server needs to see them)."""

    route: RouteSettings
    index: int
    stages: tuple[RouteStage, ...]
    middleware: Sequence[MiddlewareSettings]
    cache: bool
    splice: bool


@dataclass(frozen=True, slots=True)
class Plan:
    settings: GatewaySettings
    stages: tuple[GlobalStage, ...]
    middleware: Sequence[MiddlewareSettings]  # global user middleware from settings, before create_app's
    routes: tuple[RoutePlan, ...]

    def build_global(self, resources: Resources) -> list[Stage]:
        return [stage.build(self.settings, resources) for stage in self.stages]

    def build_route(self, route: RoutePlan, resources: Resources) -> list[Stage]:
        return [stage.build(self.settings, route.route, resources) for stage in route.stages]

    def lines(self, route: RoutePlan, method: str) -> list[str]:
        """The chain one request to `route` goes through, outermost first (explain)."""
        lines = [line for stage in self.stages for line in stage.lines(self.settings, method)]
        lines += [f"middleware {item.dotted_path} (global)" for item in self.middleware]
        lines += [line for stage in route.stages for line in stage.lines(route.route, method)]
        lines += [f"middleware {item.dotted_path} ({route.route.prefix})" for item in route.middleware]
        if route.cache:
            lines.append(f"cache ({route.route.prefix})")
        return lines


def plan(settings: GatewaySettings) -> Plan:
    """The ordered stages for these settings, global and per route."""
    routes = tuple(_route_plan(settings, route, index) for index, route in enumerate(settings.routes))
    stages = tuple(stage for stage in GLOBAL_STAGES if stage.applies(settings))
    return Plan(settings, stages, settings.middleware, routes)


def _route_plan(settings: GatewaySettings, route: RouteSettings, index: int) -> RoutePlan:
    cache = route.cache.enabled and route.static_dir is None
    splice = settings.server.splice and route.static_dir is None and not route.middleware and not cache
    stages = tuple(stage for stage in ROUTE_STAGES if stage.applies(route))
    return RoutePlan(route, index, stages, route.middleware, cache, splice)


def chain_section() -> str:
    """The README's chain section: every stage the plan may hold, in order, with the settings that put it there."""
    rows = [
        "| where | step | when |",
        "|---|---|---|",
        "| app | middleware added with `app.add_middleware` (inside Starlette's error middleware) | when added |",
        "| global | the last resort: a 500 problem for an exception before anything was sent | always |",
    ]
    rows += [f"| global | {stage.name} | {stage.when} |" for stage in GLOBAL_STAGES]
    rows += [
        "| global | middleware from settings (`[[middleware]]`) | when named |",
        "| global | middleware from `create_app(middleware=...)` | when given |",
        "| router | 400 for unsafe targets, `/_gateway/` endpoints, 404 | always |",
    ]
    rows += [f"| route | {stage.name} | {stage.when} |" for stage in ROUTE_STAGES]
    rows += [
        "| route | the route's middleware (`[[routes.middleware]]`) | when named |",
        "| route | cache | `[routes.cache] enabled` |",
        "| route | the proxy or static endpoint | always |",
    ]
    return "\n".join(rows)
