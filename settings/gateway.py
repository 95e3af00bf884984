"""The root settings model, where its values come from, and start-up errors that name the key."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pydantic_settings
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import InitSettingsSource

from settings.cache import CacheStoreSettings
from settings.edge import LimitsSettings, TlsSettings
from settings.protection import AccessLogSettings, IPFilterSettings, MiddlewareSettings, RateLimitSettings
from settings.routes import RouteSettings
from settings.sections import AdminSettings, ClientSettings, MetricsSettings, ProxySettings, ServerSettings

ENV_PREFIX = "GATEWAY_"
CONFIG_VARIABLE = "GATEWAY_CONFIG"
DEFAULT_CONFIG = Path(__file__).with_name("default.toml")


class SettingsError(Exception):
    """Invalid configuration; `problems` holds one `key: reason` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class GatewaySettings(BaseSettings):
    """Everything the gateway reads at start-up, validated once.

    Highest first: init arguments, `GATEWAY_<SECTION>__<FIELD>` variables, `.env`, the TOML file named by
    `GATEWAY_CONFIG` (the built-in `settings/default.toml` when unset).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = Field(ServerSettings(), description="Listener for `python -m gateway`.")
    tls: TlsSettings = Field(TlsSettings(), description="TLS termination.")
    limits: LimitsSettings = Field(LimitsSettings(), description="Client limits and deadlines.")
    proxy: ProxySettings = Field(ProxySettings(), description="Trusted forwarding proxies.")
    client: ClientSettings = Field(ClientSettings(), description="Shared upstream client.")
    admin: AdminSettings = Field(AdminSettings(), description="Who may use the /_gateway/ endpoints.")
    metrics: MetricsSettings = Field(MetricsSettings(), description="Prometheus metrics.")
    cache: CacheStoreSettings = Field(CacheStoreSettings(), description="The store of cached routes.")
    access_log: AccessLogSettings = Field(AccessLogSettings(), description="Access log.")
    ip_filter: IPFilterSettings = Field(IPFilterSettings(), description="Who may use the gateway at all.")
    rate_limit: RateLimitSettings = Field(RateLimitSettings(), description="Rate limits.")
    middleware: list[MiddlewareSettings] = Field(
        default_factory=list, description="User middleware for every request, outermost first."
    )
    routes: list[RouteSettings] = Field(default_factory=list, description="The route table. Default none.")

    @model_validator(mode="after")
    def _unique_prefixes(self) -> GatewaySettings:
        first_use: dict[str, int] = {}
        for index, route in enumerate(self.routes):
            prefix = route.prefix.lower()  # routes match case-insensitively
            if prefix in first_use:
                raise ValueError(
                    f"routes[{index}].prefix: {route.prefix!r} is already used by routes[{first_use[prefix]}]"
                )
            first_use[prefix] = index
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, dotenv_settings, TomlFileSource(settings_cls, config_path())


class TomlFileSource(InitSettingsSource):
    """Values from a TOML file; a relative `static_dir` is taken relative to the file's folder."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls, read_toml(path))


def config_path() -> Path:
    named = os.environ.get(CONFIG_VARIABLE)
    return Path(named) if named else DEFAULT_CONFIG


def read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError([f"{CONFIG_VARIABLE}: cannot read {str(path)!r}: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"{CONFIG_VARIABLE}: {str(path)!r} is not valid TOML: {exc}"]) from None
    for route in data.get("routes", []):
        if isinstance(route, dict) and isinstance(route.get("static_dir"), str):
            route["static_dir"] = str(path.parent / route["static_dir"])
    return data


def load_settings(**overrides: Any) -> GatewaySettings:
    """Read and validate the settings, or raise SettingsError with one line per problem."""
    unknown = sorted(
        name
        for name in os.environ
        if name.startswith(ENV_PREFIX)
        and name != CONFIG_VARIABLE
        and name[len(ENV_PREFIX) :].split("__")[0].lower() not in GatewaySettings.model_fields
    )
    if unknown:
        raise SettingsError([f"{name}: unknown setting" for name in unknown])
    try:
        return GatewaySettings(**overrides)
    except ValidationError as exc:
        raise SettingsError([_describe(error) for error in exc.errors()]) from None
    except pydantic_settings.SettingsError as exc:
        raise SettingsError([str(exc)]) from None


def _describe(error: Any) -> str:
    key = ""
    for part in error["loc"]:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    reason = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        reason = "unknown setting"
    return f"{key}: {reason}" if key else reason
