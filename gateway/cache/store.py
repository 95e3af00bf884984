"""Where stored responses live: in memory, bounded in bytes, least recently used dropped first."""

from __future__ import annotations

from collections import OrderedDict

from gateway.cache.policy import Stored


class MemoryCacheStore:
    """Key (the target URI) -> its stored variants (one per Vary outcome), most recent first.

    Per worker process; `max_bytes` bounds bodies and headers together.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, list[Stored]] = OrderedDict()
        self.bytes = 0

    def get(self, key: str) -> list[Stored]:
        variants = self._entries.get(key)
        if variants is None:
            return []
        self._entries.move_to_end(key)
        return variants

    def put(self, key: str, stored: Stored) -> None:
        if stored.size > self._max_bytes:
            return
        variants = [old for old in self._entries.get(key, []) if old.vary != stored.vary]
        self.bytes -= sum(old.size for old in self._entries.get(key, [])) - sum(old.size for old in variants)
        self._entries[key] = [stored, *variants]
        self._entries.move_to_end(key)
        self.bytes += stored.size
        while self.bytes > self._max_bytes and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= sum(old.size for old in evicted)

    def replace(self, key: str, old: Stored, new: Stored) -> None:
        """Swap one variant for its freshened copy (after a 304)."""
        variants = self._entries.get(key, [])
        index = next((position for position, variant in enumerate(variants) if variant is old), None)
        if index is None:
            self.put(key, new)
            return
        variants[index] = new
        self.bytes += new.size - old.size

    def drop(self, key: str) -> bool:
        variants = self._entries.pop(key, None)
        if variants is None:
            return False
        self.bytes -= sum(old.size for old in variants)
        return True

    def purge(self, path: str, *, prefix: bool = False) -> int:
        """Drop the entries of one path (with any query, on any host), or of every path under a prefix."""
        dropped = [
            key
            for key in self._entries
            if (target := key.split(" ", 1)[1].split("?", 1)[0]) == path or (prefix and target.startswith(path))
        ]
        for key in dropped:
            self.drop(key)
        return len(dropped)

    async def aclose(self) -> None:
        self._entries.clear()
        self.bytes = 0
