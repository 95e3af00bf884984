"""`python -m gateway routes` and `python -m gateway explain METHOD PATH`: the route table, and what the
gateway would do with one request, from the settings alone (nothing is started, no upstream is called)."""

from __future__ import annotations

from gateway.ops.admin import shown_path
from gateway.plan import plan
from gateway.routing.paths import BadTarget, routing_path, strip_segments
from gateway.routing.table import RouteTable, by_precedence, in_gateway_namespace
from settings import GatewaySettings, RouteSettings


def route_lines(settings: GatewaySettings) -> list[str]:
    """One line per route, longest prefix first (the order in which they win)."""
    lines = []
    for route in by_precedence(settings.routes):
        if route.static_dir is not None:
            target = f"static files in {shown_path(route.static_dir)}"
        else:
            target = ", ".join(f"{upstream.url} (weight {upstream.weight})" for upstream in route.upstreams)
            target += f"  [{route.balancing.policy}]"
        options = [name for name in ("strip_prefix", "preserve_host") if getattr(route, name)]
        suffix = f"  [{', '.join(options)}]" if options else ""
        lines.append(f"{route.prefix:<20} -> {target}{suffix}")
    return lines


def explain(settings: GatewaySettings, method: str, target: str) -> list[str]:
    """Which route, which middleware in which order, where the request would go, and with which limits."""
    path, _, query = target.partition("?")
    raw_path = path.encode()
    lines = [f"{method} {target}"]
    try:
        routing = routing_path(raw_path)
    except BadTarget as exc:
        return [*lines, f"  refused with 400 before any route: {exc}"]
    if in_gateway_namespace(routing):
        return [*lines, "  a gateway endpoint (/_gateway/...): never proxied; guarded by [admin] except health"]
    table = RouteTable({route.prefix: route for route in settings.routes})  # type: ignore[misc]
    found = table.match(routing)
    if found is None:
        return [*lines, "  no route matches: 404"]
    prefix, matched = found
    route: RouteSettings = matched  # type: ignore[assignment]
    lines.append(f"  route: {prefix}")
    lines.append("  middleware, outermost first:")
    layout = plan(settings)
    planned = next(candidate for candidate in layout.routes if candidate.route is route)
    lines += [f"    {step}" for step in layout.lines(planned, method)]
    if route.static_dir is not None:
        lines.append(f"  answered from static files in {shown_path(route.static_dir)}")
        return lines
    upstream_path = strip_segments(raw_path, prefix.encode()).decode() if route.strip_prefix else path
    sent = upstream_path + (f"?{query}" if query else "")
    balancing = route.balancing
    lines.append(f"  upstreams ({balancing.policy}): " + ", ".join(upstream.url for upstream in route.upstreams))
    lines.append(
        f"  sent upstream as: {method} <instance>{sent}  (Host: {'client' if route.preserve_host else 'upstream'})"
    )
    retries = balancing.retries
    lines.append(
        f"  retries: {retries.attempts - 1} more tries at most, on {retries.on_statuses} for idempotent requests"
    )
    timeouts = route.timeouts
    header = f", response head within {timeouts.response_header} s" if timeouts.response_header else ""
    lines.append(
        f"  timeouts: connect {timeouts.connect} s, read {timeouts.read} s, write {timeouts.write} s, "
        f"pool {timeouts.pool} s{header}"
    )
    body = "no limit" if route.max_body_bytes is None else f"{route.max_body_bytes} bytes"
    lines.append(f"  request body: {body}")
    return lines
