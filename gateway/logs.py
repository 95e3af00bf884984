"""Logging for the `gateway.*` loggers: plain lines on stderr, the access log through a background thread."""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from logging.handlers import QueueHandler
from typing import Any, TextIO

import orjson

from settings import AccessLogSettings

# How long the writer lets access-log records pile up before writing them: one wake-up and one write per
# batch instead of per request, which is most of the log's cost under load.
BATCH_PAUSE = 0.05

_writer: BatchWriter | None = None


class DeferredQueueHandler(QueueHandler):
    """Hands records to the writer thread untouched: formatting and writing happen there, so a slow
    terminal or pipe never stalls the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class BatchWriter(threading.Thread):
    """Drains a queue of log records in batches and writes each batch to `stream` at once."""

    def __init__(
        self, records: queue.SimpleQueue[logging.LogRecord | None], stream: TextIO, formatter: logging.Formatter
    ) -> None:
        super().__init__(name="gateway-access-log", daemon=True)
        self._records = records
        self._stream = stream
        self._formatter = formatter

    def run(self) -> None:
        while True:
            first = self._records.get()
            if first is not None:
                time.sleep(BATCH_PAUSE)
            batch = [first]
            while not self._records.empty():
                batch.append(self._records.get_nowait())
            lines = [self._formatter.format(record) + "\n" for record in batch if record is not None]
            try:
                self._stream.write("".join(lines))
                self._stream.flush()
            except (OSError, ValueError):
                pass  # the output went away (closed pipe): dropping log lines beats stopping the gateway
            if None in batch:
                return

    def stop(self) -> None:
        self._records.put(None)
        self.join(timeout=5)


class AccessFormatter(logging.Formatter):
    """Formats access-log records (a dict of fields) as JSON or as a line for a terminal."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self._json = style == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = record.msg if isinstance(record.msg, dict) else {"message": record.getMessage()}
        moment = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        if self._json:
            # orjson: a quarter of json.dumps's cost, and this runs once per exchange
            return orjson.dumps({"time": moment, **fields}, default=str).decode()
        return (
            f"{moment} {fields.get('client_ip')} {fields.get('method')} {fields.get('path')} {fields.get('status')} "
            f"{fields.get('bytes_out')}B {fields.get('duration_ms')}ms {fields.get('request_id')}"
            + (f" reason={fields['reason']}" if fields.get("reason") else "")
        )


def configure_logging(level: str = "info", access_log: AccessLogSettings | None = None) -> None:
    """Handlers for `gateway` (stderr) and `gateway.access` (stdout via a background thread), unless the
    application has configured logging itself (a handler on the root logger)."""
    global _writer
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
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    access.addHandler(DeferredQueueHandler(records))
    _writer = BatchWriter(records, sys.stdout, AccessFormatter(access_log.format))
    _writer.start()
    atexit.register(_writer.stop)
