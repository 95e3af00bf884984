"""Active health checks: probe each instance of a route in the background, from the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from gateway.upstream.pool import Upstream, UpstreamPool
from settings import HealthCheckSettings

logger = logging.getLogger("gateway.health")


class HealthChecker:
    """Probes every instance of `pool` every `settings.interval` seconds with a GET of `settings.path`.

    An instance is taken out of rotation after `unhealthy_threshold` failing probes in a row and put back
    (also from a passive ejection) after `healthy_threshold` passing ones; each change is logged once.
    """

    def __init__(self, pool: UpstreamPool, settings: HealthCheckSettings, client: httpx.AsyncClient) -> None:
        self._pool = pool
        self._settings = settings
        self._client = client
        self._expected = frozenset(settings.expected_statuses)
        self._streaks: dict[int, int] = {}  # id(upstream) -> passes (> 0) or failures (< 0) in a row

    async def run(self) -> None:
        while True:
            await asyncio.gather(*(self.probe(upstream) for upstream in self._pool.upstreams))
            await asyncio.sleep(self._settings.interval)

    async def probe(self, upstream: Upstream) -> None:
        url = upstream.url_for(upstream.base_path + self._settings.path.encode())
        try:
            response = await self._client.get(url, timeout=self._settings.timeout)
            passed = response.status_code in self._expected
        except httpx.HTTPError:
            passed = False
        streak = self._streaks.get(id(upstream), 0)
        streak = max(streak, 0) + 1 if passed else min(streak, 0) - 1
        self._streaks[id(upstream)] = streak
        out_of_rotation = not upstream.healthy or upstream.ejected_until > time.monotonic()
        if out_of_rotation and streak >= self._settings.healthy_threshold:
            # Passing checks also end a passive ejection, as Envoy does by default: a restarted instance
            # comes back after `healthy_threshold` intervals, not after its ejection time.
            self._pool.mark_health(upstream, True)
            logger.warning("upstream %s is healthy again", upstream.url)
        elif upstream.healthy and -streak >= self._settings.unhealthy_threshold:
            self._pool.mark_health(upstream, False)
            logger.warning("upstream %s failed %d health checks: out of rotation", upstream.url, -streak)
