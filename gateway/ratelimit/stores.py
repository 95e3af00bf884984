"""`[rate_limit] store`: an alias, or `package.module:Class` called with the `[rate_limit]` settings."""

from __future__ import annotations

from gateway.ratelimit.buckets import Store
from gateway.ratelimit.memory import MemoryStore
from gateway.ratelimit.redisstore import RedisStore
from gateway.registry import Registry
from settings import RateLimitSettings


def _memory_store(settings: RateLimitSettings) -> Store:
    return MemoryStore(settings.max_keys)


def _redis_store(settings: RateLimitSettings) -> Store:
    return RedisStore(settings.redis_url, settings.redis_timeout)


RATE_LIMIT_STORES: Registry[Store] = Registry(
    "rate-limit store", {"memory": _memory_store, "redis": _redis_store}, required=("hit", "aclose")
)
