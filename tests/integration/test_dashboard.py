"""The dashboard at /_gateway/ in a real headless browser (Debian's chromium, driven by Selenium through the
system chromedriver: nothing is downloaded), while real traffic flows through a real gateway."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from gateway import create_app
from tests.conftest import settings_with
from tests.servers import WAIT, Received, UpstreamHandler, scripted_upstream, serve_app

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    (CHROMIUM is None or CHROMEDRIVER is None) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


def answer(handler: UpstreamHandler, request: Received) -> None:
    status = b"503 Service Unavailable" if request.target.startswith(b"/api/fail") else b"200 OK"
    handler.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1100"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER or ""))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def test_dashboard_loads_cleanly_and_shows_live_numbers(browser: webdriver.Chrome, tmp_path: Path) -> None:
    with scripted_upstream(answer) as upstream:
        routes = (
            {"prefix": "/api", "upstreams": [upstream.url]},
            {"prefix": "/blocked", "upstreams": [upstream.url], "ip_filter": {"deny": ["127.0.0.1"]}},
        )
        with serve_app(create_app(settings_with(*routes))) as url:
            stop = threading.Event()
            traffic = threading.Thread(target=_traffic, args=(url, stop), daemon=True)
            traffic.start()
            try:
                browser.get(url + "/_gateway/")
                rate = _wait_for_number(browser, "rate")
                refusals = _wait_for_number(browser, "refusals")
                upstream_rows = browser.find_elements(By.CSS_SELECTOR, "#upstreams tbody tr")
                status = browser.find_element(By.ID, "status").text
                resources = browser.execute_script(
                    "return performance.getEntriesByType('resource').map(entry => entry.name)"
                )
                browser.save_screenshot(str(tmp_path / "dashboard.png"))
                console = browser.get_log("browser")
            finally:
                stop.set()
                traffic.join(WAIT)
    assert rate > 0 and refusals > 0
    assert status.startswith("live")
    assert len(upstream_rows) == 2 and all("healthy" in row.text for row in upstream_rows)
    assert all(resource.startswith(url) for resource in resources), "nothing from the internet"
    assert [entry for entry in console if entry["level"] == "SEVERE"] == []
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


def _traffic(url: str, stop: threading.Event) -> None:
    """Requests, a few upstream errors and refusals, until stopped (at most WAIT seconds)."""
    deadline = time.monotonic() + WAIT
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            for path in ("/api/a", "/api/b", "/api/c", "/api/fail", "/blocked/x"):
                client.get(path)
            time.sleep(0.01)


def _wait_for_number(browser: webdriver.Chrome, element_id: str) -> float:
    """The first positive number the card shows (the page polls every 2 s); 0 if none within WAIT."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        number = re.match(r"[0-9.]+", browser.find_element(By.ID, element_id).text)  # "240.4/s"
        value = float(number.group()) if number else 0.0
        if value > 0:
            return value
        time.sleep(0.2)
    return 0.0
