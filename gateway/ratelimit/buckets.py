"""The token-bucket decision, as GCRA: one timestamp per bucket (the theoretical arrival time, TAT).

A bucket of `burst` tokens refilled at `rate` per second allows a request at `now` when
`max(tat, now) + interval - now <= burst * interval`, with `interval = 1 / rate`; it then stores the new TAT.
Same answers as a token bucket, with one number to keep and no refill step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int  # requests still allowed right now
    retry_after: float  # seconds until the next request would be allowed (0 when allowed)
    reset: float  # seconds until the bucket is full again


def decide(tat: float | None, now: float, interval: float, capacity: float) -> tuple[Decision, float | None]:
    """The decision for one request, and the TAT to store (None: leave the bucket as it was)."""
    start = now if tat is None or tat < now else tat
    new_tat = start + interval
    wait = new_tat - now - capacity
    if wait > 1e-9:
        return Decision(False, 0, wait, start - now), None
    remaining = int((capacity - (new_tat - now)) / interval + 1e-9)
    return Decision(True, remaining, 0.0, new_tat - now), new_tat


class Store(Protocol):
    """Where buckets live. `hit` spends one token of `key` and answers None when the store failed."""

    async def hit(self, key: str, interval: float, capacity: float) -> Decision | None: ...

    async def aclose(self) -> None: ...
