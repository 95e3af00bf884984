"""`python -m gateway routes` and `explain`: what the settings say would happen, without starting anything."""

from __future__ import annotations

import subprocess
import sys

from gateway.ops.explain import explain, route_lines
from tests.conftest import settings_with
from tests.servers import ROOT

ROUTES = (
    {"prefix": "/api", "upstreams": ["http://127.0.0.1:3001"], "strip_prefix": True},
    {
        "prefix": "/api/admin",
        "upstreams": ["http://127.0.0.1:3002", {"url": "http://127.0.0.1:3003", "weight": 2}],
        "ip_filter": {"allow": ["10.0.0.0/8"]},
        "rate_limit": [{"name": "writes", "rate": 1, "burst": 5, "methods": ["POST"]}],
        "middleware": [{"factory": "examples.apikey:ApiKeyMiddleware", "options": {"keys": ["k"]}}],
        "balancing": {"policy": "least_in_flight"},
        "timeouts": {"read": 10, "response_header": 2},
    },
)


def test_routes_are_listed_longest_prefix_first() -> None:
    lines = route_lines(settings_with(*ROUTES))
    assert lines[0].startswith("/api/admin") and "least_in_flight" in lines[0]
    assert lines[1].startswith("/api ") and "strip_prefix" in lines[1]


def test_explain_names_the_route_chain_upstreams_and_limits() -> None:
    lines = explain(settings_with(*ROUTES), "POST", "/API/Admin/users?x=1")
    text = "\n".join(lines)
    assert "route: /api/admin" in text
    chain = lines[lines.index("  middleware, outermost first:") + 1 :]
    steps = [line.strip() for line in chain if line.startswith("    ")]
    assert steps[:3] == ["request id (X-Request-ID)", "client IP (trusted proxies: none)", "access log and metrics"]
    assert steps[3:] == [
        "IP filter (/api/admin)",
        "rate limit (/api/admin) writes: 1.0/s, burst 5, per client_ip",
        "middleware examples.apikey:ApiKeyMiddleware (/api/admin)",
    ]
    assert "upstreams (least_in_flight): http://127.0.0.1:3002, http://127.0.0.1:3003" in text
    assert "sent upstream as: POST <instance>/API/Admin/users?x=1" in text  # no strip_prefix on this route
    assert "read 10.0 s" in text and "response head within 2.0 s" in text


def test_explain_shows_prefix_stripping_refusals_and_gateway_paths() -> None:
    settings = settings_with(*ROUTES)
    assert "sent upstream as: GET <instance>/users" in "\n".join(explain(settings, "GET", "/api/users"))
    assert "refused with 400" in explain(settings, "GET", "/api/%2e%2e/x")[1]
    assert "no route matches: 404" in explain(settings, "GET", "/other")[1]
    assert "never proxied" in explain(settings, "GET", "/_Gateway/metrics")[1]


def test_cli_prints_the_explanation() -> None:
    config = ROOT / "settings" / "example.toml"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "explain", "GET", "/api/users?page=2"],
        cwd=ROOT,
        env={"GATEWAY_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "route: /api" in result.stdout and "sent upstream as: GET <instance>/users?page=2" in result.stdout
