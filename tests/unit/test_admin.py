"""The `/_gateway/` endpoints in-process: metrics after traffic, the admin guard, redaction, no route tricks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from gateway import create_app
from tests.conftest import settings_with

pytestmark = pytest.mark.anyio

API = "http://api.internal"
GUARDED = ["/_gateway/metrics", "/_gateway/routes", "/_gateway/config", "/_gateway/upstreams"]


def client_for(app: Any, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False, client=(address, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://gw.test")


@pytest.fixture
def upstream() -> respx.MockRouter:
    router = respx.MockRouter(assert_all_called=False)
    router.route(path="/api/fail").respond(503, text="down")
    router.route().respond(200, text="ok")
    return router


def app_with(router: respx.MockRouter, **sections: Any) -> Any:
    routes = (
        {"prefix": "/api", "upstreams": [API]},
        {"prefix": "/admin", "upstreams": [API], "ip_filter": {"allow": ["10.0.0.0/8"]}},
    )
    return create_app(settings_with(*routes, **sections), transport=httpx.MockTransport(router.async_handler))


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None when absent."""
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        metric_name, _, label_text = metric.partition("{")
        found = dict(pair.split("=", 1) for pair in label_text.rstrip("}").split(",") if pair)
        if metric_name == name and found == {key: f'"{value}"' for key, value in labels.items()}:
            return float(value)
    return None


async def test_metrics_count_exchanges_refusals_latency_and_upstream_state(upstream: respx.MockRouter) -> None:
    async with client_for(app_with(upstream)) as client:
        for _ in range(3):
            assert (await client.get("/api/users")).status_code == 200
        assert (await client.post("/api/fail", content=b"12345")).status_code == 503
        assert (await client.get("/admin/x")).status_code == 403  # loopback is not in the route's allow list
        text = (await client.get("/_gateway/metrics")).text
    assert sample(text, "gateway_requests_total", route="/api", method="GET", status="2xx") == 3
    assert sample(text, "gateway_requests_total", route="/api", method="POST", status="5xx") == 1
    assert sample(text, "gateway_refusals_total", reason="ip_filter") == 1
    assert sample(text, "gateway_request_duration_seconds_count", route="/api") == 4
    assert sample(text, "gateway_upstream_response_seconds_count", route="/api") == 4
    assert sample(text, "gateway_request_bytes_total", route="/api") == 5
    assert sample(text, "gateway_response_bytes_total", route="/api") == 3 * 2 + 4
    assert sample(text, "gateway_requests_in_flight") == 1  # the scrape itself
    assert sample(text, "gateway_upstream_healthy", route="/api", upstream=API) == 1
    assert sample(text, "gateway_upstream_requests_total", route="/api", upstream=API) == 4
    assert sample(text, "gateway_upstream_ejections_total", route="/api", upstream=API) == 0


async def test_metrics_can_be_switched_off(upstream: respx.MockRouter) -> None:
    async with client_for(app_with(upstream, metrics={"enabled": False})) as client:
        assert (await client.get("/_gateway/metrics")).status_code == 404


@pytest.mark.parametrize("path", GUARDED)
async def test_admin_endpoints_answer_loopback_only_by_default(upstream: respx.MockRouter, path: str) -> None:
    app = app_with(upstream)
    async with client_for(app) as local, client_for(app, "192.0.2.7") as remote:
        assert (await local.get(path)).status_code == 200
        refused = await remote.get(path)
        assert (await remote.get("/_gateway/health")).status_code == 200  # health stays open for platforms
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("path", GUARDED)
async def test_a_token_opens_admin_endpoints_to_any_address_that_presents_it(
    upstream: respx.MockRouter, path: str
) -> None:
    app = app_with(upstream, admin={"token": "s3cret-token"})
    async with client_for(app, "192.0.2.7") as remote:
        missing = await remote.get(path)
        wrong = await remote.get(path, headers={"Authorization": "Bearer nope"})
        right = await remote.get(path, headers={"Authorization": "Bearer s3cret-token"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.headers["www-authenticate"] == "Bearer"


async def test_an_allow_list_replaces_loopback_and_combines_with_a_token(upstream: respx.MockRouter) -> None:
    app = app_with(upstream, admin={"allow": ["10.0.0.0/8"], "token": "t"})
    bearer = {"Authorization": "Bearer t"}
    async with client_for(app, "10.1.2.3") as inside, client_for(app) as local:
        assert (await inside.get("/_gateway/routes", headers=bearer)).status_code == 200
        assert (await inside.get("/_gateway/routes")).status_code == 401
        assert (await local.get("/_gateway/routes", headers=bearer)).status_code == 403


async def test_effective_configuration_hides_secrets(upstream: respx.MockRouter) -> None:
    sections = {
        "admin": {"token": "s3cret-token"},
        "rate_limit": {"store": "redis", "redis_url": "redis://user:hunter2@127.0.0.1:6379/0"},
    }
    routes = ({"prefix": "/api", "upstreams": [API]},)
    app = create_app(settings_with(*routes, **sections), transport=httpx.MockTransport(upstream.async_handler))
    async with client_for(app) as client:
        response = await client.get("/_gateway/config", headers={"Authorization": "Bearer s3cret-token"})
    text = response.text
    assert response.status_code == 200
    assert "s3cret-token" not in text and "hunter2" not in text
    config = response.json()
    assert config["rate_limit"]["redis_url"] == "redis://user:***@127.0.0.1:6379/0"
    assert config["routes"][0]["prefix"] == "/api"


async def test_route_table_is_listed_longest_prefix_first(upstream: respx.MockRouter) -> None:
    async with client_for(app_with(upstream)) as client:
        table = (await client.get("/_gateway/routes")).json()
    assert [route["prefix"] for route in table] == ["/admin", "/api"]
    assert table[1]["upstreams"] == [{"url": API, "weight": 1}]


@pytest.mark.parametrize(
    "path",
    [
        "/_GATEWAY/metrics",
        "//_gateway/metrics",
        "/_gateway;x/metrics",
        "/api/../_gateway/metrics",
        "/api/%2e%2e/_gateway/metrics",
        "/_gateway%2fmetrics",
        "/_gateway/metrics/",
    ],
)
async def test_no_spelling_of_an_admin_path_reaches_an_upstream_or_leaks_metrics(
    upstream: respx.MockRouter, path: str
) -> None:
    app = create_app(
        settings_with({"prefix": "/", "upstreams": [API]}), transport=httpx.MockTransport(upstream.async_handler)
    )
    async with client_for(app, "192.0.2.7") as remote:
        response = await remote.get("http://gw.test" + path)  # absolute: httpx reads "//x" as a host
    assert response.status_code in (400, 403, 404)
    assert "gateway_requests" not in response.text
    assert not upstream.calls, "never proxied"


def test_folders_are_shown_relative_to_where_the_gateway_runs(tmp_path: Any) -> None:
    """The dashboard, the admin API and `routes` show a static route's folder as the operator configured it
    beside the gateway, not the machine's whole path (issue 30: the dashboard's picture showed one)."""
    from pathlib import Path

    from gateway.ops.admin import shown_path

    (tmp_path / "public").mkdir()
    assert shown_path(tmp_path / "public") == "public"  # the tests run in tmp_path
    assert shown_path(Path("/usr/share")) == "/usr/share"
