"""Prometheus metrics (`prometheus-client`) for `/_gateway/metrics`.

Per-exchange metrics are recorded once per exchange by the access-log middleware, through children looked up
once per label set (a dict probe, not prometheus-client's label resolution on every request). Upstream state
(health, ejections, retries, in-flight) is read from the pools when scraped, so it costs nothing per request.

With several workers, `python -m gateway` points `PROMETHEUS_MULTIPROC_DIR` at a fresh folder before the
workers start, and a scrape sums the per-exchange metrics of all workers (prometheus-client's multiprocess
mode); upstream state then comes from the worker that answers the scrape (each worker checks health itself).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from gateway.upstreams import UpstreamPool

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: they double the output and dashboards do not use them
# Seconds; from a fast cache hit to a slow upstream.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Reasons (scope["gateway.reason"]) that are the upstream's fault rather than a refusal of the client.
UPSTREAM_FAILURES = frozenset({"upstream_unreachable", "upstream_broken", "upstream_timeout"})
STATUS_CLASSES = {index: f"{index}xx" for index in range(1, 6)}


class GatewayMetrics:
    """The metrics of one app, in a registry of its own (tests build several apps in one process)."""

    def __init__(self, pools: Mapping[str, UpstreamPool], stores: Sequence[object | None] = ()) -> None:
        """`stores`: the rate-limit and cache stores; their `failures` counts (Redis) are exported."""
        self.registry = CollectorRegistry()
        registry = self.registry
        self._requests = Counter(
            "gateway_requests",
            "Exchanges by route, method and status class.",
            ["route", "method", "status"],
            registry=registry,
        )
        self._duration = Histogram(
            "gateway_request_duration_seconds",
            "Whole exchange, first byte in to last byte out.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._upstream_time = Histogram(
            "gateway_upstream_response_seconds",
            "Until the upstream's response head (time to first byte).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._bytes_in = Counter("gateway_request_bytes", "Request body bytes received.", ["route"], registry=registry)
        self._bytes_out = Counter("gateway_response_bytes", "Response body bytes sent.", ["route"], registry=registry)
        self._refusals = Counter(
            "gateway_refusals",
            "Requests refused, by reason (ip_filter, rate_limit, body_limit, overload...).",
            ["reason"],
            registry=registry,
        )
        self._upstream_failures = Counter(
            "gateway_upstream_failures",
            "Exchanges failed by the upstream, by route and reason.",
            ["route", "reason"],
            registry=registry,
        )
        self._cache = Counter(
            "gateway_cache",
            "Cached routes' requests by outcome (hit, stale, revalidated, stale_if_error, miss).",
            ["route", "outcome"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Exchanges in progress.", registry=registry, multiprocess_mode="livesum"
        )
        self._state = StateCollector(pools, stores)
        registry.register(self._state)
        if os.environ.get(MULTIPROCESS_VARIABLE):
            _forget_dead_workers(os.environ[MULTIPROCESS_VARIABLE])
        self._children: dict[tuple[str, str, int], tuple[Any, ...]] = {}

    def observe(
        self,
        route: str | None,
        method: str,
        status: int,
        seconds: float,
        upstream_seconds: float | None,
        bytes_in: int,
        bytes_out: int,
        reason: str | None,
        cache: str | None = None,
    ) -> None:
        """One finished exchange (called by the access-log middleware)."""
        route_label = route or ""
        key = (route_label, method, status // 100)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._requests.labels(route_label, method, STATUS_CLASSES.get(status // 100, "other")),
                self._duration.labels(route_label),
                self._upstream_time.labels(route_label),
                self._bytes_in.labels(route_label),
                self._bytes_out.labels(route_label),
            )
        requests, duration, upstream_time, received, sent = children
        requests.inc()
        duration.observe(seconds)
        if upstream_seconds is not None:
            upstream_time.observe(upstream_seconds)
        if bytes_in:
            received.inc(bytes_in)
        if bytes_out:
            sent.inc(bytes_out)
        if cache is not None:
            self._cache.labels(route_label, cache).inc()
        if reason is not None:
            if reason in UPSTREAM_FAILURES:
                self._upstream_failures.labels(route_label, reason).inc()
            elif reason != "client_closed":
                self._refusals.labels(reason).inc()

    def track(self, pools: Mapping[str, UpstreamPool], stores: Sequence[object | None]) -> None:
        """Read upstream state from these pools from now on (after a reload); counters carry on."""
        self._state.pools, self._state.stores = pools, stores

    def exposition(self) -> bytes:
        """The text format, summed over all workers in multiprocess mode."""
        if os.environ.get(MULTIPROCESS_VARIABLE):
            return generate_latest(self._merged()) + generate_latest(_StateOnly(self._state))
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """Cumulative totals for the dashboard, which turns two snapshots into rates and percentiles."""
        registry = self._merged() if os.environ.get(MULTIPROCESS_VARIABLE) else self.registry
        by_status: dict[str, float] = {}
        by_route: dict[str, float] = {}
        refusals: dict[str, float] = {}
        buckets: dict[float, float] = {}
        upstream_failures = in_flight = 0.0
        cache: dict[str, float] = {}
        for family in registry.collect():
            for sample in family.samples:
                labels, value = sample.labels, sample.value
                if sample.name == "gateway_requests_total":
                    by_status[labels["status"]] = by_status.get(labels["status"], 0.0) + value
                    by_route[labels["route"]] = by_route.get(labels["route"], 0.0) + value
                elif sample.name == "gateway_request_duration_seconds_bucket":
                    bound = float(labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + value
                elif sample.name == "gateway_refusals_total":
                    refusals[labels["reason"]] = value
                elif sample.name == "gateway_upstream_failures_total":
                    upstream_failures += value
                elif sample.name == "gateway_requests_in_flight":
                    in_flight += value
                elif sample.name == "gateway_cache_total":
                    cache[labels["outcome"]] = cache.get(labels["outcome"], 0.0) + value
        return {
            "time": time.time(),
            "requests": sum(by_status.values()),
            "by_status": by_status,
            "by_route": by_route,
            "refusals": refusals,
            "upstream_failures": upstream_failures,
            "in_flight": in_flight,
            "cache": cache,
            # [upper bound in seconds (null for +Inf), cumulative count]
            "latency_buckets": [
                [None if math.isinf(bound) else bound, count] for bound, count in sorted(buckets.items())
            ],
        }

    def _merged(self) -> CollectorRegistry:
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged


def _forget_dead_workers(folder: str) -> None:
    """Drop the live-gauge files of workers that are gone (replaced on SIGHUP, or crashed): their in-flight
    counts would otherwise stay in the sum. Counters stay: what a dead worker counted did happen."""
    for name in os.listdir(folder):
        if not name.startswith("gauge_live"):
            continue
        pid = int(name.rsplit("_", 1)[1].removesuffix(".db"))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, another user's


class StateCollector(Collector):
    """Each upstream instance's state and the rate-limit store's failures, read at scrape time."""

    def __init__(self, pools: Mapping[str, UpstreamPool], stores: Sequence[object | None]) -> None:
        self.pools = pools
        self.stores = stores

    def collect(self) -> Iterator[Any]:
        counted = [store for store in self.stores if hasattr(store, "failures")]
        if counted:
            failures = CounterMetricFamily("gateway_redis_errors", "Redis store calls that failed or timed out.")
            failures.add_metric([], sum(store.failures for store in counted))
            yield failures
        healthy = GaugeMetricFamily(
            "gateway_upstream_healthy", "1 when the instance is in rotation.", labels=["route", "upstream"]
        )
        in_flight = GaugeMetricFamily(
            "gateway_upstream_in_flight", "Requests in flight to the instance.", labels=["route", "upstream"]
        )
        counters = {
            name: CounterMetricFamily(f"gateway_upstream_{name}", help_text, labels=["route", "upstream"])
            for name, help_text in (
                ("requests", "Requests sent to the instance."),
                ("retries", "Retries away from the instance."),
                ("ejections", "Times passive health checks ejected the instance."),
                ("connect_failures", "Failed connections to the instance."),
                ("responses_5xx", "5xx answers from the instance."),
            )
        }
        now = time.monotonic()
        for route, pool in self.pools.items():
            for upstream in pool.upstreams:
                labels = [route, upstream.url]
                healthy.add_metric(labels, 1.0 if upstream.in_rotation(now) else 0.0)
                in_flight.add_metric(labels, upstream.in_flight)
                for name, family in counters.items():
                    family.add_metric(labels, upstream.counts.get(name, 0))
        yield healthy
        yield in_flight
        yield from counters.values()


class _StateOnly(Collector):
    """This worker's state collector alone (the per-exchange metrics come from all workers' files)."""

    def __init__(self, state: StateCollector) -> None:
        self._state = state

    def collect(self) -> Iterator[Any]:
        return self._state.collect()
