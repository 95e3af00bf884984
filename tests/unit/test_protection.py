"""IP filters, client IP resolution, the access log and user middleware from settings, in-process."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import respx

from gateway import create_app
from gateway.exchange import exchange_of
from gateway.ops.logs import AccessFormatter
from gateway.stages import accesslog
from gateway.stages.accesslog import AccessLogStage, AccessRecord
from gateway.stages.accesslog import logger as access_logger
from gateway.stages.pipeline import Pipeline
from settings import SettingsError
from tests.conftest import settings_with

pytestmark = pytest.mark.anyio

API = "http://api.internal"


def client_for(app: Any, address: str = "192.0.2.10") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False, client=(address, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://gw.test")


def app_with(router: respx.MockRouter, *routes: dict[str, Any], **sections: Any) -> Any:
    routes = routes or ({"prefix": "/", "upstreams": [API]},)
    return create_app(settings_with(*routes, **sections), transport=httpx.MockTransport(router.async_handler))


@pytest.fixture
def upstream() -> respx.MockRouter:
    router = respx.MockRouter(assert_all_called=False)
    router.route().respond(200, text="ok")
    return router


@pytest.mark.parametrize(
    ("ip_filter", "address", "status"),
    [
        ({}, "198.51.100.1", 200),
        ({"deny": ["198.51.100.0/24"]}, "198.51.100.1", 403),
        ({"deny": ["198.51.100.0/24"]}, "198.51.101.1", 200),
        ({"allow": ["10.0.0.0/8"]}, "10.2.3.4", 200),
        ({"allow": ["10.0.0.0/8"]}, "198.51.100.1", 403),
        ({"allow": ["10.0.0.0/8"], "deny": ["10.6.6.6"]}, "10.6.6.6", 403),  # deny wins
        ({"allow": ["2001:db8::/32"]}, "2001:db8::7", 200),
        ({"deny": ["2001:db8::/32"]}, "2001:db8::7", 403),
    ],
)
async def test_global_ip_filter(
    upstream: respx.MockRouter, ip_filter: dict[str, Any], address: str, status: int
) -> None:
    async with client_for(app_with(upstream, ip_filter=ip_filter), address) as client:
        response = await client.get("/x")
    assert response.status_code == status
    if status == 403:
        assert response.json()["title"] == "Forbidden"
        assert response.headers["content-type"] == "application/problem+json"


async def test_route_filter_holds_for_every_spelling_of_its_path(upstream: respx.MockRouter) -> None:
    routes = (
        {"prefix": "/", "upstreams": [API]},
        {"prefix": "/api/admin", "upstreams": [API], "ip_filter": {"allow": ["10.0.0.0/8"]}},
    )
    app = app_with(upstream, *routes)
    spellings = ["/api/admin", "/api/admin/users", "/API/Admin", "/api//admin", "/%61pi/admin", "/api/admin;x=1"]
    async with client_for(app, "198.51.100.1") as outsider, client_for(app, "10.0.0.5") as office:
        for path in spellings:
            assert (await outsider.get(httpx.URL(path))).status_code == 403, path
            assert (await office.get(httpx.URL(path))).status_code == 200, path
        assert (await outsider.get("/api/other")).status_code == 200
        # (Literal dot-segments are normalised away by httpx's client itself; tests/integration sends them raw.)
        for path in ("/api/%2e%2e/api/admin", "/x/%2E%2E/api/admin", "/x/..%2fapi/admin"):
            assert (await outsider.get(httpx.URL(path))).status_code == 400, path


async def test_spoofed_forwarded_for_neither_bypasses_nor_blames(upstream: respx.MockRouter) -> None:
    ip_filter = {"deny": ["198.51.100.0/24"]}
    app = app_with(upstream, ip_filter=ip_filter)
    async with client_for(app, "198.51.100.1") as blocked, client_for(app, "203.0.113.5") as innocent:
        assert (await blocked.get("/x", headers={"X-Forwarded-For": "203.0.113.99"})).status_code == 403
        assert (await innocent.get("/x", headers={"X-Forwarded-For": "198.51.100.1"})).status_code == 200


async def test_behind_a_trusted_proxy_the_forwarded_client_is_filtered(upstream: respx.MockRouter) -> None:
    app = app_with(upstream, ip_filter={"deny": ["198.51.100.0/24"]}, proxy={"trusted_proxies": ["10.0.0.0/8"]})
    async with client_for(app, "10.0.0.2") as via_proxy:
        refused = await via_proxy.get("/x", headers={"X-Forwarded-For": "198.51.100.1"})
        spoofed = await via_proxy.get("/x", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.5"})
    assert refused.status_code == 403
    assert spoofed.status_code == 200  # the proxy vouches for 203.0.113.5 only; the left part is a claim


def test_malformed_filter_entries_stop_start_up_naming_the_key() -> None:
    from settings import load_settings

    with pytest.raises(SettingsError) as caught:
        load_settings(
            routes=[{"prefix": "/", "upstreams": [API], "ip_filter": {"allow": ["10.0.0.0/8", "10.0.0.1/8"]}}],
            ip_filter={"deny": ["nonsense"]},
        )
    assert caught.value.problems == [
        "ip_filter.deny[0]: 'nonsense' does not appear to be an IPv4 or IPv6 network",
        "routes[0].ip_filter.allow[1]: 10.0.0.1/8 has host bits set",
    ]


async def test_access_log_records_every_exchange(upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture) -> None:
    app = app_with(upstream, {"prefix": "/api", "upstreams": [API]}, ip_filter={"deny": ["198.51.100.0/24"]})
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        async with client_for(app) as client:
            await client.post(
                "/api/items?secret=1",
                content=b"12345",
                headers={
                    "X-Request-ID": "rid-1",
                    "Authorization": "Bearer s3cret",
                    "Cookie": "sid=s3cret",
                    "User-Agent": "t/1",
                },
            )
            await client.get("/nowhere")
        async with client_for(app, "198.51.100.1") as refused:
            await refused.get("/api/items")
    records = [record.msg for record in caplog.records if record.name == "gateway.access"]
    assert len(records) == 3
    ok, missing, blocked = records
    assert ok["request_id"] == "rid-1" and ok["client_ip"] == "192.0.2.10"
    assert (ok["method"], ok["path"], ok["query"], ok["route"], ok["upstream"]) == (
        "POST",
        "/api/items",
        True,
        "/api",
        API,
    )
    assert (ok["status"], ok["bytes_in"], ok["bytes_out"], ok["user_agent"], ok["reason"]) == (200, 5, 2, "t/1", None)
    assert ok["duration_ms"] >= ok["upstream_ms"] >= 0
    assert "s3cret" not in json.dumps(records)
    assert (missing["status"], missing["reason"]) == (404, "no_route")
    assert (blocked["status"], blocked["reason"], blocked["client_ip"]) == (403, "ip_filter", "198.51.100.1")


@pytest.mark.parametrize(("complete", "logged"), [(True, 200), (False, 499)])
async def test_a_client_that_left_is_logged_499_only_if_the_response_was_not_complete(
    complete: bool, logged: int, caplog: pytest.LogCaptureFixture
) -> None:
    """As nginx logs it: a client gone after the last byte of the answer still got that answer."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": not complete})
        exchange_of(scope).reason = "client_closed"  # what the relay notes when it sees the client leave

    async def ignore(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": "/x", "query_string": b"", "headers": []}
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        await Pipeline(app, stages=[AccessLogStage()])(scope, ignore, ignore)
    [record] = [record.msg for record in caplog.records if record.name == "gateway.access"]
    assert (record["status"], record["bytes_out"], record["reason"]) == (logged, 2, "client_closed")


async def test_a_route_can_keep_out_of_the_access_log(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    routes = ({"prefix": "/", "upstreams": [API]}, {"prefix": "/ping", "upstreams": [API], "access_log": False})
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        async with client_for(app_with(upstream, *routes)) as client:
            await client.get("/ping")
            await client.get("/work")
    assert [record.msg["path"] for record in caplog.records if record.name == "gateway.access"] == ["/work"]


@pytest.mark.parametrize("style", ["json", "text"])
def test_access_formatter(style: str) -> None:
    fields = {
        "request_id": "r",
        "client_ip": "192.0.2.1",
        "method": "GET",
        "path": "/x",
        "status": 200,
        "bytes_out": 2,
        "duration_ms": 1.5,
        "reason": None,
    }
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 0, fields, (), None)
    line = AccessFormatter(style).format(record)
    if style == "json":
        parsed = json.loads(line)
        assert parsed["status"] == 200 and parsed["time"].endswith("+00:00")
    else:
        assert " 192.0.2.1 GET /x 200 2B 1.5ms r" in line


def test_access_records_carry_what_a_logger_made_record_does() -> None:
    """Handlers (a formatter's %(process)d, a pickling SocketHandler) see the same attributes, all the instance's."""
    fields = {"path": "/x", "status": 200}
    made = AccessRecord(fields)
    reference = access_logger.makeRecord(access_logger.name, logging.INFO, accesslog.__file__, 0, fields, (), None)
    assert vars(made).keys() == vars(reference).keys()
    same = {"name", "levelno", "levelname", "pathname", "module", "process", "processName", "thread", "threadName"}
    assert {key: vars(made)[key] for key in same} == {key: vars(reference)[key] for key in same}
    assert made.getMessage() == str(fields) and abs(made.created - reference.created) < 1
    assert logging.makeLogRecord(dict(vars(made))).levelname == "INFO"


class Stamp:
    """A user middleware: adds a response header."""

    def __init__(self, app: Any, *, value: str) -> None:
        self.app = app
        self.header = (b"x-stamp", value.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, stamped)


async def test_middleware_from_settings_globally_and_per_route(upstream: respx.MockRouter) -> None:
    routes = (
        {"prefix": "/", "upstreams": [API]},
        {
            "prefix": "/special",
            "upstreams": [API],
            "middleware": [{"factory": f"{__name__}:Stamp", "options": {"value": "route"}}],
        },
    )
    app = app_with(upstream, *routes, middleware=[{"factory": f"{__name__}.Stamp", "options": {"value": "global"}}])
    async with client_for(app) as client:
        plain = await client.get("/x")
        special = await client.get("/special/x")
    assert plain.headers.get_list("x-stamp") == ["global"]
    assert special.headers.get_list("x-stamp") == ["route", "global"]


@pytest.mark.parametrize(
    ("middleware", "problem"),
    [
        ([{"factory": "no.such.module:Thing"}], "middleware[0].factory: "),
        ([{"factory": f"{__name__}:Stamp", "options": {"colour": "red"}}], "middleware[0].options: "),
        ([{"factory": f"{__name__}:Stamp"}], "middleware[0].options: "),
    ],
)
def test_wrong_middleware_settings_stop_start_up_naming_the_key(middleware: list[dict[str, Any]], problem: str) -> None:
    from settings import load_settings

    with pytest.raises(SettingsError) as caught:
        create_app(load_settings(routes=[{"prefix": "/", "upstreams": [API]}], middleware=middleware))
    assert caught.value.problems[0].startswith(problem), caught.value.problems


def test_wrong_route_middleware_options_name_the_route() -> None:
    route = {
        "prefix": "/",
        "upstreams": [API],
        "middleware": [{"factory": f"{__name__}:Stamp", "options": {"nope": 1}}],
    }
    with pytest.raises(SettingsError) as caught:
        create_app(settings_with(route))
    assert caught.value.problems[0].startswith("routes[0].middleware[0].options: ")


@pytest.mark.anyio
async def test_upstreams_endpoint_answers_loopback_only(upstream: respx.MockRouter) -> None:
    app = app_with(upstream, {"prefix": "/api", "upstreams": [API, "http://api2.internal"]})
    async with client_for(app, "127.0.0.1") as local, client_for(app, "192.0.2.10") as remote:
        await local.get("/api/x")
        listing = await local.get("/_gateway/upstreams")
        refused = await remote.get("/_gateway/upstreams")
    assert [entry["url"] for entry in listing.json()["/api"]] == [API, "http://api2.internal"]
    assert sum(entry["requests"] for entry in listing.json()["/api"]) == 1
    assert {"healthy", "in_flight", "connect_failures", "responses_5xx", "ejections", "retries"} <= set(
        listing.json()["/api"][0]
    )
    assert refused.status_code == 403
