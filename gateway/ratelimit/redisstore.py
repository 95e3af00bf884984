"""The shared store: buckets in Redis, decided by a server-side script in one round trip.

The script uses Redis's clock, so every gateway instance and worker agrees on time, and gives each key a
lifetime that ends when its bucket would be full again, so idle buckets expire by themselves.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.ops.outage import OutageReporter
from gateway.ratelimit.buckets import Decision

logger = logging.getLogger("gateway.ratelimit")

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
        self._outage = OutageReporter(logger, "rate-limit store", "requests are decided by on_store_failure")

    async def hit(self, key: str, interval: float, capacity: float) -> Decision | None:
        try:
            async with asyncio.timeout(self._timeout):
                allowed, remaining, wait, reset = await self._script(
                    keys=[self._prefix + key], args=[round(interval * 1e6), round(capacity * 1e6)]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        return Decision(bool(allowed), int(remaining), int(wait) / 1e6, int(reset) / 1e6)

    @property
    def failures(self) -> int:
        return self._outage.failures

    async def aclose(self) -> None:
        await self._client.aclose()
