"""One log line when a shared store (Redis) starts failing, one per interval while it does, one when it is back."""

from __future__ import annotations

import logging
import time

# Seconds between two "still failing" lines, however many calls fail in between.
REPORT_INTERVAL = 10.0


class OutageReporter:
    def __init__(self, logger: logging.Logger, what: str, consequence: str) -> None:
        self._logger = logger
        self._what = what
        self._consequence = consequence
        self._failing_since: float | None = None
        self._last_report = 0.0
        self.failures = 0  # calls that failed or timed out, for the metrics

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_report >= REPORT_INTERVAL:
            self._last_report = now
            self._logger.error("%s unavailable (%s); %s", self._what, type(exc).__name__, self._consequence)

    def succeeded(self) -> None:
        if self._failing_since is not None:
            self._logger.warning("%s is back after %.1f s", self._what, time.monotonic() - self._failing_since)
            self._failing_since = None
