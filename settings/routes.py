"""Route settings: `[[routes]]` tables, each a path prefix in front of upstreams or a static folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from settings.balancing import BalancingSettings
from settings.cache import CacheSettings
from settings.protection import IPFilterSettings, MiddlewareSettings, RateLimitPolicy
from settings.sections import UpstreamTlsSettings

MIB = 1024 * 1024

# A prefix is plain path segments: no dot-segments, no percent-escapes, no doubled slashes.
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9\-_~!$&'()*+,=:@]+")


class UpstreamSettings(BaseModel):
    """One upstream instance: an http(s) origin with an optional base path, and its share of traffic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Origin URL, `http://host:port` with an optional base path. Required.")
    weight: int = Field(1, ge=0, description="Relative share of requests; 0 drains the instance. Default 1.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url!r} must start with http:// or https://")
        if not parts.hostname:
            raise ValueError(f"{url!r} has no host")
        if parts.username or parts.password:
            raise ValueError(f"{url!r} must not carry credentials")
        if parts.query or parts.fragment:
            raise ValueError(f"{url!r} must not have a query or fragment")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"{url!r} has an invalid port") from None
        return url


def _upstream_from_shorthand(value: Any) -> Any:
    """A bare string in `upstreams` is shorthand for `{ url = "..." }`."""
    return {"url": value} if isinstance(value, str) else value


Upstream = Annotated[UpstreamSettings, BeforeValidator(_upstream_from_shorthand)]


class TimeoutSettings(BaseModel):
    """Upstream timeouts in seconds. A response body is bounded by `read` between chunks, never by a deadline for
    the whole exchange, so long streams (server-sent events, long polling) live as long as data flows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: float = Field(5.0, gt=0, description="Seconds to open an upstream connection. Default 5.")
    read: float = Field(30.0, gt=0, description="Seconds to wait for each read from the upstream. Default 30.")
    write: float = Field(30.0, gt=0, description="Seconds to wait for each write to the upstream. Default 30.")
    pool: float = Field(5.0, gt=0, description="Seconds to wait for a free pooled connection. Default 5.")
    response_header: float | None = Field(
        None,
        gt=0,
        description="Deadline for the upstream's response head, from the start of the exchange (connecting, "
        "sending the body and retries included); then 504. Default none.",
    )


class WebSocketSettings(BaseModel):
    """How WebSocket sessions on a route are kept alive and bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_message_bytes: int = Field(16 * MIB, ge=1, description="Largest message either way. Default 16 MiB.")
    idle_timeout: float | None = Field(
        300.0, gt=0, description="Seconds without a message either way before the session is closed. Default 300."
    )
    ping_interval: float | None = Field(
        20.0, gt=0, description="Seconds between pings to the upstream (null: none). Default 20."
    )


class RouteSettings(BaseModel):
    """A path prefix and where its requests go: upstream instances, or a static folder (`static_dir`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(description="Path prefix, matched on whole segments (`/api` matches `/api/x`, not `/apix`).")
    upstreams: list[Upstream] = Field(
        default_factory=list, description="Upstream URLs or `{ url, weight }` tables. Default none."
    )
    static_dir: Path | None = Field(
        None, description="Serve files from this folder instead of proxying. Relative to the config file. Default none."
    )
    strip_prefix: bool = Field(False, description="Remove the prefix from the path sent upstream. Default false.")
    preserve_host: bool = Field(
        False, description="Send the client's Host header upstream instead of the upstream's. Default false."
    )
    max_body_bytes: int | None = Field(
        10 * MIB, ge=0, description="Largest request body accepted (413 above it); null for no limit. Default 10 MiB."
    )
    timeouts: TimeoutSettings = Field(TimeoutSettings(), description="Upstream timeouts.")
    websocket: WebSocketSettings = Field(WebSocketSettings(), description="WebSocket sessions on this route.")
    cache: CacheSettings = Field(CacheSettings(), description="This route's HTTP cache. Default off.")
    upstream_tls: UpstreamTlsSettings | None = Field(
        None, description="This route's upstream TLS (CA bundle, client certificate) instead of `[client]`'s."
    )
    balancing: BalancingSettings = Field(
        BalancingSettings(), description="Upstream selection, health checks, ejection and retries."
    )
    ip_filter: IPFilterSettings = Field(
        IPFilterSettings(), description="Who may use this route, checked after the global filter. Default all."
    )
    access_log: bool = Field(
        True, description="Log this route's exchanges (off for noisy health routes). Default true."
    )
    rate_limit: list[RateLimitPolicy] = Field(
        default_factory=list, description="Rate-limit policies for this route, after the global ones. Default none."
    )
    middleware: list[MiddlewareSettings] = Field(
        default_factory=list, description="User middleware for this route only, outermost first. Default none."
    )

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if not prefix.startswith("/"):
            raise ValueError(f"{prefix!r} must start with /")
        trimmed = prefix.rstrip("/")
        for segment in trimmed.split("/")[1:]:
            if segment in (".", "..") or not _PREFIX_SEGMENT.fullmatch(segment):
                raise ValueError(f"{prefix!r} must be plain path segments (no '//', '.', '..' or '%')")
        if trimmed == "/_gateway" or trimmed.startswith("/_gateway/"):
            raise ValueError("/_gateway is reserved for the gateway's own endpoints")
        return trimmed or "/"

    @field_validator("static_dir")
    @classmethod
    def _check_static_dir(cls, static_dir: Path | None) -> Path | None:
        if static_dir is not None and not static_dir.is_dir():
            raise ValueError(f"{str(static_dir)!r} is not a folder")
        return static_dir

    @model_validator(mode="after")
    def _one_target(self) -> RouteSettings:
        if bool(self.upstreams) == (self.static_dir is not None):
            raise ValueError("a route needs either upstreams or static_dir (exactly one)")
        if self.upstreams and not any(upstream.weight for upstream in self.upstreams):
            raise ValueError("at least one upstream needs a weight above 0")
        return self
