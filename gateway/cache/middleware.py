"""The per-route HTTP cache (`[routes.cache]`): answers from stored responses, revalidates stale ones, stores
what RFC 9111 allows a shared cache to store, and invalidates after unsafe methods. Says what it did in a
`Cache-Status` header (RFC 9211)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.cache.dates import http_date
from gateway.cache.policy import (
    COOKIE_FIELDS,
    SAFE_METHODS,
    Stored,
    age_header,
    first,
    freshened,
    freshness_lifetime,
    judge,
    not_modified_for,
    parse_cache_control,
    stale_if_error,
    stale_while_revalidate,
    storable,
    stored_headers,
    vary_snapshot,
)
from gateway.cache.ranges import UNSATISFIABLE, byte_range, if_range_holds
from gateway.cache.store import CacheStore
from gateway.errors import send_problem
from gateway.exchange import EXCHANGE, exchange_of, query_of, request_id_of, target_of
from gateway.proxy.headers import Header
from settings import CacheSettings

logger = logging.getLogger("gateway.cache")

CACHE_STATUS = b"cache-status"
_CONDITIONALS = frozenset({b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"})
_RANGE_FIELDS = frozenset({b"range", b"if-range"})
# Request fields that can make an answer from the cache other than the stored 200: a 304, 206 or 416.
_ANSWER_SHAPING = frozenset({b"if-none-match", b"if-modified-since", b"range"})
# The proxy's reasons (gateway.errors) for answering 502/503/504 itself: the upstream was not reachable.
_UNREACHABLE = frozenset({"upstream_unreachable", "upstream_broken", "upstream_timeout", "no_upstream"})


class CacheMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: CacheSettings,
        store: CacheStore,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.app = app
        self._settings = settings
        self._store = store
        self._clock = clock or (lambda: wall_clock())
        self._strip_cookies = settings.set_cookie != "store"
        self._warned_of_cookies = False
        self._collapsing: dict[str, asyncio.Event] = {}  # keys with a miss in flight upstream
        self._refreshes: set[asyncio.Task[None]] = set()  # background revalidations (kept referenced)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        key = cache_key(scope)
        if method not in ("GET", "HEAD"):
            if method in SAFE_METHODS:
                await self.app(scope, receive, send)
            else:
                await self._unsafe(scope, receive, send, key)
            return
        headers: list[Header] = scope["headers"]
        if await self._served_from_store(scope, send, key):
            return
        leader = self._collapsing.get(key)
        if leader is not None and not parse_cache_control(headers).has("no-cache"):
            # Request collapsing: a miss for this key is already on its way upstream; wait for it (bounded),
            # then look again.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.collapse_seconds):
                    await leader.wait()
            if await self._served_from_store(scope, send, key):
                return
        variants = await self._store.get(key)
        stored = next((variant for variant in variants if variant.matches(headers)), None)
        if parse_cache_control(headers).has("only-if-cached"):
            await send_problem(
                send,
                504,
                "The response is not in the cache.",
                request_id_of(scope),
                [(CACHE_STATUS, b"gateway; fwd=miss; detail=only-if-cached")],
            )
            return
        if method == "GET" and any(name == b"range" for name, _ in headers):
            await self.app(scope, receive, send)  # partial content is not stored: the upstream answers
            return
        miss = b"fwd=uri-miss" if not variants else (b"fwd=vary-miss" if stored is None else b"fwd=stale")
        exchange_of(scope).cache = "miss"
        done = self._collapsing.setdefault(key, asyncio.Event())
        try:
            await self._forward(scope, receive, send, key, stored, miss)
        finally:
            if self._collapsing.get(key) is done:
                del self._collapsing[key]
                done.set()

    async def _served_from_store(self, scope: Scope, send: Send, key: str) -> bool:
        """Answer from a stored response when one is fresh enough for this request (or allowed stale)."""
        headers: list[Header] = scope["headers"]
        now = self._clock()
        stored = next((variant for variant in await self._store.get(key) if variant.matches(headers)), None)
        if stored is None:
            return False
        verdict = judge(stored, headers, now)
        if verdict.fresh or verdict.stale_allowed:
            exchange_of(scope).cache = "hit" if verdict.fresh else "stale"
            await self._answer(scope, send, stored, now, b"hit" if verdict.fresh else b"hit; fwd=stale")
            return True
        no_cache = parse_cache_control(headers).has("no-cache")
        if not no_cache and stale_while_revalidate(stored, now):
            self._refresh_in_background(scope, key, stored)
            exchange_of(scope).cache = "stale"
            await self._answer(scope, send, stored, now, b"hit; fwd=stale; detail=stale-while-revalidate")
            return True
        return False

    def _refresh_in_background(self, scope: Scope, key: str, stored: Stored) -> None:
        """Revalidate (or refetch) a stale entry without a client waiting; one at a time per URL."""
        if key in self._collapsing:
            return
        done = self._collapsing[key] = asyncio.Event()
        headers = [(name, value) for name, value in scope["headers"] if name not in _RANGE_FIELDS]
        # The client's request and connection are not this refresh's: an exchange of its own, with no edge.
        background = {**scope, "method": "GET", "headers": headers, EXCHANGE: exchange_of(scope).detached()}
        body_sent = False

        async def no_body() -> Message:
            """An empty body, then a client that stays until the exchange ends (never a disconnect)."""
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()
            raise AssertionError("unreachable: the wait ends by cancellation")

        async def discard(message: Message) -> None:
            pass

        async def refresh() -> None:
            try:
                await self._forward(background, no_body, discard, key, stored, b"fwd=stale")
            except Exception:  # a failed refresh leaves the stale entry; the next request tries again
                logger.exception("background revalidation of %s failed", key)
            finally:
                if self._collapsing.get(key) is done:
                    del self._collapsing[key]
                    done.set()

        task = asyncio.get_running_loop().create_task(refresh())
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, key: str, stored: Stored | None, miss: bytes
    ) -> None:
        """To the upstream: conditionally when a stored response has validators; store what comes back."""
        method = scope["method"]
        client_headers: list[Header] = scope["headers"]
        validating = stored is not None and _validators(stored)
        upstream_scope = scope
        if validating:
            assert stored is not None
            upstream_scope = {**scope, "headers": [*_without_conditionals(client_headers), *_validators(stored)]}
        request_time = self._clock()
        state: dict[str, Any] = {"status": 0, "headers": [], "chunks": [], "size": 0, "held": False, "storing": False}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                response_time = self._clock()
                # The relay gives the client the gateway's Date; the cache keeps the upstream's (or, without a
                # valid one, the time it arrived: RFC 9110 6.6.1).
                date = exchange_of(upstream_scope).upstream_date
                if http_date(date) is None:
                    date = email.utils.formatdate(response_time, usegmt=True).encode()
                dated = [(name, value) for name, value in headers if name.lower() != b"date"] + [(b"date", date)]
                state.update(status=status, headers=dated, response_time=response_time)
                if validating and status == 304:
                    assert stored is not None
                    # RFC 9111 4.3.4: a 304 naming another strong validator cannot update this stored response.
                    etag = first(headers, b"etag")
                    state["held"] = etag is None or etag.startswith(b"W/") or etag == first(stored.headers, b"etag")
                    state["held"] = True if state["held"] else "mismatch"
                    return
                if (
                    stored is not None
                    and status >= 500
                    and self._may_answer_stale(stored, client_headers, exchange_of(upstream_scope).reason)
                ):
                    state["held"] = "error"
                    return
                state["storing"] = (
                    method == "GET"
                    and storable(
                        method,
                        status,
                        client_headers,
                        headers,
                        store_without_freshness=self._settings.store_without_freshness,
                    )
                    and not (self._settings.set_cookie == "bypass" and _sets_cookies(headers))
                )
                outcome = miss + (b"; stored" if state["storing"] else b"")
                if validating:
                    outcome += b"; fwd-status=%d" % status
                message = {**message, "headers": [*headers, (CACHE_STATUS, b"gateway; " + outcome)]}
            elif message["type"] == "http.response.body" and state["held"]:
                return
            elif message["type"] == "http.response.body" and state["storing"]:
                chunk = message.get("body", b"")
                state["size"] += len(chunk)
                if state["size"] > self._settings.max_object_bytes:
                    state["storing"] = False  # too big: streams through, never buffered
                    state["chunks"] = []
                else:
                    state["chunks"].append(chunk)
                if not message.get("more_body", False) and state["storing"]:
                    state["complete"] = True
            await send(message)

        await self.app(upstream_scope, receive, capture)
        if state.get("complete"):
            await self._store_response(key, scope, state, request_time)  # after the client has it all
        elif method == "HEAD" and state["status"] == 200 and stored is not None and not state["held"]:
            await self._freshen_from_head(key, stored, state, request_time)
        if state["held"] is True:
            assert stored is not None
            renewed = freshened(
                stored, state["headers"], request_time, state["response_time"], strip_cookies=self._strip_cookies
            )
            await self._store.put(key, renewed)
            exchange_of(scope).cache = "revalidated"
            # Cookies not stored (set_cookie "strip" or "bypass") still reach the client this 304 answered.
            cookies = (
                [(name, value) for name, value in state["headers"] if name.lower() in COOKIE_FIELDS]
                if self._strip_cookies
                else []
            )
            await self._answer(scope, send, renewed, self._clock(), b"fwd=stale; fwd-status=304", cookies)
        elif state["held"] == "mismatch":
            await self._store.drop(key)
            await self._forward(scope, receive, send, key, None, b"fwd=miss")
        elif state["held"] == "error":
            assert stored is not None
            exchange_of(scope).cache = "stale_if_error"
            detail = b"upstream-unreachable" if exchange_of(scope).reason in _UNREACHABLE else b"stale-if-error"
            await self._answer(scope, send, stored, self._clock(), b"hit; fwd=stale; detail=" + detail)

    def _may_answer_stale(self, stored: Stored, request_headers: list[Header], reason: str | None) -> bool:
        """After a 5xx: within stale-if-error, or a while longer when the gateway could not reach the upstream
        (the proxy's reason for answering itself)."""
        window = self._settings.stale_if_unreachable if reason in _UNREACHABLE else 0.0
        return stale_if_error(stored, request_headers, self._clock(), window)

    async def _freshen_from_head(self, key: str, stored: Stored, state: dict[str, Any], request_time: float) -> None:
        """RFC 9111 4.3.5: a 200 to a HEAD updates the stored GET it describes, or invalidates it if its
        validators or length say the representation changed."""
        head: list[Header] = state["headers"]
        for name in (b"etag", b"last-modified", b"content-length"):
            new, old = first(head, name), first(stored.headers, name)
            if new is not None and new != old:
                await self._store.drop(key)
                return
        renewed = freshened(stored, head, request_time, state["response_time"], strip_cookies=self._strip_cookies)
        await self._store.put(key, renewed)

    async def _store_response(self, key: str, scope: Scope, state: dict[str, Any], request_time: float) -> None:
        headers = stored_headers(state["headers"], strip_cookies=self._strip_cookies)
        status: int = state["status"]
        settings = self._settings
        lifetime = freshness_lifetime(
            status,
            headers,
            heuristic=settings.heuristic,
            fraction=settings.heuristic_fraction,
            cap=settings.heuristic_max_seconds,
        )
        if lifetime == 0 and settings.store_without_freshness and settings.default_ttl:
            lifetime = settings.default_ttl
        stored = Stored(
            status,
            headers,
            b"".join(state["chunks"]),
            request_time,
            state["response_time"],
            lifetime,
            vary_snapshot(scope["headers"], headers),
        )
        if not self._warned_of_cookies and _sets_cookies(headers):
            self._warned_of_cookies = True  # once per route and process: the operator needs to know, not a flood
            logger.warning(
                "stored %s with Set-Cookie: the cache hands that cookie to every client it answers from this "
                "response (RFC 9111 3.1); if it is a session cookie, set this route's cache set_cookie to "
                '"bypass" or "strip"',
                key,
            )
        await self._store.put(key, stored)

    async def _answer(
        self, scope: Scope, send: Send, stored: Stored, now: float, detail: bytes, extra: list[Header] | None = None
    ) -> None:
        """A response from the cache: the stored headers with a computed Age, 304 for a matching condition,
        206 or 416 for a byte range of a stored 200."""
        client_headers: list[Header] = scope["headers"]
        status = stored.status
        body = stored.body
        headers = [*stored.answer_headers, *(extra or ()), (b"age", age_header(stored, now))]
        # The stored Date goes out (Age counts from it) where the server can be told to leave out its own.
        edge = exchange_of(scope).edge
        if edge is not None and edge.leave_out_date is not None and stored.date is not None:
            edge.leave_out_date()
            headers.append((b"date", stored.date))
        headers.append((CACHE_STATUS, b"gateway; " + detail))
        if status == 200 and any(name in _ANSWER_SHAPING for name, _ in client_headers):
            if not_modified_for(stored, client_headers):
                status, body = 304, b""
            elif scope["method"] == "GET":
                status, body, headers = _ranged(client_headers, stored, headers)
        if status != 304:
            headers.append((b"content-length", stored.length if body is stored.body else b"%d" % len(body)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def _unsafe(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        """RFC 9111 4.4: a non-error answer to an unsafe method invalidates the target and same-origin
        Location / Content-Location. Before the client has the answer: a client that reads its own write next,
        from this instance or another sharing the store, must not get the old response."""

        async def invalidate_first(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 400:
                await self._store.drop(key)
                host = key.split(" ", 1)[0]
                for name in (b"location", b"content-location"):
                    target = _same_origin_target(first(message.get("headers", []), name), host)
                    if target is not None:
                        await self._store.drop(f"{host} {target}")
            await send(message)

        await self.app(scope, receive, invalidate_first)


def _ranged(client_headers: list[Header], stored: Stored, headers: list[Header]) -> tuple[int, bytes, list[Header]]:
    """The status, body and headers for a GET of a stored 200 that may ask for a byte range."""
    body = stored.body
    wanted = first(client_headers, b"range")
    if wanted is None or not if_range_holds(stored.headers, client_headers):
        return 200, body, headers
    span = byte_range(wanted, len(body))
    if span is None:
        return 200, body, headers
    if span is UNSATISFIABLE:
        return 416, b"", [*headers, (b"content-range", b"bytes */%d" % len(body))]
    start, end = span
    return 206, body[start:end], [*headers, (b"content-range", b"bytes %d-%d/%d" % (start, end - 1, len(body)))]


def _sets_cookies(headers: list[Header]) -> bool:
    return any(name.lower() in COOKIE_FIELDS for name, _ in headers)


def wall_clock() -> float:
    """Seconds since the epoch: stored responses are dated by the upstream's Date header (tests replace this)."""
    return time.time()


def cache_key(scope: Scope) -> str:
    """Host and target: what identifies a resource for this cache (the method is GET for HEAD too)."""
    host = b""
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.lower()
            break
    target = target_of(scope)
    query = query_of(scope)  # `/a?` is not `/a` (RFC 3986 6.2.3 keeps an empty component's delimiter)
    parts = (host, b" ", target) if query is None else (host, b" ", target, b"?", query)
    return b"".join(parts).decode("latin-1")


def _same_origin_target(location: bytes | None, host: str) -> str | None:
    """The path and query of a Location on this host (relative, or absolute with the same authority)."""
    if location is None:
        return None
    text = location.decode("latin-1")
    if text.startswith("/") and not text.startswith("//"):
        return text
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.netloc.lower() == host:
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return None


def _validators(stored: Stored) -> list[Header]:
    conditions = []
    etag = first(stored.headers, b"etag")
    if etag is not None:
        conditions.append((b"if-none-match", etag))
    last_modified = first(stored.headers, b"last-modified")
    if last_modified is not None:
        conditions.append((b"if-modified-since", last_modified))
    return conditions


def _without_conditionals(headers: list[Header]) -> list[Header]:
    return [(name, value) for name, value in headers if name.lower() not in _CONDITIONALS]
