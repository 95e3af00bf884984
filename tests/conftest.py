from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from settings import GatewaySettings, RouteSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """Tests see no GATEWAY_* variables, no proxy variables and no .env of the developer's."""
    import os

    for name in list(os.environ):
        if name.startswith("GATEWAY_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_with(*routes: dict[str, Any], **sections: Any) -> GatewaySettings:
    """Settings with exactly these routes (and optional sections), whatever the built-in default says."""
    return GatewaySettings(routes=[RouteSettings.model_validate(route) for route in routes], **sections)
