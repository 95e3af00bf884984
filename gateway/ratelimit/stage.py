"""The rate-limit stage: 429 with Retry-After and the IETF RateLimit headers when a policy's bucket is empty."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Sequence

from starlette.types import Scope

from gateway.exchange import Exchange, target_of
from gateway.ratelimit.buckets import Decision, Store
from gateway.routing.table import in_gateway_namespace
from gateway.stages.netset import NetworkSet
from gateway.stages.stage import Refusal, Stage
from settings import RateLimitPolicy


def _digest(policy: RateLimitPolicy) -> str:
    return hashlib.blake2b(policy.model_dump_json().encode(), digest_size=6).hexdigest()


class Policy:
    """A validated policy with its lookups prepared once."""

    def __init__(self, settings: RateLimitPolicy, bucket_prefix: str) -> None:
        self.name = settings.name
        self.burst = settings.burst
        self.interval = 1.0 / settings.rate
        self.capacity = settings.burst * self.interval
        self.window = math.ceil(self.capacity)
        self._methods = frozenset(method.upper() for method in settings.methods)
        self._only = NetworkSet(settings.only)
        self._exempt = NetworkSet(settings.exempt)
        self._header = (
            settings.key.removeprefix("header:").lower().encode() if settings.key.startswith("header:") else None
        )
        self._shared = settings.key == "route"
        self._prefix = bucket_prefix

    def applies(self, method: str, client: str) -> bool:
        if self._methods and method not in self._methods:
            return False
        if self._exempt and self._exempt.contains(client):
            return False
        return not self._only or self._only.contains(client)

    def bucket(self, scope: Scope, client: str) -> str:
        if self._shared:
            return self._prefix
        if self._header is not None:
            for name, value in scope["headers"]:
                if name == self._header:
                    return f"{self._prefix}h:{value.decode('latin-1')}"
        return f"{self._prefix}ip:{client}"

    def header_values(self, decision: Decision) -> list[tuple[bytes, bytes]]:
        """RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers)."""
        return [
            (b"ratelimit-policy", f'"{self.name}";q={self.burst};w={self.window}'.encode()),
            (b"ratelimit", f'"{self.name}";r={decision.remaining};t={math.ceil(decision.reset)}'.encode()),
        ]


class RateLimitStage(Stage):
    """Spends a token from every applicable policy's bucket, in order; the first empty bucket refuses.

    Trusts `exchange.client_ip` (settled by the client-IP stage). A store failure lets the request through, or
    answers 503 when `fail_closed`. `/_gateway/...` is never limited.
    """

    name = "rate limit"

    def __init__(
        self,
        *,
        policies: Sequence[RateLimitPolicy],
        store: Store,
        bucket_prefix: str,
        fail_closed: bool = False,
        headers_on_success: bool = False,
    ) -> None:
        # A bucket belongs to the policy's content, not its position: after a reload, an unchanged policy keeps
        # its buckets (same store, same keys) and a changed one starts afresh.
        self._policies = [Policy(policy, f"{bucket_prefix}{_digest(policy)}:") for policy in policies]
        self._store = store
        self._fail_closed = fail_closed
        self._headers_on_success = headers_on_success

    def on_request(self, exchange: Exchange, scope: Scope) -> Awaitable[Refusal | None] | None:
        # The gateway's own endpoints (health checks from a platform) are never limited, however spelled.
        if in_gateway_namespace(target_of(scope)):
            return None
        return self._decide(exchange, scope)

    async def _decide(self, exchange: Exchange, scope: Scope) -> Refusal | None:
        client = exchange.client_ip
        tightest: tuple[Policy, Decision] | None = None
        for policy in self._policies:
            if not policy.applies(scope.get("method", "GET"), client):  # a WebSocket handshake is a GET
                continue
            decision = await self._store.hit(policy.bucket(scope, client), policy.interval, policy.capacity)
            if decision is None:
                if self._fail_closed:
                    return STORE_FAILED
                continue
            if not decision.allowed:
                return _refusal(policy, decision)
            if tightest is None or decision.remaining < tightest[1].remaining:
                tightest = (policy, decision)
        if self._headers_on_success and tightest is not None:
            # Ahead of those an earlier (global) stage decided on, as the nearer limit's.
            exchange.response_headers = [*tightest[0].header_values(tightest[1]), *(exchange.response_headers or ())]
        return None


STORE_FAILED = Refusal(503, "Rate limiting is unavailable.", "rate_limit_store")


def _refusal(policy: Policy, decision: Decision) -> Refusal:
    retry_after = max(1, math.ceil(decision.retry_after))
    headers = [(b"retry-after", str(retry_after).encode()), *policy.header_values(decision)]
    return Refusal(429, f"Too many requests; retry after {retry_after} s.", "rate_limit", headers)
