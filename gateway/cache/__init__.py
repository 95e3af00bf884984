"""The HTTP cache: RFC 9111 rules (policy), a bounded memory store, and the per-route middleware."""

from gateway.cache.middleware import CacheMiddleware, cache_key
from gateway.cache.store import CACHE_STORES, CacheStore, MemoryCacheStore, RedisCacheStore

__all__ = ["CACHE_STORES", "CacheMiddleware", "CacheStore", "MemoryCacheStore", "RedisCacheStore", "cache_key"]
