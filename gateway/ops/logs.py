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
# What the writer thread takes: records from any logger call, or (time, fields) from the access log's shortcut.
Entry = logging.LogRecord | tuple[float, dict[str, Any]]


class DeferredQueueHandler(QueueHandler):
    """Hands records to the writer thread untouched: formatting and writing happen there, so a slow
    terminal or pipe never stalls the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def put_fields(self, fields: dict[str, Any]) -> None:
        """An access-log entry without a LogRecord: the fields and the time, formatted by the writer thread."""
        self.queue.put_nowait((time.time(), fields))


def sole_access_handler(logger: logging.Logger) -> DeferredQueueHandler | None:
    """The gateway's own handler, when it is the only place a record on `logger` could go (no other handler,
    no filter, no propagation): the access log then skips building a LogRecord and the logger's dispatch,
    about a fifth of its cost on the event loop (callgrind). Any handler or filter a user adds turns this off
    at once."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.filters or logger.propagate or logger.disabled:
        return None
    handler = handlers[0]
    if type(handler) is not DeferredQueueHandler or handler.filters or handler.level > logging.INFO:
        return None
    return handler


class BatchWriter(threading.Thread):
    """Drains a queue of log records in batches and writes each batch to `stream` at once."""

    def __init__(self, records: queue.SimpleQueue[Entry | None], stream: TextIO, formatter: AccessFormatter) -> None:
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
            lines = [self._line(entry) for entry in batch if entry is not None]
            try:
                self._stream.write("".join(lines))
                self._stream.flush()
            except (OSError, ValueError):
                pass  # the output went away (closed pipe): dropping log lines beats stopping the gateway
            if None in batch:
                return

    def _line(self, entry: Entry) -> str:
        if isinstance(entry, logging.LogRecord):
            return self._formatter.format(entry) + "\n"
        created, fields = entry
        return self._formatter.format_fields(created, fields) + "\n"

    def stop(self) -> None:
        self._records.put(None)
        self.join(timeout=5)


class AccessFormatter(logging.Formatter):
    """Formats access-log records (a dict of fields) as JSON or as a line for a terminal."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self._json = style == "json"
        self._second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text

    def _moment(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond, as datetime's isoformat(timespec="milliseconds") writes it; the
        date and time of day are formatted once a second (records come in bursts within one)."""
        whole = int(created)
        microseconds = round((created - whole) * 1_000_000)  # as datetime rounds a timestamp
        if microseconds == 1_000_000:
            whole, microseconds = whole + 1, 0
        second, text = self._second
        if whole != second:
            text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (whole, text)
        return f"{text}.{microseconds // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = record.msg if isinstance(record.msg, dict) else {"message": record.getMessage()}
        return self.format_fields(record.created, fields)

    def format_fields(self, created: float, fields: dict[str, Any]) -> str:
        moment = self._moment(created)
        if self._json:
            # orjson: a quarter of json.dumps's cost, and this runs once per exchange. "time" goes first by
            # splicing it into the serialised object rather than copying the fields into a new dict.
            rest = orjson.dumps(fields, default=str).decode()
            return f'{{"time":"{moment}",{rest[1:]}' if fields else f'{{"time":"{moment}"}}'
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
    records: queue.SimpleQueue[Entry | None] = queue.SimpleQueue()
    access.addHandler(DeferredQueueHandler(records))
    _writer = BatchWriter(records, sys.stdout, AccessFormatter(access_log.format))
    _writer.start()
    atexit.register(_writer.stop)
