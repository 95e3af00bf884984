"""Per-route upstream resilience: balancing policy, active health checks, outlier ejection, retries."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from settings.extensions import alias_or_dotted_path

BALANCERS = ("round_robin", "least_in_flight", "random_two", "hash", "first")


class HealthCheckSettings(BaseModel):
    """Active checks: a GET of `path` on every instance every `interval` seconds, from the gateway."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field("/health", pattern=r"^/", description="Path probed on each instance. Default /health.")
    interval: float = Field(5.0, gt=0, description="Seconds between probes. Default 5.")
    timeout: float = Field(2.0, gt=0, description="Seconds a probe may take. Default 2.")
    expected_statuses: list[int] = Field(
        default_factory=lambda: list(range(200, 400)), description="Statuses that count as healthy. Default 2xx-3xx."
    )
    healthy_threshold: int = Field(2, ge=1, description="Passing probes to be back in rotation. Default 2.")
    unhealthy_threshold: int = Field(3, ge=1, description="Failing probes to be taken out. Default 3.")


class OutlierSettings(BaseModel):
    """Passive health: instances failing real requests are ejected for a while (longer each time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consecutive_failures: int = Field(
        5, ge=1, description="Connect failures or resets in a row that eject an instance. Default 5."
    )
    consecutive_5xx: int | None = Field(
        None, ge=1, description="5xx answers in a row that eject it (counted apart); null: 5xx never eject."
    )
    eject_seconds: float = Field(10.0, gt=0, description="First ejection's length; doubles on each repeat. Default 10.")
    max_eject_seconds: float = Field(300.0, gt=0, description="Longest ejection. Default 300.")


class RetrySettings(BaseModel):
    """Retries: any method when the request never reached an upstream; after that, only bodyless idempotent
    requests, on the failures and statuses listed here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(3, ge=1, description="Tries in all, the first included; 1 disables retries. Default 3.")
    on_statuses: list[int] = Field(
        default_factory=lambda: [502, 503, 504], description="Upstream statuses retried (idempotent only)."
    )
    budget: float = Field(
        0.2, ge=0, le=1, description="Most retries as a share of the route's requests in the last 10 s. Default 0.2."
    )
    min_per_second: float = Field(3.0, ge=0, description="Retries always allowed per second. Default 3.")
    backoff: float = Field(0.025, ge=0, description="Base of the jittered exponential backoff, seconds. Default 0.025.")
    per_try_timeout: float | None = Field(
        None, gt=0, description="Seconds one try may wait for the response head. Default none (timeouts.read)."
    )


class BalancingSettings(BaseModel):
    """How a route picks among its upstreams."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(
        "round_robin",
        description="round_robin (smooth, weighted), least_in_flight, random_two, hash, first, or a "
        "`package.module:Class` implementing gateway.balancers.Balancer. Default round_robin.",
    )
    hash_key: str = Field(
        "client_ip",
        pattern=r"^(client_ip|header:[A-Za-z0-9-]+|cookie:[A-Za-z0-9_.-]+)$",
        description="For `hash`: client_ip, header:<name> or cookie:<name>. Default client_ip.",
    )
    max_in_flight: int | None = Field(
        None, ge=1, description="Most requests in flight per instance; over it, another instance or 503. Default none."
    )
    panic: bool = Field(False, description="When every instance is unhealthy, use them all anyway. Default false.")
    health_check: HealthCheckSettings | None = Field(None, description="Active health checks. Default off.")
    outlier: OutlierSettings = Field(OutlierSettings(), description="Passive health.")
    retries: RetrySettings = Field(RetrySettings(), description="Retries.")

    @model_validator(mode="after")
    def _known_policy(self) -> BalancingSettings:
        alias_or_dotted_path(self.policy, BALANCERS, "policy")
        return self
