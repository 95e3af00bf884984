"""Upstream instances of a route and the selection among them."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from gateway.urls import upstream_url
from settings import UpstreamSettings


class Upstream:
    """One upstream instance, its URL parsed once at start-up."""

    __slots__ = ("base_path", "host", "host_header", "port", "scheme", "url", "weight")

    def __init__(self, settings: UpstreamSettings) -> None:
        parts = urlsplit(settings.url)
        self.url = settings.url
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        default_port = 443 if parts.scheme == "https" else 80
        self.port = None if parts.port in (None, default_port) else parts.port  # None: the scheme's default
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (netloc if self.port is None else f"{netloc}:{self.port}").encode("idna")
        self.base_path = parts.path.rstrip("/").encode("ascii")
        self.weight = settings.weight

    def url_for(self, target: bytes) -> httpx.URL:
        """This upstream's URL for a URL-safe target (path and optional query)."""
        return upstream_url(self.scheme, self.host, self.port, target)

    def __repr__(self) -> str:
        return f"Upstream({self.url!r}, weight={self.weight})"


class WeightedRoundRobin:
    """Smooth weighted round robin (as nginx does): spreads each instance's turns evenly over a cycle."""

    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        self._upstreams = [upstream for upstream in upstreams if upstream.weight > 0]
        self._current = [0] * len(self._upstreams)
        self._total = sum(upstream.weight for upstream in self._upstreams)

    def pick(self) -> Upstream:
        if len(self._upstreams) == 1:
            return self._upstreams[0]
        best = 0
        for index, upstream in enumerate(self._upstreams):
            self._current[index] += upstream.weight
            if self._current[index] > self._current[best]:
                best = index
        self._current[best] -= self._total
        return self._upstreams[best]
