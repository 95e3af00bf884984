from __future__ import annotations

import contextlib
import gc
import os
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


# What CI installs so that these tests run: there, a skip that names one of them is a failure.
NEEDED_IN_CI = ("redis", "chromium")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (CI set, as .ci/run runs), a test skipped for want of Redis or Chromium fails instead."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and any(need in str(report.longrepr).lower() for need in NEEDED_IN_CI):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which installs what it needs: {report.longrepr}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_with(*routes: dict[str, Any], **sections: Any) -> GatewaySettings:
    """Settings with exactly these routes (and optional sections), whatever the built-in default says."""
    return GatewaySettings(routes=[RouteSettings.model_validate(route) for route in routes], **sections)


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[str]]:
    """The type names of what the block leaves for the garbage collector (objects in reference cycles, which
    wait for its passes instead of being freed at once); the list is filled when the block ends."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    left: list[str] = []
    try:
        yield left
        gc.collect()
        left.extend(type(thing).__name__ for thing in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
