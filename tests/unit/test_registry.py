"""One way to plug things in (gateway.registry): built-ins by alias, anything else by dotted path, for balancers,
rate-limit stores and cache stores alike; a wrong name stops start-up naming the key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from pydantic import ValidationError

from gateway import create_app
from gateway.ratelimit.buckets import Decision
from gateway.registry import Registry
from settings import RateLimitSettings, SettingsError
from tests.conftest import settings_with

API = "http://api.internal"


class RecordingStore:
    """A rate-limit store of a team's own: allows everything, and remembers what it was asked."""

    made: list[RecordingStore] = []  # noqa: RUF012 (a test's record)

    def __init__(self, settings: RateLimitSettings) -> None:
        self.settings = settings
        self.keys: list[str] = []
        RecordingStore.made.append(self)

    async def hit(self, key: str, interval: float, capacity: float) -> Decision | None:
        self.keys.append(key)
        return Decision(True, 1, 0.0, 1.0)

    async def aclose(self) -> None:
        pass


class NotAStore:
    def __init__(self, settings: Any) -> None:
        pass


def test_an_alias_or_a_dotted_path_makes_the_extension_and_a_wrong_one_says_why() -> None:
    registry: Registry[object] = Registry("widget", {"plain": object}, required=("hit",))
    assert "plain" in registry and registry.aliases() == ["plain"]
    with pytest.raises(ValueError, match="'plain' is no widget: it has no hit method"):
        registry.make("plain")
    made = registry.make("tests.unit.test_registry:RecordingStore", RateLimitSettings())
    assert isinstance(made, RecordingStore)
    with pytest.raises(ValueError, match=r"cannot load widget .tests\.unit\.nowhere:Store."):
        registry.make("tests.unit.nowhere:Store")


@pytest.mark.anyio
async def test_a_rate_limit_store_of_ones_own_is_named_by_dotted_path() -> None:
    router = respx.MockRouter(assert_all_called=False)
    router.route().respond(200, text="ok")
    policy = {"name": "per-ip", "rate": 1, "burst": 2}
    settings = settings_with(
        {"prefix": "/", "upstreams": [API]},
        rate_limit={"store": "tests.unit.test_registry:RecordingStore", "policies": [policy]},
    )
    RecordingStore.made.clear()
    app = create_app(settings, transport=httpx.MockTransport(router.async_handler))
    transport = httpx.ASGITransport(app, client=("192.0.2.10", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        answers = [(await client.get("/x")).status_code for _ in range(3)]
    [store] = RecordingStore.made
    assert answers == [200, 200, 200]  # the store allows all: the memory store would have refused the third
    assert len(store.keys) == 3 and all(key.endswith("ip:192.0.2.10") for key in store.keys)


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            {"rate_limit": {"store": "tests.unit.nowhere:Store", "policies": [{"rate": 1, "burst": 1}]}},
            "rate_limit.store:",
        ),
        (
            {"rate_limit": {"store": "tests.unit.test_registry:NotAStore", "policies": [{"rate": 1, "burst": 1}]}},
            "no hit",
        ),
        ({"cache": {"store": "tests.unit.test_registry:NotAStore"}}, "cache.store: 'tests.unit.test_registry"),
    ],
)
def test_a_store_that_cannot_be_loaded_stops_start_up_naming_the_key(section: dict[str, Any], problem: str) -> None:
    routes = [{"prefix": "/", "upstreams": [API], "cache": {"enabled": True}}]
    with pytest.raises(SettingsError) as caught:
        create_app(settings_with(*routes, **section))
    assert problem in "; ".join(caught.value.problems)


def test_settings_refuse_a_store_that_is_neither_alias_nor_dotted_path() -> None:
    with pytest.raises(ValidationError, match="store: 'mongo' is none of memory, redis nor a dotted path"):
        RateLimitSettings(store="mongo")
