"""A built-in feature as phase hooks over the Exchange (Pingora's proxy phases, Envoy's filter chain).

The pipeline (gateway.stages.pipeline) calls the hooks a stage overrides, in the plan's order (gateway.plan):
- `on_request(exchange, scope)`: before routing (global stages) or before the route's endpoint (route stages).
  None lets the request on; a Refusal answers it at once; it may also hand back an awaitable of either.
- `on_response_head(exchange, scope, headers)`: the response's head on its way out, in reverse order (the route's
  stages, then the global ones); edit `headers` in place. Also for refusals and the gateway's own answers.
- `on_complete(exchange, scope)`: once the exchange is over, whatever happened (global stages only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from starlette.types import Scope

from gateway.exchange import Exchange
from gateway.proxy.headers import Header


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer a stage gives instead of letting the request on: a problem document with `status` and `detail`,
    `reason` for the access log, and extra response `headers`."""

    status: int
    detail: str
    reason: str
    headers: Sequence[Header] = ()


RequestOutcome = Refusal | None | Awaitable[Refusal | None]


class Stage:
    """Base of the built-in stages; every hook is a no-op until a stage overrides it."""

    name: ClassVar[str] = "stage"  # as `explain` and the README's chain section show it

    def on_request(self, exchange: Exchange, scope: Scope) -> RequestOutcome:
        return None

    def on_response_head(self, exchange: Exchange, scope: Scope, headers: list[Header]) -> None:
        return None

    def on_complete(self, exchange: Exchange, scope: Scope) -> None:
        return None

    def overrides(self, hook: str) -> bool:
        """Whether this stage has a hook of its own named `hook` (the pipeline calls only those)."""
        return getattr(type(self), hook) is not getattr(Stage, hook)
