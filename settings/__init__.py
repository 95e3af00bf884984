"""Validated settings for the gateway: one source of truth, read once at start-up."""

from settings.balancing import BalancingSettings, HealthCheckSettings, OutlierSettings, RetrySettings
from settings.cache import CacheSettings, CacheStoreSettings
from settings.edge import LimitsSettings, TlsSettings
from settings.gateway import GatewaySettings, SettingsError, load_settings
from settings.protection import (
    AccessLogSettings,
    IPFilterSettings,
    MiddlewareSettings,
    RateLimitPolicy,
    RateLimitSettings,
)
from settings.routes import RouteSettings, TimeoutSettings, UpstreamSettings
from settings.sections import (
    AdminSettings,
    ClientSettings,
    MetricsSettings,
    ProxySettings,
    ServerSettings,
    UpstreamTlsSettings,
)

__all__ = [
    "AccessLogSettings",
    "AdminSettings",
    "BalancingSettings",
    "CacheSettings",
    "CacheStoreSettings",
    "ClientSettings",
    "GatewaySettings",
    "HealthCheckSettings",
    "IPFilterSettings",
    "LimitsSettings",
    "MetricsSettings",
    "MiddlewareSettings",
    "OutlierSettings",
    "ProxySettings",
    "RateLimitPolicy",
    "RateLimitSettings",
    "RetrySettings",
    "RouteSettings",
    "ServerSettings",
    "SettingsError",
    "TimeoutSettings",
    "TlsSettings",
    "UpstreamSettings",
    "UpstreamTlsSettings",
    "load_settings",
]
