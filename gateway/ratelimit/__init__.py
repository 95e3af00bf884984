"""Rate limiting: token buckets (kept as GCRA timestamps) in memory or in Redis, and the stage."""

from gateway.ratelimit.buckets import Decision, Store
from gateway.ratelimit.memory import MemoryStore
from gateway.ratelimit.redisstore import RedisStore
from gateway.ratelimit.stage import RateLimitStage
from gateway.ratelimit.stores import RATE_LIMIT_STORES

__all__ = ["RATE_LIMIT_STORES", "Decision", "MemoryStore", "RateLimitStage", "RedisStore", "Store"]
