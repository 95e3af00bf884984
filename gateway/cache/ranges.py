"""Byte ranges (RFC 9110 14) answered from a stored complete response: one range becomes a 206, a range past
the end a 416, and anything else (several ranges, another unit, bad syntax, an If-Range that does not match)
the whole response, as a server may always do."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.cache.dates import http_date
from gateway.cache.policy import first
from gateway.proxy.headers import Header

UNSATISFIABLE = (-1, -1)


def byte_range(value: bytes, length: int) -> tuple[int, int] | None:
    """(start, end) with end exclusive for a single satisfiable range of a `length`-byte body, UNSATISFIABLE
    when it starts past the end, None when the Range field is to be ignored."""
    unit, _, spec = value.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition(b"-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or not (first_text.isdigit() or first_text == b"") or not (last_text.isdigit() or last_text == b""):
        return None
    if not first_text:  # suffix: the last N bytes
        if not last_text:
            return None
        suffix = int(last_text)
        return (max(length - suffix, 0), length) if suffix > 0 and length > 0 else UNSATISFIABLE
    start = int(first_text)
    if last_text and int(last_text) < start:
        return None  # 14.1.1: an invalid range-spec, so the field is ignored
    if start >= length:
        return UNSATISFIABLE
    end = min(int(last_text) + 1, length) if last_text else length
    return start, end


def if_range_holds(stored_headers: Sequence[Header], request_headers: Sequence[Header]) -> bool:
    """RFC 9110 13.1.5: a Range applies only if If-Range (when sent) names the stored representation, by a
    strong entity tag or by its exact Last-Modified date."""
    condition = first(request_headers, b"if-range")
    if condition is None:
        return True
    condition = condition.strip()
    if condition.startswith((b'"', b"W/")):
        etag = first(stored_headers, b"etag")
        return etag is not None and not etag.startswith(b"W/") and etag.strip() == condition
    last_modified = http_date(first(stored_headers, b"last-modified"))
    return last_modified is not None and http_date(condition) == last_modified
