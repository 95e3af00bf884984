from __future__ import annotations

import httpx
import pytest

from gateway.client.prebuilt import PairHeaders, prebuilt_request, prebuilt_response, upstream_url


@pytest.mark.parametrize(
    ("scheme", "host", "port", "target"),
    [
        ("http", "127.0.0.1", 8080, b"/"),
        ("http", "api.internal", None, b"/a/b?x=1&x=2"),
        ("https", "api.internal", 8443, b"/a%20b/c+d;v=1?q=a+b%2Bc&empty=&flag"),
        ("https", "api.internal", None, b"/v1/items"),
        ("http", "::1", 9000, b"/x?"),
    ],
)
def test_assembled_urls_equal_parsed_ones(scheme: str, host: str, port: int | None, target: bytes) -> None:
    netloc = f"[{host}]" if ":" in host else host
    parsed = httpx.URL(f"{scheme}://{netloc}{f':{port}' if port else ''}{target.decode()}")
    built = upstream_url(scheme, host, port, target)
    assert built == parsed
    assert (built.raw_path, built.raw_host, built.port, built.scheme) == (
        parsed.raw_path,
        parsed.raw_host,
        parsed.port,
        parsed.scheme,
    )
    assert str(built) == str(parsed)


def test_pair_headers_equal_constructed_ones() -> None:
    pairs = [(b"Content-Type", b"text/plain"), (b"set-cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"X-Empty", b"")]
    built, constructed = PairHeaders(pairs), httpx.Headers(pairs)
    assert built._list == constructed._list
    assert built.raw == constructed.raw == pairs
    assert built.get_list("set-cookie") == ["a=1", "b=2"] and built["content-type"] == "text/plain"
    # as the relay builds its requests: with a stream, so that httpx adds no Host or length of its own
    assert httpx.Request("GET", "http://up.internal/", headers=built, stream=httpx.ByteStream(b"")).headers.raw == pairs


@pytest.mark.parametrize("stream", [httpx.ByteStream(b""), httpx.ByteStream(b"body"), httpx.AsyncByteStream()])
def test_prebuilt_requests_equal_constructed_ones(stream: httpx.AsyncByteStream | httpx.ByteStream) -> None:
    url = upstream_url("http", "up.internal", 8080, b"/a?b=1")
    pairs = [(b"host", b"up.internal:8080"), (b"x-request-id", b"abc")]
    extensions = {"timeout": {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 5.0}}
    built = prebuilt_request("get", url, PairHeaders(pairs), stream, dict(extensions))
    constructed = httpx.Request("get", url, headers=pairs, stream=stream, extensions=extensions)
    assert vars(built).keys() == vars(constructed).keys()
    assert (built.method, built.url, built.headers.raw, built.extensions, built.stream) == (
        constructed.method,
        constructed.url,
        constructed.headers.raw,
        constructed.extensions,
        constructed.stream,
    )


@pytest.mark.parametrize("stream", [httpx.ByteStream(b"complete"), httpx.AsyncByteStream()])
def test_prebuilt_responses_equal_constructed_ones(stream: httpx.AsyncByteStream | httpx.ByteStream) -> None:
    pairs = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"8")]
    extensions = {"http_version": b"HTTP/1.1"}
    built = prebuilt_response(200, PairHeaders(pairs), stream, dict(extensions))
    constructed = httpx.Response(200, headers=pairs, stream=stream, extensions=extensions)
    assert vars(built) == {**vars(constructed), "headers": built.headers}
    assert built.headers.raw == constructed.headers.raw
    assert (built.http_version, built.reason_phrase, built.is_closed) == ("HTTP/1.1", "OK", False)


def test_pair_headers_index_themselves_only_when_asked_and_stay_consistent() -> None:
    pairs = [(b"Content-Type", b"text/plain"), (b"X-Trace", b"1")]
    built = PairHeaders(pairs)
    handed_out = built.raw
    handed_out.append((b"x-sneaked", b"in"))  # a caller's list is its own
    assert built.raw == [(b"Content-Type", b"text/plain"), (b"X-Trace", b"1")]
    built["x-trace"] = "2"
    built.setdefault("x-added", "3")
    del built["content-type"]
    constructed = httpx.Headers([(b"Content-Type", b"text/plain"), (b"X-Trace", b"1")])
    constructed["x-trace"] = "2"
    constructed.setdefault("x-added", "3")
    del constructed["content-type"]
    assert built.raw == constructed.raw == [(b"x-trace", b"2"), (b"x-added", b"3")]
    assert built == constructed and built.copy() == constructed
