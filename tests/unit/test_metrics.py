"""Per-exchange tallies folded into prometheus-client's metrics give what observing each exchange would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from gateway.ops.metrics import LATENCY_BUCKETS, GatewayMetrics

# On bucket bounds, between them, below the first and above the last (+Inf).
SECONDS = [0.0001, 0.0005, 0.003, 0.0025, 0.7, 0.7, 30.0, 45.0]


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, str(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith(name)
    }


def test_folded_histograms_equal_direct_observations() -> None:
    metrics = GatewayMetrics({})
    reference = CollectorRegistry()
    direct = Histogram("gateway_request_duration_seconds", "", ["route"], buckets=LATENCY_BUCKETS, registry=reference)
    for seconds in SECONDS:
        metrics.observe("/api", "GET", 200, seconds, None, 0, 10, None)
        direct.labels("/api").observe(seconds)
    metrics.fold()
    assert samples(metrics.registry, "gateway_request_duration_seconds") == samples(
        reference, "gateway_request_duration_seconds"
    )


def test_counts_and_events_survive_several_folds() -> None:
    metrics = GatewayMetrics({})
    for _ in range(3):
        metrics.observe("/api", "GET", 503, 0.01, 0.005, 5, 10, "upstream_timeout")
        metrics.observe("/api", "GET", 429, 0.001, None, 0, 10, "rate_limit", cache="miss")
        metrics.fold()
    metrics.in_flight_now = 2
    text = metrics.exposition().decode()
    assert 'gateway_requests_total{method="GET",route="/api",status="5xx"} 3.0' in text
    assert 'gateway_requests_total{method="GET",route="/api",status="4xx"} 3.0' in text
    assert 'gateway_upstream_failures_total{reason="upstream_timeout",route="/api"} 3.0' in text
    assert 'gateway_refusals_total{reason="rate_limit"} 3.0' in text
    assert 'gateway_cache_total{outcome="miss",route="/api"} 3.0' in text
    assert 'gateway_upstream_response_seconds_count{route="/api"} 3.0' in text
    assert 'gateway_request_bytes_total{route="/api"} 15.0' in text
    assert "gateway_requests_in_flight 2.0" in text
