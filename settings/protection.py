"""Settings of the client-facing middleware: IP filter, access log, and user middleware by dotted path."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ImportString, field_validator

from settings.extensions import alias_or_dotted_path


def _parse_network(value: Any) -> Any:
    """An address or CIDR network, strictly (`10.0.0.1/8` has host bits set and is refused)."""
    if isinstance(value, str):
        try:
            return ip_network(value.strip())
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    return value


Network = Annotated[IPv4Network | IPv6Network, BeforeValidator(_parse_network)]


class IPFilterSettings(BaseModel):
    """Who may use the gateway (or a route), by resolved client address. Deny wins; an empty allow list
    allows everyone not denied."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: list[Network] = Field(
        default_factory=list, description="Addresses or CIDR networks allowed; empty means everyone. Default empty."
    )
    deny: list[Network] = Field(
        default_factory=list, description="Addresses or CIDR networks refused with 403. Default empty."
    )

    @property
    def active(self) -> bool:
        return bool(self.allow or self.deny)


class AccessLogSettings(BaseModel):
    """One line per exchange on logger `gateway.access`, written by a background thread."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Log every exchange. Default true.")
    format: Literal["json", "text"] = Field(
        "json", description="`json` (one object per line) or `text` (for a terminal). Default json."
    )


class MiddlewareSettings(BaseModel):
    """A user middleware: a pure ASGI class `factory(app, **options)` named by dotted path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factory: ImportString[Any] = Field(description="`package.module:Class`, imported at start-up. Required.")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the class. Default none.")

    @property
    def dotted_path(self) -> str:
        """`package.module:Class`, as written in the settings."""
        return f"{self.factory.__module__}:{self.factory.__qualname__}"


class RateLimitPolicy(BaseModel):
    """A token bucket: `burst` requests at once, refilled at `rate` per second, per key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Shown in RateLimit headers.")
    rate: float = Field(gt=0, description="Requests per second, sustained. Required.")
    burst: int = Field(ge=1, description="Requests allowed at once (the bucket's size). Required.")
    key: str = Field(
        "client_ip",
        pattern=r"^(client_ip|route|header:[A-Za-z0-9-]+)$",
        description="What is limited: `client_ip`, `route` (everyone together) or `header:<name>` (an API key; "
        "requests without it fall back to the client IP). Default client_ip.",
    )
    methods: list[str] = Field(
        default_factory=list, description='Only these methods count (e.g. ["POST"]); empty means all. Default all.'
    )
    only: list[Network] = Field(default_factory=list, description="Only clients in these networks. Default all.")
    exempt: list[Network] = Field(default_factory=list, description="Clients never limited. Default none.")


class RateLimitSettings(BaseModel):
    """Where buckets live, and the policies that apply to every request (routes add their own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: list[RateLimitPolicy] = Field(default_factory=list, description="Global policies. Default none.")
    store: str = Field(
        "memory",
        description="`memory` (per worker process), `redis` (shared by all instances), or a `package.module:Class` "
        "called with these settings (a gateway.ratelimit.Store). Default memory.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description='Redis for `store = "redis"`.')
    redis_timeout: float = Field(
        0.01, gt=0, description="Seconds a Redis decision may take before `on_store_failure` applies. Default 0.01."
    )
    on_store_failure: Literal["open", "closed"] = Field(
        "open", description="When Redis fails: `open` lets requests through, `closed` answers 503. Default open."
    )
    max_keys: int = Field(
        100_000, ge=1, description="Buckets the memory store keeps; idle ones go first. Default 100000."
    )
    headers_on_success: bool = Field(
        False, description="Add the `RateLimit` header to allowed responses too. Default false."
    )

    @field_validator("store")
    @classmethod
    def _known_store(cls, store: str) -> str:
        return alias_or_dotted_path(store, ("memory", "redis"), "store")
