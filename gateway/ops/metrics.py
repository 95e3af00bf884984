"""Prometheus metrics (`prometheus-client`) for `/_gateway/metrics`.

Per-exchange metrics are tallied in plain Python by the access-log middleware and folded into
prometheus-client's metrics before each scrape and every FOLD_INTERVAL. Upstream state (health, ejections,
retries, in-flight) is read from the pools when scraped, so it costs nothing per request.

With several workers, `python -m gateway` points `PROMETHEUS_MULTIPROC_DIR` at a fresh folder before the
workers start, and a scrape sums the per-exchange metrics of all workers (prometheus-client's multiprocess
mode); the other workers' latest FOLD_INTERVAL may not be in it yet. Upstream state comes from the worker
that answers the scrape (each worker checks health itself).
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from gateway.upstream.pool import UpstreamPool

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: they double the output and dashboards do not use them
# Seconds; from a fast cache hit to a slow upstream.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Reasons (Exchange.reason) that are the upstream's fault rather than a refusal of the client.
UPSTREAM_FAILURES = frozenset({"upstream_unreachable", "upstream_broken", "upstream_timeout"})
STATUS_CLASSES = {index: f"{index}xx" for index in range(1, 6)}
# Seconds between folds of the per-exchange tallies into the metrics: how late, at most, another worker's
# exchanges show in a scrape (the worker answering it folds its own first). A fold costs tens of µs.
FOLD_INTERVAL = 0.25


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
        self._tallies: dict[tuple[str, str, int], _Tally] = {}
        self._events: dict[tuple[Counter, tuple[str, ...]], int] = {}
        self.in_flight_now = 0  # kept by the access-log middleware; the gauge gets it when folded

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
        """One finished exchange (called by the access-log middleware): tallied here in plain Python, and
        folded into the metrics by fold(), because prometheus-client's own calls (a lock per increment, a
        bucket scan per observation) cost several µs an exchange."""
        route_label = route or ""
        key = (route_label, method, status // 100)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally()
        tally.requests += 1
        tally.duration[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        tally.duration_sum += seconds
        if upstream_seconds is not None:
            tally.upstream[bisect_left(LATENCY_BUCKETS, upstream_seconds)] += 1
            tally.upstream_sum += upstream_seconds
        tally.bytes_in += bytes_in
        tally.bytes_out += bytes_out
        if cache is not None:
            self._count(self._cache, (route_label, cache))
        if reason is not None:
            if reason in UPSTREAM_FAILURES:
                self._count(self._upstream_failures, (route_label, reason))
            elif reason != "client_closed":
                self._count(self._refusals, (reason,))

    def _count(self, counter: Counter, labels: tuple[str, ...]) -> None:
        self._events[(counter, labels)] = self._events.get((counter, labels), 0) + 1

    def fold(self) -> None:
        """Move the tallies into the prometheus-client metrics (before a scrape, and every FOLD_INTERVAL, so
        that another worker's scrape sees this one's exchanges in multiprocess mode)."""
        tallies, self._tallies = self._tallies, {}
        events, self._events = self._events, {}
        for (route, method, status_class), tally in tallies.items():
            self._requests.labels(route, method, STATUS_CLASSES.get(status_class, "other")).inc(tally.requests)
            _add_observations(self._duration.labels(route), tally.duration, tally.duration_sum)
            _add_observations(self._upstream_time.labels(route), tally.upstream, tally.upstream_sum)
            if tally.bytes_in:
                self._bytes_in.labels(route).inc(tally.bytes_in)
            if tally.bytes_out:
                self._bytes_out.labels(route).inc(tally.bytes_out)
        for (counter, labels), count in events.items():
            counter.labels(*labels).inc(count)
        self.in_flight.set(self.in_flight_now)

    def track(self, pools: Mapping[str, UpstreamPool], stores: Sequence[object | None]) -> None:
        """Read upstream state from these pools from now on (after a reload); counters carry on."""
        self._state.pools, self._state.stores = pools, stores

    def exposition(self) -> bytes:
        """The text format, summed over all workers in multiprocess mode."""
        self.fold()
        if os.environ.get(MULTIPROCESS_VARIABLE):
            return generate_latest(self._merged()) + generate_latest(_StateOnly(self._state))
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """Cumulative totals for the dashboard, which turns two snapshots into rates and percentiles."""
        self.fold()
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


class _Tally:
    """One label set's exchanges since the last fold."""

    __slots__ = ("bytes_in", "bytes_out", "duration", "duration_sum", "requests", "upstream", "upstream_sum")

    def __init__(self) -> None:
        self.requests = self.bytes_in = self.bytes_out = 0
        self.duration_sum = self.upstream_sum = 0.0
        # Per bucket of LATENCY_BUCKETS (not cumulative), the last one for +Inf.
        self.duration = [0] * (len(LATENCY_BUCKETS) + 1)
        self.upstream = [0] * (len(LATENCY_BUCKETS) + 1)


def _add_observations(histogram: Histogram, per_bucket: list[int], total: float) -> None:
    """What `observe()` once per observation would have done, for many at once. prometheus-client has no public
    call for it, so this adds to the child's bucket and sum values (pinned version; tests/unit/test_admin.py
    checks the exposition against direct observe() calls)."""
    if not any(per_bucket):
        return
    buckets = histogram._buckets
    for index, count in enumerate(per_bucket):
        if count:
            buckets[index].inc(count)
    histogram._sum.inc(total)


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
