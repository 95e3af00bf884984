"""When a failed try may be tried again, and how many retries a route may spend."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import httpx

from gateway.client.transport.relay import IDEMPOTENT
from settings import RetrySettings

# The request never left the gateway: retrying cannot make an upstream act twice.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Sent, then the connection broke or the answer was late: only idempotent, replayable requests go again.
SENT_AND_LOST = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout)

WINDOW = 10.0  # seconds over which the retry budget is counted


class RetryBudget:
    """Caps retries at `share` of the requests of the last WINDOW seconds (but always `min_per_second`),
    so that retries cannot multiply the load on upstreams that are already failing."""

    def __init__(self, settings: RetrySettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._share = settings.budget
        self._floor = settings.min_per_second * WINDOW
        self._clock = clock
        self._window_start = clock()
        self._requests = 0
        self._retries = 0

    def _roll(self) -> None:
        now = self._clock()
        if now - self._window_start >= WINDOW:
            self._window_start, self._requests, self._retries = now, 0, 0

    def record_request(self) -> None:
        self._roll()
        self._requests += 1

    def try_spend(self) -> bool:
        self._roll()
        if self._retries >= max(self._floor, self._share * self._requests):
            return False
        self._retries += 1
        return True


class RetryPolicy:
    """A route's retry rules (RetrySettings) and budget."""

    def __init__(self, settings: RetrySettings) -> None:
        self.attempts = settings.attempts
        self.per_try_timeout = settings.per_try_timeout
        self._statuses = frozenset(settings.on_statuses)
        self._backoff = settings.backoff
        self.budget = RetryBudget(settings)

    def after_error(self, error: Exception, attempt: int, method: str, body_sent: bool) -> bool:
        """Whether `error` on try number `attempt` (1-based) may be retried (the budget is spent apart)."""
        if attempt >= self.attempts or body_sent:
            return False
        return isinstance(error, NOT_SENT) or (isinstance(error, SENT_AND_LOST) and method in IDEMPOTENT)

    def after_status(self, status: int, attempt: int, method: str, has_body: bool) -> bool:
        """Whether an answer with `status` may be retried on another instance."""
        return attempt < self.attempts and status in self._statuses and method in IDEMPOTENT and not has_body

    async def back_off(self, attempt: int) -> None:
        """Full jitter: a random pause up to backoff * 2^(attempt-1)."""
        if self._backoff:
            await asyncio.sleep(random.uniform(0, self._backoff * 2 ** (attempt - 1)))
