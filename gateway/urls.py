"""Upstream URLs built without re-parsing.

httpx parses and validates every URL it is given (tens of µs per request). The gateway's upstream origins are
validated once at start-up and its targets are made URL-safe by `paths.url_safe()`, so the parsed form can be
assembled directly. This uses httpx's internal ParseResult (httpx is pinned); tests/unit/test_urls.py checks
that the result equals what httpx's own parser produces.
"""

from __future__ import annotations

import httpx
from httpx._urlparse import ParseResult


def upstream_url(scheme: str, host: str, port: int | None, target: bytes) -> httpx.URL:
    """The URL for `target` (path and optional `?query`, URL-safe ASCII) on an already validated origin.

    `port` is None for the scheme's default port, as httpx normalises it.
    """
    path, separator, query = target.decode("ascii").partition("?")
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = ParseResult(scheme, "", host, port, path, query if separator else None, None)
    return url
