"""One table from failure to status, and the short JSON problem body (RFC 9457) every error uses."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

import httpx
from starlette.types import Scope, Send


class BadRequest(Exception):
    """The request is malformed (a bad target or framing the server let through)."""


class BodyTooLarge(Exception):
    """The request body is over the route's `max_body_bytes`."""


class NoUpstream(Exception):
    """No instance of the route is in rotation (all unhealthy, ejected or at their in-flight cap)."""


class ClientGone(Exception):
    """The client disconnected before the exchange ended."""


class ClientTooSlow(ClientGone):
    """The client took none of its response for the send timeout; the gateway drops its connection."""


@dataclass(frozen=True, slots=True)
class Failure:
    status: int
    detail: str
    log_level: int
    reason: str  # for the access log


MALFORMED = Failure(400, "The request is malformed.", logging.INFO, "bad_request")
TOO_LARGE = Failure(413, "The request body is larger than this route accepts.", logging.INFO, "body_limit")
UNREACHABLE = Failure(502, "The upstream could not be reached.", logging.ERROR, "upstream_unreachable")
BROKEN = Failure(502, "The upstream sent an invalid or incomplete response.", logging.ERROR, "upstream_broken")
TIMED_OUT = Failure(504, "The upstream did not answer in time.", logging.ERROR, "upstream_timeout")
NO_UPSTREAM = Failure(503, "No upstream instance is available right now.", logging.WARNING, "no_upstream")
POOL_FULL = Failure(503, "No upstream connection became free in time.", logging.WARNING, "overload")

# Most specific first: the first class the exception is an instance of decides.
_FAILURES: tuple[tuple[type[BaseException], Failure], ...] = (
    (BadRequest, MALFORMED),
    (BodyTooLarge, TOO_LARGE),
    (NoUpstream, NO_UPSTREAM),
    (httpx.PoolTimeout, POOL_FULL),
    (httpx.TimeoutException, TIMED_OUT),
    (TimeoutError, TIMED_OUT),
    (httpx.ConnectError, UNREACHABLE),
    (httpx.TransportError, BROKEN),
    (httpx.DecodingError, BROKEN),
)


def failure_for(exc: BaseException) -> Failure | None:
    """The response for an exception raised while relaying, or None when it is a bug (left to the 500 handler)."""
    for kind, failure in _FAILURES:
        if isinstance(exc, kind):
            return failure
    return None


PROBLEM_TYPE = "application/problem+json"


def problem_body(status: int, detail: str, request_id: str) -> bytes:
    """A short problem document naming the request id, and nothing internal."""
    return json.dumps(
        {"status": status, "title": HTTPStatus(status).phrase, "detail": detail, "request_id": request_id}
    ).encode()


async def send_problem(
    send: Send, status: int, detail: str, request_id: str = "", extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with an `application/problem+json` body."""
    body = problem_body(status, detail, request_id)
    headers = _problem_headers(body, extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def refuse(
    scope: Scope,
    send: Send,
    status: int,
    detail: str,
    request_id: str,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Refuse an HTTP request, or a WebSocket handshake: as an HTTP answer where the server supports ASGI's
    denial response (uvicorn does), else by closing before accepting (the server answers 403)."""
    if scope["type"] == "http":
        await send_problem(send, status, detail, request_id, extra_headers)
    elif "websocket.http.response" in scope.get("extensions", {}):
        body = problem_body(status, detail, request_id)
        headers = _problem_headers(body, extra_headers)
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1011 if status >= 500 else 1008})


def _problem_headers(body: bytes, extra: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", PROBLEM_TYPE.encode()), (b"content-length", str(len(body)).encode()), *extra]
