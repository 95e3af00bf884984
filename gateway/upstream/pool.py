"""A route's upstream instances: their addresses, live state, passive health, and the choice among them."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.client.prebuilt import upstream_url
from gateway.upstream.selection import Balancer
from settings import OutlierSettings, UpstreamSettings


class Upstream:
    """One upstream instance: its URL parsed once at start-up, and what the gateway knows of its health."""

    def __init__(self, settings: UpstreamSettings) -> None:
        parts = urlsplit(settings.url)
        self.settings = settings  # what a reload compares, to keep this instance's state when it is unchanged
        self.url = settings.url
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        default_port = 443 if parts.scheme == "https" else 80
        self.port = None if parts.port in (None, default_port) else parts.port  # None: the scheme's default
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (netloc if self.port is None else f"{netloc}:{self.port}").encode("idna")
        self.base_path = parts.path.rstrip("/").encode("ascii")
        self.weight = settings.weight
        self.in_flight = 0
        self.healthy = True  # by active checks; optimistic until they say otherwise
        self.ejected_until = 0.0  # by passive health (outlier detection)
        self.counts = {"requests": 0, "connect_failures": 0, "responses_5xx": 0, "ejections": 0, "retries": 0}
        self.consecutive_failures = 0
        self.consecutive_5xx = 0

    def url_for(self, target: bytes) -> httpx.URL:
        """This upstream's URL for a URL-safe target (path and optional query)."""
        return upstream_url(self.scheme, self.host, self.port, target)

    def in_rotation(self, now: float) -> bool:
        return self.weight > 0 and self.healthy and now >= self.ejected_until

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "url": self.url,
            "weight": self.weight,
            "healthy": self.healthy,
            "ejected_for_s": round(max(0.0, self.ejected_until - now), 3),
            "in_flight": self.in_flight,
            **self.counts,
        }

    def __repr__(self) -> str:
        return f"Upstream({self.url!r}, weight={self.weight})"


class UpstreamPool:
    """The instances of one route, the balancer among those in rotation, and passive health.

    An instance leaves rotation when active checks mark it unhealthy or when it fails
    `outlier.consecutive_failures` real requests in a row (connect failures and resets) or, if set,
    `outlier.consecutive_5xx` answers in a row; ejections last longer each time. The last instance in
    rotation is never ejected. `max_in_flight` caps each instance's concurrent requests.
    """

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        balancer: Balancer,
        outlier: OutlierSettings,
        *,
        max_in_flight: int | None = None,
        panic: bool = False,
        clock: Any = time.monotonic,
    ) -> None:
        self.upstreams = list(upstreams)
        self._balancer = balancer
        self._outlier = outlier
        self._max_in_flight = max_in_flight
        self._panic = panic
        self._clock = clock

    def choose(self, key: str | None = None, exclude: Collection[Upstream] = ()) -> Upstream | None:
        """An instance for the next try, or None when none is in rotation (or all are at their cap)."""
        now = self._clock()
        cap = self._max_in_flight
        candidates = [
            upstream
            for upstream in self.upstreams
            if upstream.in_rotation(now) and upstream not in exclude and (cap is None or upstream.in_flight < cap)
        ]
        if not candidates and self._panic:
            candidates = [u for u in self.upstreams if u.weight > 0 and (cap is None or u.in_flight < cap)]
        if not candidates:
            return None
        return candidates[0] if len(candidates) == 1 else self._balancer.pick(candidates, key)

    def record_success(self, upstream: Upstream, status: int) -> None:
        upstream.consecutive_failures = 0
        if status < 500:
            upstream.consecutive_5xx = 0
            return
        upstream.counts["responses_5xx"] += 1
        upstream.consecutive_5xx += 1
        limit = self._outlier.consecutive_5xx
        if limit is not None and upstream.consecutive_5xx >= limit:
            self._eject(upstream)

    def record_failure(self, upstream: Upstream) -> None:
        """A connect failure or reset: the upstream, not the client, failed the exchange."""
        upstream.counts["connect_failures"] += 1
        upstream.consecutive_failures += 1
        if upstream.consecutive_failures >= self._outlier.consecutive_failures:
            self._eject(upstream)

    def _eject(self, upstream: Upstream) -> None:
        now = self._clock()
        others = [u for u in self.upstreams if u is not upstream and u.in_rotation(now)]
        if not others:
            return  # ejecting the last one would only turn a partial outage into a full one
        upstream.counts["ejections"] += 1
        period = self._outlier.eject_seconds * 2 ** (upstream.counts["ejections"] - 1)
        upstream.ejected_until = now + min(period, self._outlier.max_eject_seconds)
        upstream.consecutive_failures = upstream.consecutive_5xx = 0

    def mark_health(self, upstream: Upstream, healthy: bool) -> None:
        """Set by active checks; a passing check also ends a passive ejection (as Envoy does)."""
        upstream.healthy = healthy
        if healthy:
            upstream.ejected_until = 0.0
