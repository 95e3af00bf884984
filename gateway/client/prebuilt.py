"""httpx URLs, headers, requests and responses assembled from parts the gateway has already validated, without
httpx re-checking or copying them.

httpx parses and validates every URL it is given (tens of µs per request), normalises each header through
two function calls, and its Request and Response constructors copy the URL, headers and extensions they are
handed. The gateway's upstream origins are validated once at start-up and its targets are made URL-safe by
`paths.url_safe()`; its header pairs are bytes already, and what it hands a constructor is made for that one
object. So the parsed forms can be assembled directly. This uses httpx's internal ParseResult, `Headers._list`
and the attributes its constructors set (httpx is pinned); tests/unit/test_prebuilt.py checks that the results
equal what httpx's own constructors produce.
"""

from __future__ import annotations

from typing import Any

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


class PairHeaders(httpx.Headers):
    """httpx.Headers(pairs) for byte pairs, over the pairs it was made from (which it owns).

    `raw` hands the pairs back without rebuilding them, and the case-insensitive index httpx keeps (`_list`)
    is built only when a field is first looked up or changed. A relayed head is mostly passed on whole, so its
    index is rarely needed: building it and then `raw` cost ~10% of a relayed request's bytecodes.
    """

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._pairs = pairs
        self._indexed: list[tuple[bytes, bytes, bytes]] | None = None
        self._encoding = None

    @property
    def _list(self) -> list[tuple[bytes, bytes, bytes]]:
        if self._indexed is None:
            self._indexed = [(name, name.lower(), value) for name, value in self._pairs]
        return self._indexed

    @_list.setter
    def _list(self, indexed: list[tuple[bytes, bytes, bytes]]) -> None:
        self._indexed = indexed

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        if self._indexed is None:
            return list(self._pairs)
        return [(name, value) for name, _, value in self._indexed]


def prebuilt_request(
    method: str,
    url: httpx.URL,
    headers: httpx.Headers,
    stream: httpx.AsyncByteStream | httpx.ByteStream,
    extensions: dict[str, Any],
) -> httpx.Request:
    """httpx.Request(method, url, headers=headers, stream=stream, extensions=extensions), owning its arguments."""
    request = httpx.Request.__new__(httpx.Request)
    request.method = method.upper()
    request.url = url
    request.headers = headers
    request.extensions = extensions
    request.stream = stream
    return request


def prebuilt_response(
    status: int, headers: httpx.Headers, stream: httpx.AsyncByteStream | httpx.ByteStream, extensions: dict[str, Any]
) -> httpx.Response:
    """httpx.Response(status, headers=headers, stream=stream, extensions=extensions), owning its arguments."""
    response = httpx.Response.__new__(httpx.Response)
    response.status_code = status
    response.headers = headers
    response._request = None
    response.next_request = None
    response.extensions = extensions
    response.history = []
    response.is_closed = False
    response.is_stream_consumed = False
    response.default_encoding = "utf-8"
    response.stream = stream
    response._num_bytes_downloaded = 0
    return response
