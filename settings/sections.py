"""The non-route sections of the settings: `[server]`, `[proxy]` and `[client]`."""

from __future__ import annotations

import ssl
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from settings.protection import Network

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class ServerSettings(BaseModel):
    """How `python -m gateway` runs uvicorn; `uvicorn gateway.main:app` takes these from its own flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address to listen on. Default 127.0.0.1.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on; the PORT variable wins. Default 8000.")
    workers: int = Field(1, ge=1, description="Worker processes; state such as pools is per worker. Default 1.")
    keepalive_timeout: float = Field(
        5.0, gt=0, description="Seconds an idle client connection stays open. Default 5 (Procfile: 95)."
    )
    graceful_shutdown_timeout: float = Field(
        30.0, ge=0, description="Seconds in-flight requests get to finish on shutdown. Default 30."
    )
    log_level: LogLevel = Field("info", description="Level of the `gateway.*` and uvicorn loggers. Default info.")
    watch_config: bool = Field(
        False,
        description="Reload when the `GATEWAY_CONFIG` file changes (checked every second; one worker). Default false.",
    )
    splice: bool = Field(
        True,
        description=(
            "Move large response bodies (64 KiB or more left) from the upstream's socket to the client's inside the "
            "kernel (Linux splice), as HAProxy's `option splice-response`; only over plain TCP on both sides, and "
            "on routes without user middleware or cache. Default true."
        ),
    )


class ProxySettings(BaseModel):
    """Which peers may tell the gateway who the client is (X-Forwarded-*, Forwarded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trusted_proxies: list[Network] = Field(
        default_factory=list,
        description="Networks (CIDR) whose forwarding headers are believed. Default none: the peer is the client.",
    )


class UpstreamTlsSettings(BaseModel):
    """How the gateway checks upstream certificates, and the certificate it shows upstreams that ask for one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verify: bool = Field(True, description="Verify upstream TLS certificates. Default true.")
    ca_file: Path | None = Field(
        None, description="PEM bundle of CAs to trust for upstreams instead of the system's (certifi). Default none."
    )
    certfile: Path | None = Field(
        None, description="PEM client certificate for upstreams that require mutual TLS. Default none."
    )
    keyfile: Path | None = Field(None, description="PEM private key of `certfile`. Default none.")

    @field_validator("ca_file", "certfile", "keyfile")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{str(path)!r} is not a readable file")
        return path

    @model_validator(mode="after")
    def _usable(self) -> Self:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together: set both or neither")
        if self.certfile is not None:
            try:
                ssl.create_default_context().load_cert_chain(self.certfile, self.keyfile)
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(f"certfile and keyfile cannot be used together: {exc}") from None
        return self


class ClientSettings(UpstreamTlsSettings):
    """The shared upstream client: its connection pool, and upstream TLS for routes without their own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: int = Field(
        1000, ge=1, description="Most connections open at once to each upstream instance (per worker). Default 1000."
    )
    max_keepalive_connections: int = Field(
        200, ge=0, description="Most idle connections kept for reuse per upstream instance. Default 200."
    )
    keepalive_expiry: float = Field(30.0, ge=0, description="Seconds an idle upstream connection is kept. Default 30.")


LOOPBACK: list[Network] = [IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")]


class AdminSettings(BaseModel):
    """Who may use the gateway's own endpoints under `/_gateway/` (all but `/_gateway/health`, which is open)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: list[Network] | None = Field(
        None,
        description="Networks (CIDR) allowed. Default: loopback only, or everyone when `token` is set.",
    )
    token: SecretStr | None = Field(
        None, description="Bearer token required (`Authorization: Bearer ...`), from anywhere allowed. Default none."
    )

    @property
    def networks(self) -> list[Network] | None:
        """The allowed networks, None for everyone."""
        if self.allow is not None:
            return self.allow
        return None if self.token is not None else LOOPBACK


class MetricsSettings(BaseModel):
    """Prometheus metrics at `/_gateway/metrics` (guarded like the admin endpoints)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Record and serve metrics. Default true.")
