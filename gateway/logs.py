"""Logging for the `gateway.*` loggers: plain lines on stderr, the access log through a background thread."""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from settings import AccessLogSettings

_listener: QueueListener | None = None


class DeferredQueueHandler(QueueHandler):
    """Hands records to the writer thread untouched: formatting and writing happen there, so a slow
    terminal or pipe never stalls the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class AccessFormatter(logging.Formatter):
    """Formats access-log records (a dict of fields) as JSON or as a line for a terminal."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self._json = style == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = record.msg if isinstance(record.msg, dict) else {"message": record.getMessage()}
        moment = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        if self._json:
            return json.dumps({"time": moment, **fields}, separators=(",", ":"))
        return (
            f"{moment} {fields.get('client_ip')} {fields.get('method')} {fields.get('path')} {fields.get('status')} "
            f"{fields.get('bytes_out')}B {fields.get('duration_ms')}ms {fields.get('request_id')}"
            + (f" reason={fields['reason']}" if fields.get("reason") else "")
        )


def configure_logging(level: str = "info", access_log: AccessLogSettings | None = None) -> None:
    """Handlers for `gateway` (stderr) and `gateway.access` (stdout via a background thread), unless the
    application has configured logging itself (a handler on the root logger)."""
    global _listener
    gateway = logging.getLogger("gateway")
    gateway.setLevel(level.upper())
    if gateway.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    gateway.addHandler(handler)

    access_log = access_log or AccessLogSettings()
    access = logging.getLogger("gateway.access")
    access.propagate = False
    if not access_log.enabled:
        access.setLevel(logging.WARNING)
        return
    access.setLevel(logging.INFO)
    output = logging.StreamHandler(sys.stdout)
    output.setFormatter(AccessFormatter(access_log.format))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    access.addHandler(DeferredQueueHandler(records))
    _listener = QueueListener(records, output)
    _listener.start()
    atexit.register(_listener.stop)
