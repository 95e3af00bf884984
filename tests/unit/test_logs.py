"""gateway.ops.logs: the access log's writer thread, its formatter, and the shortcut past the logger's dispatch."""

from __future__ import annotations

import io
import json
import logging
import queue
import random
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gateway.exchange import Exchange
from gateway.ops.logs import AccessFormatter, BatchWriter, DeferredQueueHandler, Entry, sole_access_handler
from gateway.stages import accesslog

SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/a",
    "raw_path": b"/a",
    "query_string": b"",
    "headers": [(b"host", b"gw"), (b"user-agent", b"t/1")],
    "client": ("192.0.2.7", 4000),
}
EXCHANGE = Exchange(request_id="r", client_ip="192.0.2.1", target=b"/a", status=200, bytes_out=5, complete=True)


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def entries() -> Iterator[queue.SimpleQueue[Entry | None]]:
    """What the gateway's queue handler is given; the logger is restored afterwards."""
    logger = logging.getLogger("gateway.access")
    saved = (logger.handlers[:], logger.filters[:], logger.propagate, logger.level)
    yield queue.SimpleQueue()
    logger.handlers, logger.filters, logger.propagate = saved[:3]
    logger.setLevel(saved[3])


def as_configured(entries: queue.SimpleQueue[Entry | None]) -> logging.Logger:
    """The access logger as configure_logging() leaves it: the gateway's queue handler alone, no propagation.
    Set inside each test: pytest adds its capturing handlers to the logger for the test's call."""
    logger = logging.getLogger("gateway.access")
    logger.handlers = [DeferredQueueHandler(entries)]
    logger.filters = []
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def log_one() -> None:
    accesslog._log(dict(SCOPE), EXCHANGE, 200, 0.0012345, None)


def test_the_gateways_own_handler_alone_gets_fields_without_a_record(entries: queue.SimpleQueue[Entry | None]) -> None:
    as_configured(entries)
    log_one()
    entry = entries.get_nowait()
    assert isinstance(entry, tuple)
    created, fields = entry
    assert abs(created - datetime.now(UTC).timestamp()) < 60
    assert (fields["path"], fields["status"], fields["duration_ms"], fields["user_agent"]) == ("/a", 200, 1.235, "t/1")


def test_a_handler_a_user_adds_gets_every_record_and_so_does_the_gateways(
    entries: queue.SimpleQueue[Entry | None],
) -> None:
    logger = as_configured(entries)
    users = Collected()
    logger.addHandler(users)
    log_one()
    assert [record.msg["path"] for record in users.records] == ["/a"]  # type: ignore[index]
    assert isinstance(entries.get_nowait(), logging.LogRecord)


def test_a_filter_or_propagation_turns_the_shortcut_off(entries: queue.SimpleQueue[Entry | None]) -> None:
    logger = as_configured(entries)
    assert sole_access_handler(logger) is not None
    logger.addFilter(lambda record: False)
    log_one()
    assert entries.empty(), "the filter saw the record and dropped it"
    logger.filters = []
    logger.propagate = True
    assert sole_access_handler(logger) is None
    logger.propagate = False
    logger.handlers[0].setLevel(logging.WARNING)
    assert sole_access_handler(logger) is None


@pytest.mark.parametrize("style", ["json", "text"])
def test_the_writer_writes_the_same_line_for_fields_and_for_a_record(style: str) -> None:
    fields = {"request_id": "r", "client_ip": "192.0.2.1", "method": "GET", "path": "/x", "status": 200}
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 0, fields, (), None)
    records: queue.SimpleQueue[Entry | None] = queue.SimpleQueue()
    for entry in (record, (record.created, fields), None):
        records.put(entry)
    stream = io.StringIO()
    writer = BatchWriter(records, stream, AccessFormatter(style))
    writer.start()
    writer.join(timeout=10)
    by_record, by_fields = stream.getvalue().splitlines()
    assert by_record == by_fields
    if style == "json":
        parsed = json.loads(by_fields)
        assert list(parsed) == ["time", *fields] and parsed["time"].endswith("+00:00")


def test_times_are_written_as_datetime_writes_them() -> None:
    formatter = AccessFormatter("json")
    sample = random.Random(7)
    moments = [0.0, 1.9999996, 1764200000.0005, 1764200000.123, 1764200000.9999997]
    moments += [sample.uniform(1.7e9, 1.8e9) for _ in range(2000)]
    for moment in moments:
        expected = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format_fields(moment, {"a": 1}))["time"] == expected
    assert json.loads(formatter.format_fields(5.0, {})) == {"time": "1970-01-01T00:00:05.000+00:00"}
