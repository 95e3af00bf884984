"""The stages outside the gateway: any built-in stage runs as plain ASGI middleware in an app a team composes
itself (gateway.stages.pipeline.Pipeline), and the pipeline calls only the hooks a stage has."""

from __future__ import annotations

from ipaddress import ip_network

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.exchange import exchange_of
from gateway.stages.ipfilter import IPFilterStage
from gateway.stages.pipeline import Pipeline
from gateway.stages.requestid import RequestIdStage
from gateway.stages.stage import Stage

pytestmark = pytest.mark.anyio


async def whoami(request: Request) -> PlainTextResponse:
    exchange = exchange_of(request.scope)
    return PlainTextResponse(f"{exchange.client_ip} {exchange.request_id}")


def composed() -> Starlette:
    stages = [RequestIdStage(), IPFilterStage(deny=[ip_network("203.0.113.0/24")])]
    return Starlette(routes=[Route("/me", whoami)], middleware=[Middleware(Pipeline, stages=stages)])


async def test_built_in_stages_run_as_middleware_of_an_app_of_ones_own() -> None:
    app = composed()
    allowed = httpx.ASGITransport(app, client=("192.0.2.7", 1))
    denied = httpx.ASGITransport(app, client=("203.0.113.9", 1))
    async with httpx.AsyncClient(transport=allowed, base_url="http://t") as client:
        ok = await client.get("/me", headers={"X-Request-ID": "abc-1"})
    async with httpx.AsyncClient(transport=denied, base_url="http://t") as client:
        refused = await client.get("/me")
    assert (ok.status_code, ok.text, ok.headers["x-request-id"]) == (200, "192.0.2.7 abc-1", "abc-1")
    assert refused.status_code == 403 and refused.json()["detail"] == "Requests from your address are not allowed here."
    assert refused.headers["x-request-id"] == refused.json()["request_id"] != ""


def test_a_stage_is_called_only_for_the_hooks_it_has() -> None:
    class HeadOnly(Stage):
        def on_response_head(self, exchange: object, scope: object, headers: list[tuple[bytes, bytes]]) -> None:
            headers.append((b"x-seen", b"1"))

    stage = HeadOnly()
    assert stage.overrides("on_response_head")
    assert not stage.overrides("on_request") and not stage.overrides("on_complete")
    assert RequestIdStage().overrides("on_request") and RequestIdStage().overrides("on_response_head")
