"""Rate limiting: token buckets (kept as GCRA timestamps) in memory or in Redis, and the middleware."""

from gateway.ratelimit.buckets import Decision, Store
from gateway.ratelimit.memory import MemoryStore
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.ratelimit.redisstore import RedisStore

__all__ = ["Decision", "MemoryStore", "RateLimitMiddleware", "RedisStore", "Store"]
