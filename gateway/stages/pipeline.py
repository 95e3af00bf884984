"""The passes that run the stages: one ASGI layer for the global stages, one call for a route's.

The global pass is also the last resort: an exception before anything was sent answers a short 500 problem.

The global pass begins the Exchange, runs the global stages' request hooks (any may answer), then the rest of the
app (user middleware, the router); every message the client is sent goes through one send of its own, which counts
bytes and runs the response-head hooks (the route's, then the global ones); when the exchange is over, the
completion hooks run. A route's pass runs its stages' request hooks after routing and before the route's user
middleware and endpoint. Stage code is plain method calls: no ASGI layer, no wrapped send per feature.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.edge.splice import SPLICE_MESSAGE
from gateway.errors import refuse, send_problem
from gateway.exchange import EXCHANGE, Exchange
from gateway.proxy.headers import Header
from gateway.stages.stage import Refusal, RequestOutcome, Stage

RequestHook = Callable[[Exchange, Scope], RequestOutcome]
HeadHook = Callable[[Exchange, Scope, list[Header]], None]


class Pipeline:
    """The global pass around `app`: begins each HTTP request's or WebSocket session's Exchange, runs `stages` in
    order (their hooks only where they have their own), and records the response into the Exchange. `count_in`:
    count request body bytes (only the access log and metrics read them). Lifespan events pass straight through."""

    def __init__(self, app: ASGIApp, *, stages: Sequence[Stage], count_in: bool = True) -> None:
        self.app = app
        self._request_hooks = request_hooks(stages)
        self._head_hooks = head_hooks(stages)
        self._complete_hooks = [stage.on_complete for stage in stages if stage.overrides("on_complete")]
        self._count_in = count_in

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        kind = scope["type"]
        if kind == "http":
            exchange = scope.get(EXCHANGE) or Exchange.begin(scope)
            scope[EXCHANGE] = exchange
            if self._count_in:
                receive = _counting_receive(receive, exchange)
            return self._run(scope, receive, self._http_send(scope, send, exchange), exchange)
        if kind == "websocket":
            exchange = scope.get(EXCHANGE) or Exchange.begin(scope)
            scope[EXCHANGE] = exchange
            exchange.complete = True  # a session has no body to cut short
            return self._run(
                scope, _session_receive(receive, exchange), self._session_send(scope, send, exchange), exchange
            )
        return self.app(scope, receive, send)

    async def _run(self, scope: Scope, receive: Receive, send: Send, exchange: Exchange) -> None:
        try:
            await proceed(self.app, scope, receive, send, exchange, first_refusal(self._request_hooks, exchange, scope))
        except Exception:
            # The last resort for a bug in the gateway or a user middleware: a short 500 if nothing was sent yet;
            # the traceback goes to the server's log only (it is raised on, as Starlette's error middleware does).
            if scope["type"] == "http" and not exchange.status:
                await send_problem(send, 500, "The gateway failed to handle this request.", exchange.request_id)
            raise
        finally:
            for hook in self._complete_hooks:
                hook(exchange, scope)

    def _head(self, scope: Scope, exchange: Exchange, message: Message) -> None:
        exchange.status = message["status"]
        headers = list(message.get("headers", ()))  # never the sender's own list: it may be a constant
        if exchange.response_headers:
            headers += exchange.response_headers
        for hook in exchange.route_head_hooks:
            hook(exchange, scope, headers)
        for hook in self._head_hooks:
            hook(exchange, scope, headers)
        message["headers"] = headers

    def _http_send(self, scope: Scope, send: Send, exchange: Exchange) -> Send:
        def observed(message: Message) -> Awaitable[None]:  # hands back send's awaitable: no frame of its own
            kind = message["type"]
            if kind == "http.response.body":
                exchange.bytes_out += len(message.get("body", b""))
                if not message.get("more_body", False):
                    exchange.complete = True
            elif kind == "http.response.start":
                self._head(scope, exchange, message)
            elif kind == SPLICE_MESSAGE:
                return _count_spliced(send(message), message, exchange)
            return send(message)

        return observed

    def _session_send(self, scope: Scope, send: Send, exchange: Exchange) -> Send:
        def observed(message: Message) -> Awaitable[None]:
            kind = message["type"]
            if kind == "websocket.send":
                exchange.bytes_out += _payload_size(message)
            elif kind == "websocket.accept":
                exchange.status = 101
            elif kind == "websocket.http.response.start":
                self._head(scope, exchange, message)
            elif kind == "websocket.close" and not exchange.status:
                exchange.status = 403  # closed before accepting: the server refuses the handshake with 403
            return send(message)

        return observed


class RoutePass:
    """A route's stages before its `app` (the route's user middleware, cache and endpoint): request hooks in
    order, and response-head hooks handed to the global pass (which runs them before its own)."""

    def __init__(self, app: ASGIApp, stages: Sequence[Stage]) -> None:
        self.app = app
        self._request_hooks = request_hooks(stages)
        self._head_hooks = head_hooks(stages)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        exchange: Exchange = scope[EXCHANGE]
        if self._head_hooks:
            exchange.route_head_hooks = self._head_hooks
        return proceed(self.app, scope, receive, send, exchange, first_refusal(self._request_hooks, exchange, scope))


def request_hooks(stages: Sequence[Stage]) -> list[RequestHook]:
    return [stage.on_request for stage in stages if stage.overrides("on_request")]


def head_hooks(stages: Sequence[Stage]) -> tuple[HeadHook, ...]:
    """Response-head hooks run in reverse order: the stage nearest the endpoint sees the response first."""
    return tuple(stage.on_response_head for stage in reversed(stages) if stage.overrides("on_response_head"))


def first_refusal(hooks: Sequence[RequestHook], exchange: Exchange, scope: Scope) -> RequestOutcome:
    """The first Refusal among the request hooks, or None; an awaitable of that once a hook hands back one (the
    common path, where every hook answers None at once, makes no coroutine)."""
    for index, hook in enumerate(hooks):
        outcome = hook(exchange, scope)
        if outcome is not None:
            if isinstance(outcome, Refusal):
                return outcome
            return _awaited(outcome, hooks[index + 1 :], exchange, scope)
    return None


async def _awaited(
    pending: Awaitable[Refusal | None], rest: Sequence[RequestHook], exchange: Exchange, scope: Scope
) -> Refusal | None:
    outcome = await pending
    for hook in rest:
        if outcome is not None:
            return outcome
        result = hook(exchange, scope)
        outcome = result if result is None or isinstance(result, Refusal) else await result
    return outcome


def proceed(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, exchange: Exchange, outcome: RequestOutcome
) -> Awaitable[None]:
    """`app` when the request hooks let the request on, else their refusal answered (awaited first if need be);
    no coroutine of its own on the common path."""
    if outcome is None:
        return app(scope, receive, send)
    return _refused_or_on(app, scope, receive, send, exchange, outcome)


async def _refused_or_on(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    exchange: Exchange,
    outcome: Refusal | Awaitable[Refusal | None],
) -> None:
    refusal = outcome if isinstance(outcome, Refusal) else await outcome
    if refusal is None:
        await app(scope, receive, send)
    else:
        await answer(scope, send, exchange, refusal)


async def answer(scope: Scope, send: Send, exchange: Exchange, refusal: Refusal) -> None:
    exchange.reason = refusal.reason
    await refuse(scope, send, refusal.status, refusal.detail, exchange.request_id, refusal.headers)


def _counting_receive(receive: Receive, exchange: Exchange) -> Receive:
    async def counted() -> Message:
        message = await receive()
        exchange.bytes_in += len(message.get("body", b""))
        return message

    return counted


def _session_receive(receive: Receive, exchange: Exchange) -> Receive:
    async def counted() -> Message:
        message = await receive()
        if message["type"] == "websocket.receive":
            exchange.bytes_in += _payload_size(message)
        return message

    return counted


async def _count_spliced(sending: Awaitable[None], message: Message, exchange: Exchange) -> None:
    """A spliced body counts what the server delivered (`sent`), known only once it is done or cut short."""
    try:
        await sending
    finally:
        sent: int = message.get("sent", 0)
        exchange.bytes_out += sent
        exchange.complete = sent == message["count"]


def _payload_size(message: Message) -> int:
    data = message.get("bytes")
    if data is not None:
        return len(data)
    return len(message.get("text") or "")  # characters: close enough to bytes for a log, and cheap
