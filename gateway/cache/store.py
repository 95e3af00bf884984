"""Where stored responses live: in memory per worker (bounded in bytes, LRU), or in Redis shared by instances.

A store maps a key (host and target) to that resource's stored variants, one per Vary outcome, most recent
first. Both stores have the same small async interface; a Redis that fails is a miss, never an error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections import OrderedDict
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.cache.policy import Stored
from gateway.ops.outage import OutageReporter
from gateway.registry import Registry
from settings import CacheStoreSettings

logger = logging.getLogger("gateway.cache")


class CacheStore(Protocol):
    async def get(self, key: str) -> list[Stored]: ...

    async def put(self, key: str, stored: Stored) -> None:
        """Store `stored`, replacing the variant with the same Vary outcome."""

    async def drop(self, key: str) -> None: ...

    async def purge(self, path: str, *, prefix: bool = False) -> int:
        """Drop one path (any query, any host), or every path under a prefix; how many keys went."""

    async def aclose(self) -> None: ...


def _matches(key: str, path: str, prefix: bool) -> bool:
    target = key.split(" ", 1)[1].split("?", 1)[0]
    return target == path or (prefix and target.startswith(path))


class MemoryCacheStore:
    """Per worker process; `max_bytes` bounds bodies and headers together."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, list[Stored]] = OrderedDict()
        self.bytes = 0

    async def get(self, key: str) -> list[Stored]:
        variants = self._entries.get(key)
        if variants is None:
            return []
        self._entries.move_to_end(key)
        return variants

    async def put(self, key: str, stored: Stored) -> None:
        if stored.size > self._max_bytes:
            return
        previous = self._entries.get(key, [])
        kept = [old for old in previous if old.vary != stored.vary]
        self.bytes += stored.size - sum(old.size for old in previous) + sum(old.size for old in kept)
        self._entries[key] = [stored, *kept]
        self._entries.move_to_end(key)
        while self.bytes > self._max_bytes and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= sum(old.size for old in evicted)

    async def drop(self, key: str) -> None:
        variants = self._entries.pop(key, None)
        if variants is not None:
            self.bytes -= sum(old.size for old in variants)

    async def purge(self, path: str, *, prefix: bool = False) -> int:
        dropped = [key for key in self._entries if _matches(key, path, prefix)]
        for key in dropped:
            await self.drop(key)
        return len(dropped)

    async def aclose(self) -> None:
        self._entries.clear()
        self.bytes = 0


class RedisCacheStore:
    """Shared by every gateway instance and worker using the same Redis: one value per key holding its
    variants, expiring `keep_stale` seconds after its freshest variant goes stale (Redis's own memory policy
    evicts before that if it must). Calls slower than `timeout` or failing count as misses."""

    def __init__(self, url: str, timeout: float, keep_stale: float, prefix: str = "gateway:cache:") -> None:
        self._client = aioredis.Redis.from_url(url, socket_connect_timeout=max(timeout, 0.5))
        self._timeout = timeout
        self._keep_stale = keep_stale
        self._prefix = prefix
        self._outage = OutageReporter(logger, "cache store", "requests go to the upstreams")

    @property
    def failures(self) -> int:
        return self._outage.failures

    async def get(self, key: str) -> list[Stored]:
        raw = await self._call(self._client.get(self._prefix + key))
        if not raw:
            return []
        try:
            return [_decode(item) for item in json.loads(raw)]
        except (ValueError, KeyError, TypeError):
            logger.warning("dropping an unreadable cache entry for %s", key)
            await self.drop(key)
            return []

    async def put(self, key: str, stored: Stored) -> None:
        variants = [stored, *(old for old in await self.get(key) if old.vary != stored.vary)]
        expires = max(variant.response_time + variant.lifetime for variant in variants) - stored.response_time
        seconds = max(1, math.ceil(expires + self._keep_stale))
        value = json.dumps([_encode(variant) for variant in variants])
        await self._call(self._client.set(self._prefix + key, value, ex=seconds))

    async def drop(self, key: str) -> None:
        await self._call(self._client.delete(self._prefix + key))

    async def purge(self, path: str, *, prefix: bool = False) -> int:
        dropped = 0
        try:
            async with asyncio.timeout(max(self._timeout, 5.0)):
                async for raw_key in self._client.scan_iter(match=self._prefix + "*", count=500):
                    key = raw_key.decode("latin-1").removeprefix(self._prefix)
                    if _matches(key, path, prefix):
                        dropped += int(await self._client.delete(raw_key))
        except (RedisError, OSError, TimeoutError) as exc:
            self._outage.failed(exc)
        return dropped

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, operation: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                result = await operation
        except (RedisError, OSError, TimeoutError) as exc:
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        return result


def _encode(stored: Stored) -> dict[str, Any]:
    return {
        "status": stored.status,
        "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in stored.headers],
        "body": base64.b64encode(stored.body).decode("ascii"),
        "request_time": stored.request_time,
        "response_time": stored.response_time,
        "lifetime": stored.lifetime,
        "vary": [
            [name.decode("latin-1"), None if value is None else value.decode("latin-1")] for name, value in stored.vary
        ],
    }


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _decode(item: dict[str, Any]) -> Stored:
    return Stored(
        int(item["status"]),
        [(name.encode("latin-1"), value.encode("latin-1")) for name, value in item["headers"]],
        base64.b64decode(item["body"]),
        float(item["request_time"]),
        float(item["response_time"]),
        float(item["lifetime"]),
        [(name.encode("latin-1"), None if value is None else value.encode("latin-1")) for name, value in item["vary"]],
    )


def _memory_store(settings: CacheStoreSettings) -> CacheStore:
    return MemoryCacheStore(settings.max_bytes)


def _redis_store(settings: CacheStoreSettings) -> CacheStore:
    return RedisCacheStore(settings.redis_url, settings.redis_timeout, settings.keep_stale_seconds)


# `[cache] store`: an alias, or `package.module:Class` called with the `[cache]` settings.
CACHE_STORES: Registry[CacheStore] = Registry(
    "cache store",
    {"memory": _memory_store, "redis": _redis_store},
    required=("get", "put", "drop", "purge", "aclose"),
)
