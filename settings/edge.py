"""The settings of the edge, where clients connect: `[tls]` termination and `[limits]` on clients."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class TlsSettings(BaseModel):
    """HTTPS served by `python -m gateway`; both files or neither. Checked at start-up: files readable, key
    matching the certificate (and its password), certificate not expired."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    certfile: Path | None = Field(None, description="PEM certificate chain. Default none (plain HTTP).")
    keyfile: Path | None = Field(None, description="PEM private key for `certfile`. Default none.")
    keyfile_password: SecretStr | None = Field(None, description="Password of an encrypted `keyfile`. Default none.")
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version accepted. Default 1.2.")
    client_ca_file: Path | None = Field(
        None, description="PEM bundle of CAs for client certificates (mutual TLS). Default none: no client certs."
    )
    client_cert: Literal["required", "optional"] = Field(
        "required", description="With `client_ca_file`: must every client present a certificate? Default required."
    )
    redirect_http_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Also serve plain HTTP on this port, answering 308 to https. Default off.",
    )
    hsts_max_age: int = Field(
        0, ge=0, description="Seconds of Strict-Transport-Security sent on HTTPS answers; 0 sends none. Default 0."
    )

    @property
    def enabled(self) -> bool:
        return self.certfile is not None

    @model_validator(mode="after")
    def _usable(self) -> TlsSettings:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together: set both or neither")
        for path in (self.certfile, self.keyfile, self.client_ca_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{str(path)!r} is not a readable file")
        if self.certfile is not None and self.keyfile is not None:
            _check_certificate(self.certfile, self.keyfile, self.keyfile_password)
        if self.client_ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(self.client_ca_file))
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(f"client_ca_file {str(self.client_ca_file)!r} holds no usable CA: {exc}") from None
        return self


def _check_certificate(certfile: Path, keyfile: Path, password: SecretStr | None) -> None:
    """Fail at start-up, not on the first handshake: unreadable or mismatched files, wrong password, expired."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password.get_secret_value() if password else None)
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(
            f"certfile {str(certfile)!r} and keyfile {str(keyfile)!r} cannot be used together "
            f"(not PEM, key not matching the certificate, or wrong keyfile_password): {exc}"
        ) from None
    leaf = x509.load_pem_x509_certificate(certfile.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        raise ValueError(f"certfile {str(certfile)!r} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        raise ValueError(f"certfile {str(certfile)!r} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d} UTC")


class LimitsSettings(BaseModel):
    """What a client may send and how slowly, enforced by the gateway's HTTP protocol (gateway.server).

    Refusals are short answers that close the connection: 431, 414, 408, 503. A client too slow to take its
    response is not answered: its connection is closed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_head_bytes: int = Field(
        32_768,
        ge=1024,
        description="Largest request head (request line, headers), bytes; above it 431. Default 32768.",
    )
    max_headers: int = Field(100, ge=1, description="Most header lines in a request; above it 431. Default 100.")
    max_target_bytes: int = Field(
        8192, ge=16, description="Longest request target (path and query), bytes; above it 414. Default 8192."
    )
    head_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a whole request head, from its first byte (or from "
        "connecting); then 408. Default 10.",
    )
    body_timeout: float = Field(
        10.0,
        gt=0,
        description="Window, seconds, over which a request body must keep up `body_min_rate`; "
        "then 408. Time the gateway itself holds the body back (a slow upstream) does not count. Default 10.",
    )
    body_min_rate: int = Field(
        256,
        ge=0,
        description="Bytes per second a request body must average over each `body_timeout` window; "
        "0 only cuts bodies that stall completely. Default 256.",
    )
    send_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a client may take none of a response (or WebSocket messages) the gateway has waiting "
        "for it (nginx's send_timeout); then the connection is closed and the upstream's freed. Default 60.",
    )
    max_connections: int | None = Field(
        10_000,
        ge=1,
        description="Open client connections (per worker) above which requests get 503. Default 10000; none: no cap.",
    )
