"""The embedded store: buckets in a bounded dict, least recently used dropped first."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.ratelimit.buckets import Decision, decide


class MemoryStore:
    """Buckets of this worker process only. At most `max_keys` are kept: past that, the bucket used
    longest ago goes; an idle bucket is full again anyway, so dropping it changes no decision."""

    def __init__(self, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._tats: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tats)

    async def hit(self, key: str, interval: float, capacity: float) -> Decision | None:
        decision, new_tat = decide(self._tats.get(key), self._clock(), interval, capacity)
        if new_tat is not None:
            self._tats[key] = new_tat
            self._tats.move_to_end(key)
            if len(self._tats) > self._max_keys:
                self._tats.popitem(last=False)
        return decision

    async def aclose(self) -> None:
        self._tats.clear()
