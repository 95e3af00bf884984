"""Selection policies, passive health and retry rules, in isolation (an injected clock, no sleeps)."""

from __future__ import annotations

import random
from collections import Counter

import httpx
import pytest

from gateway.proxy.retries import RetryBudget, RetryPolicy
from gateway.upstream.pool import Upstream, UpstreamPool
from gateway.upstream.selection import First, LeastInFlight, RandomTwo, RendezvousHash, RoundRobin, balancer_for
from settings import OutlierSettings, RetrySettings, UpstreamSettings


def instances(*weights: int) -> list[Upstream]:
    return [Upstream(UpstreamSettings(url=f"http://10.0.0.{index}:80", weight=w)) for index, w in enumerate(weights, 1)]


@pytest.mark.parametrize("weights", [(1, 1, 1), (1, 2, 3), (5, 1)])
def test_round_robin_follows_the_weights_exactly_over_a_cycle(weights: tuple[int, ...]) -> None:
    upstreams = instances(*weights)
    balancer = RoundRobin()
    cycles = 100
    picks = Counter(balancer.pick(upstreams, None).url for _ in range(sum(weights) * cycles))
    assert [picks[u.url] for u in upstreams] == [w * cycles for w in weights]


def test_round_robin_is_smooth() -> None:
    upstreams = instances(5, 1, 1)
    balancer = RoundRobin()
    order = [balancer.pick(upstreams, None).url[-4] for _ in range(7)]
    assert order.count("1") == 5 and order[:2] != ["2", "3"]
    assert "11111" not in "".join(order)


def test_least_in_flight_and_random_two_prefer_the_idle_instance() -> None:
    busy, idle = instances(1, 1)
    busy.in_flight = 10
    assert all(LeastInFlight().pick([busy, idle], None) is idle for _ in range(10))
    rng_two = RandomTwo(random.Random(3))
    picks = Counter(rng_two.pick([busy, idle], None) is idle for _ in range(1000))
    assert picks[True] > 700  # two draws: idle wins unless both draws hit the busy one


def test_least_in_flight_rotates_between_equals() -> None:
    upstreams = instances(1, 1, 1)
    balancer = LeastInFlight()
    assert len({balancer.pick(upstreams, None).url for _ in range(3)}) == 3


def test_rendezvous_hash_moves_only_the_keys_of_a_removed_instance() -> None:
    upstreams = instances(1, 1, 1, 1, 1)
    balancer = RendezvousHash()
    keys = [f"client-{n}" for n in range(10_000)]
    before = {key: balancer.pick(upstreams, key) for key in keys}
    removed = upstreams[2]
    after = {key: balancer.pick([u for u in upstreams if u is not removed], key) for key in keys}
    moved = {key for key in keys if before[key] is not after[key]}
    assert moved == {key for key in keys if before[key] is removed}
    assert 0.15 < len(moved) / len(keys) < 0.25  # about a fifth lived on it
    assert Counter(before.values())[removed] == len(moved)


def test_weight_zero_drains_an_instance() -> None:
    live, drained = instances(1, 0)
    pool = UpstreamPool([live, drained], RoundRobin(), OutlierSettings())
    assert all(pool.choose() is live for _ in range(10))


def test_first_is_failover_order() -> None:
    primary, backup = instances(1, 1)
    assert First().pick([primary, backup], None) is primary


def test_custom_balancer_by_dotted_path() -> None:
    balancer = balancer_for("examples.canary:CanaryBalancer")
    upstreams = instances(1, 1, 1)
    picks = Counter(balancer.pick(upstreams, None).url for _ in range(100))
    assert picks[upstreams[-1].url] == 10
    with pytest.raises(ValueError, match="cannot load balancer"):
        balancer_for("examples.canary:Missing")


def test_consecutive_failures_eject_for_longer_each_time_but_never_the_last() -> None:
    now = [100.0]
    a, b = instances(1, 1)
    outlier = OutlierSettings(consecutive_failures=3, eject_seconds=10, max_eject_seconds=25)
    pool = UpstreamPool([a, b], RoundRobin(), outlier, clock=lambda: now[0])
    for _ in range(3):
        pool.record_failure(a)
    assert not a.in_rotation(now[0]) and a.ejected_until == 110.0
    assert all(pool.choose() is b for _ in range(5))
    for _ in range(3):
        pool.record_failure(b)
    assert b.in_rotation(now[0])  # the last instance in rotation stays
    now[0] = 111.0
    assert a.in_rotation(now[0])
    for _ in range(3):
        pool.record_failure(a)
    assert a.ejected_until == 131.0  # 20 s the second time
    now[0] = 132.0
    for _ in range(3):
        pool.record_failure(a)
    assert a.ejected_until == 157.0  # capped at 25 s
    pool.mark_health(a, True)
    assert a.in_rotation(now[0])  # a passing active check ends an ejection


def test_5xx_eject_only_when_configured_and_are_counted_apart() -> None:
    a, b = instances(1, 1)
    quiet = UpstreamPool([a, b], RoundRobin(), OutlierSettings())
    for _ in range(10):
        quiet.record_success(a, 503)
    assert a.in_rotation(0) and a.counts["responses_5xx"] == 10 and a.counts["connect_failures"] == 0
    a, b = instances(1, 1)
    strict = UpstreamPool([a, b], RoundRobin(), OutlierSettings(consecutive_5xx=2), clock=lambda: 0.0)
    strict.record_success(a, 502)
    strict.record_success(a, 200)
    strict.record_success(a, 502)
    assert a.in_rotation(0.0)
    strict.record_success(a, 502)
    assert not a.in_rotation(0.0)


def test_in_flight_cap_and_panic() -> None:
    a, b = instances(1, 1)
    pool = UpstreamPool([a, b], RoundRobin(), OutlierSettings(), max_in_flight=2)
    a.in_flight = b.in_flight = 2
    assert pool.choose() is None
    b.in_flight = 1
    assert pool.choose() is b
    a.healthy = b.healthy = False
    assert pool.choose() is None
    assert UpstreamPool([a, b], RoundRobin(), OutlierSettings(), panic=True).choose() is not None


@pytest.mark.parametrize(
    ("error", "method", "body_sent", "retry"),
    [
        (httpx.ConnectError("refused"), "POST", False, True),  # never reached an upstream
        (httpx.ConnectError("refused"), "POST", True, False),  # but the client's body was already read
        (httpx.PoolTimeout("full"), "PATCH", False, True),
        (httpx.ReadError("reset"), "GET", False, True),
        (httpx.ReadError("reset"), "POST", False, False),  # reached an upstream: never twice
        (httpx.RemoteProtocolError("closed"), "PUT", False, True),
        (httpx.ReadTimeout("slow"), "DELETE", False, True),
        (httpx.ReadTimeout("slow"), "PATCH", False, False),
    ],
)
def test_what_may_be_retried(error: Exception, method: str, body_sent: bool, retry: bool) -> None:
    assert RetryPolicy(RetrySettings()).after_error(error, 1, method, body_sent) is retry
    assert RetryPolicy(RetrySettings()).after_error(error, 3, method, body_sent) is False  # attempts used up


def test_retry_budget_is_a_share_of_recent_requests() -> None:
    now = [0.0]
    budget = RetryBudget(RetrySettings(budget=0.1, min_per_second=0.2), clock=lambda: now[0])
    for _ in range(100):
        budget.record_request()
    spent = sum(budget.try_spend() for _ in range(50))
    assert spent == 10
    now[0] = 11.0  # a new window
    budget.record_request()
    assert budget.try_spend() and budget.try_spend() and not budget.try_spend()  # the floor: 0.2/s x 10 s
