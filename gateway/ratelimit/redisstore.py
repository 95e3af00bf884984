"""The shared store: buckets in Redis, decided by a server-side script in one round trip.

The script uses Redis's clock, so every gateway instance and worker agrees on time, and gives each key a
lifetime that ends when its bucket would be full again, so idle buckets expire by themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.ratelimit.buckets import Decision

logger = logging.getLogger("gateway.ratelimit")

# Seconds between two "Redis is failing" log lines, however many requests fail in between.
REPORT_INTERVAL = 10.0

# KEYS[1]: the bucket; ARGV[1]: interval, ARGV[2]: capacity, both in microseconds.
GCRA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - now - capacity
if wait > 0 then
  return {0, 0, wait, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((capacity - (new_tat - now)) / interval), 0, new_tat - now}
"""


class RedisStore:
    """Buckets shared by every gateway using the same Redis. A decision that fails or takes longer than
    `timeout` seconds answers None (the middleware then fails open or closed); failures are logged at
    most once per REPORT_INTERVAL, and recovery once."""

    def __init__(self, url: str, timeout: float, prefix: str = "gateway:ratelimit:") -> None:
        self._client = aioredis.Redis.from_url(url, socket_connect_timeout=max(timeout, 0.5))
        self._script = self._client.register_script(GCRA)
        self._timeout = timeout
        self._prefix = prefix
        self._failing_since: float | None = None
        self._last_report = 0.0
        self.failures = 0  # calls that failed or timed out, for the metrics

    async def hit(self, key: str, interval: float, capacity: float) -> Decision | None:
        try:
            async with asyncio.timeout(self._timeout):
                allowed, remaining, wait, reset = await self._script(
                    keys=[self._prefix + key], args=[round(interval * 1e6), round(capacity * 1e6)]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            self._report_failure(exc)
            return None
        if self._failing_since is not None:
            logger.warning("rate-limit store is back after %.1f s", time.monotonic() - self._failing_since)
            self._failing_since = None
        return Decision(bool(allowed), int(remaining), int(wait) / 1e6, int(reset) / 1e6)

    def _report_failure(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_report >= REPORT_INTERVAL:
            self._last_report = now
            logger.error(
                "rate-limit store unavailable (%s); requests are decided by on_store_failure", type(exc).__name__
            )

    async def aclose(self) -> None:
        await self._client.aclose()
