from __future__ import annotations

from gateway.proxy.headers import ForwardedFor, client_response_headers, upstream_request_headers


def forwarded(*, trusted: bool = False, prefix: bytes = b"") -> ForwardedFor:
    return ForwardedFor(peer="192.0.2.1", scheme="https", prefix=prefix, trusted=trusted, request_id=b"rid")


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [name.lower() for name, _ in headers]


def test_hop_by_hop_and_connection_named_request_headers_are_dropped() -> None:
    incoming = [
        (b"host", b"example.test"),
        (b"connection", b"keep-alive, X-Secret-Hop"),
        (b"x-secret-hop", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"te", b"trailers"),
        (b"trailer", b"x"),
        (b"upgrade", b"h2c"),
        (b"proxy-authorization", b"Basic Zm9vOmJhcg=="),
        (b"proxy-connection", b"keep-alive"),
        (b"expect", b"100-continue"),
        (b"transfer-encoding", b"chunked"),
        (b"accept", b"*/*"),
    ]
    result = upstream_request_headers(incoming, forwarded(), host=b"up.internal")
    assert names(result) == [
        b"host",
        b"accept",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
    ]


def test_a_connection_header_naming_host_cannot_take_the_host_away() -> None:
    """With preserve_host the client's Host goes upstream; `Connection: host` must not drop it, or the upstream
    would get an HTTP/1.1 request without the Host it requires (RFC 9112 3.2)."""
    incoming = [(b"host", b"example.test"), (b"connection", b"host, x-hop"), (b"x-hop", b"1"), (b"accept", b"*/*")]
    result = upstream_request_headers(incoming, forwarded(), host=None)
    assert [(name, value) for name, value in result if name in (b"host", b"x-hop", b"accept")] == [
        (b"host", b"example.test"),
        (b"accept", b"*/*"),
    ]


def test_forwarding_headers_from_an_untrusted_peer_are_replaced() -> None:
    incoming = [
        (b"host", b"example.test"),
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"evil.test"),
        (b"forwarded", b"for=6.6.6.6"),
        (b"x-real-ip", b"6.6.6.6"),
    ]
    result = dict(upstream_request_headers(incoming, forwarded(), host=b"up.internal"))
    assert result[b"x-forwarded-for"] == b"192.0.2.1"
    assert result[b"x-forwarded-proto"] == b"https"
    assert result[b"x-forwarded-host"] == b"example.test"
    assert b"forwarded" not in result
    assert b"x-real-ip" not in result


def test_forwarding_headers_from_a_trusted_proxy_are_extended() -> None:
    incoming = [
        (b"host", b"example.test"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"X-Forwarded-For", b"5.6.7.8"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"public.test"),
    ]
    result = upstream_request_headers(incoming, forwarded(trusted=True), host=b"up.internal")
    as_dict = dict(result)
    assert [value for name, value in result if name == b"x-forwarded-for"] == [b"1.2.3.4, 5.6.7.8, 192.0.2.1"]
    assert as_dict[b"x-forwarded-host"] == b"public.test"
    assert as_dict[b"x-forwarded-proto"] == b"https"


def test_host_is_kept_only_with_preserve_host_and_prefix_is_announced() -> None:
    incoming = [(b"host", b"example.test")]
    replaced = upstream_request_headers(incoming, forwarded(), host=b"up.internal")
    assert [value for name, value in replaced if name == b"host"] == [b"up.internal"]
    kept = upstream_request_headers(incoming, forwarded(prefix=b"/api"), host=None)
    assert (b"host", b"example.test") in kept
    assert (b"x-forwarded-prefix", b"/api") in kept


def test_repeated_request_headers_stay_separate() -> None:
    incoming = [(b"x-tag", b"a"), (b"x-tag", b"b, c")]
    result = upstream_request_headers(incoming, forwarded(), host=b"up.internal")
    assert [value for name, value in result if name == b"x-tag"] == [b"a", b"b, c"]


def test_response_hop_by_hop_date_and_server_are_dropped_and_cookies_kept_apart() -> None:
    incoming = [
        (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"Server", b"upstream"),
        (b"Connection", b"close, X-Internal"),
        (b"X-Internal", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
        (b"Set-Cookie", b"c=3"),
        (b"Content-Length", b"5"),
    ]
    result = client_response_headers(incoming, 200)
    assert result == [
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
        (b"set-cookie", b"c=3"),
        (b"content-length", b"5"),
    ]


def test_a_response_never_carries_both_content_length_and_transfer_encoding() -> None:
    incoming = [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5")]
    assert client_response_headers(incoming, 200) == []


def test_bodyless_statuses_lose_content_length() -> None:
    assert client_response_headers([(b"content-length", b"10"), (b"etag", b'"x"')], 304) == [(b"etag", b'"x"')]
    assert client_response_headers([(b"content-length", b"0")], 204) == []
