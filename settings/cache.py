"""`[routes.cache]` (a route's shared HTTP cache, RFC 9111) and `[cache]` (the store they share)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from settings.extensions import alias_or_dotted_path

MIB = 1024 * 1024


class CacheSettings(BaseModel):
    """A route's cache; off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Cache this route's GET responses as a shared cache. Default false.")
    max_object_bytes: int = Field(
        MIB, ge=0, description="Largest response stored; bigger ones stream through unbuffered. Default 1 MiB."
    )
    heuristic: bool = Field(
        True, description="Heuristic freshness for responses with Last-Modified but no explicit one. Default true."
    )
    heuristic_fraction: float = Field(
        0.1, gt=0, le=1, description="Heuristic lifetime as a share of (Date - Last-Modified). Default 0.1."
    )
    heuristic_max_seconds: float = Field(86400, ge=0, description="Cap of the heuristic lifetime. Default 86400.")
    store_without_freshness: bool = Field(
        False,
        description="Also store responses with neither freshness nor a validator (ETag, Last-Modified), and "
        "those of statuses not heuristically cacheable with only an ETag: stale at once, revalidated when they "
        "have a validator, else kept `default_ttl`. Default false, as the RFC expects.",
    )
    collapse_seconds: float = Field(
        5.0, ge=0, description="How long concurrent misses for one URL wait for the first (collapsing). Default 5."
    )
    default_ttl: float = Field(
        0, ge=0, description="With `store_without_freshness`: lifetime for such responses. Default 0."
    )
    set_cookie: Literal["store", "strip", "bypass"] = Field(
        "store",
        description='Responses that set cookies: "store" them with their cookies, as RFC 9111 3.1 asks (an '
        'upstream that marks such a response shareable shares its cookie); "strip" the cookies from what is stored '
        '(the client that caused the miss still gets them); "bypass": never store them (nginx\'s default). '
        'Default "store".',
    )
    stale_if_unreachable: float = Field(
        60,
        ge=0,
        description="Seconds past its freshness a stored response may still answer when the upstream cannot be "
        "reached, breaks the connection or times out (RFC 9111 4.2.4 lets a disconnected cache serve stale); "
        "never for must-revalidate, proxy-revalidate, s-maxage or no-cache responses. 0 turns it off. Default 60.",
    )


class CacheStoreSettings(BaseModel):
    """The store every cached route shares: in memory per worker, or in Redis across instances."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = Field(
        "memory",
        description="Where responses are stored: `memory`, `redis`, or a `package.module:Class` called with these "
        "settings (a gateway.cache.CacheStore). Default memory.",
    )
    max_bytes: int = Field(
        64 * MIB, ge=0, description="Memory store: bytes for stored responses, LRU beyond. Default 64 MiB."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/1", description='Redis for `store = "redis"`.')
    redis_timeout: float = Field(
        0.25, gt=0, description="Seconds a Redis call may take; slower or failing ones are misses. Default 0.25."
    )
    keep_stale_seconds: float = Field(
        3600, ge=0, description="Redis store: how long entries outlive their freshness, for revalidation. Default 3600."
    )

    @field_validator("store")
    @classmethod
    def _known_store(cls, store: str) -> str:
        return alias_or_dotted_path(store, ("memory", "redis"), "store")
