"""Settings of the client-facing middleware: IP filter, access log, and user middleware by dotted path."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ImportString


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
