"""Selection policies among the instances in rotation: a small Protocol, five built-ins, and custom ones
by dotted path."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from gateway.registry import Registry

if TYPE_CHECKING:
    from gateway.upstream.pool import Upstream


class Balancer(Protocol):
    """Picks one of `candidates` (never empty; all in rotation and under their cap). `key` is the request's
    hash key (for hash-based policies), or None."""

    def pick(self, candidates: Sequence[Upstream], key: str | None) -> Upstream: ...


class RoundRobin:
    """Smooth weighted round robin (nginx's): each instance's turns spread evenly over the cycle."""

    def __init__(self) -> None:
        self._current: dict[int, int] = {}

    def pick(self, candidates: Sequence[Upstream], key: str | None) -> Upstream:
        total = 0
        best = candidates[0]
        best_score = None
        for upstream in candidates:
            score = self._current.get(id(upstream), 0) + upstream.weight
            self._current[id(upstream)] = score
            total += upstream.weight
            if best_score is None or score > best_score:
                best, best_score = upstream, score
        self._current[id(best)] -= total
        return best


class LeastInFlight:
    """Fewest outstanding requests per unit of weight; ties go round the instances in turn."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def pick(self, candidates: Sequence[Upstream], key: str | None) -> Upstream:
        start = next(self._turn) % len(candidates)
        rotated = [*candidates[start:], *candidates[:start]]
        return min(rotated, key=lambda upstream: upstream.in_flight / upstream.weight)


class RandomTwo:
    """Power of two choices: two instances drawn by weight, the less loaded one wins."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[Upstream], key: str | None) -> Upstream:
        first, second = self._rng.choices(candidates, weights=[u.weight for u in candidates], k=2)
        return min((first, second), key=lambda upstream: upstream.in_flight / upstream.weight)


class RendezvousHash:
    """Weighted rendezvous hashing on the request's key: when an instance leaves or joins, only the keys
    that were (or will be) on it move. Requests without a key go round robin."""

    def __init__(self) -> None:
        self._fallback = RoundRobin()

    def pick(self, candidates: Sequence[Upstream], key: str | None) -> Upstream:
        if key is None:
            return self._fallback.pick(candidates, None)
        encoded = key.encode()

        def score(upstream: Upstream) -> float:
            digest = hashlib.blake2b(encoded + b"\0" + upstream.url.encode(), digest_size=8).digest()
            unit = (int.from_bytes(digest, "big") + 1) / 2.0**64  # in (0, 1]
            return -upstream.weight / math.log(unit) if unit < 1 else math.inf

        return max(candidates, key=score)


class First:
    """The first instance in configured order that is in rotation: failover."""

    def pick(self, candidates: Sequence[Upstream], key: str | None) -> Upstream:
        return candidates[0]


BALANCERS: Registry[Balancer] = Registry(
    "balancer",
    {
        "round_robin": RoundRobin,
        "least_in_flight": LeastInFlight,
        "random_two": RandomTwo,
        "hash": RendezvousHash,
        "first": First,
    },
    required=("pick",),
)


def balancer_for(policy: str) -> Balancer:
    """A fresh balancer for a route: a built-in name, or `package.module:Class` (its no-argument constructor).

    Raises ValueError naming what could not be loaded.
    """
    return BALANCERS.make(policy)
