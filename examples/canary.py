"""Example balancer: send one request in `every` to the last instance (the canary), the rest round robin.

    [routes.balancing]
    policy = "examples.canary:CanaryBalancer"

A balancer is any class with a no-argument constructor and `pick(candidates, key)` (gateway.balancers.Balancer).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from gateway.upstream.pool import Upstream
from gateway.upstream.selection import RoundRobin


class CanaryBalancer:
    """The route's last configured instance gets every 10th request while it is in rotation."""

    every = 10

    def __init__(self) -> None:
        self._count = itertools.count(1)
        self._others = RoundRobin()

    def pick(self, candidates: Sequence[Upstream], key: str | None) -> Upstream:
        canary, others = candidates[-1], candidates[:-1]
        if next(self._count) % self.every == 0 or not others:
            return canary
        return self._others.pick(others, key)
