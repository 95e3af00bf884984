from __future__ import annotations

import pytest

from gateway.routing.paths import BadTarget, routing_path, strip_segments, url_safe


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", b"/"),
        (b"/api/users", b"/api/users"),
        (b"/api/users/", b"/api/users/"),
        (b"/api//users", b"/api/users"),
        (b"//api", b"/api"),
        (b"/%61pi/x", b"/api/x"),
        (b"/api;jsessionid=1/x", b"/api/x"),
        (b"/a%20b", b"/a b"),
        (b"/.well-known/x", b"/.well-known/x"),
        (b"/a+b", b"/a+b"),
    ],
)
def test_routing_path_decodes_for_matching(raw: bytes, expected: bytes) -> None:
    assert routing_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/api/../admin",
        b"/api/./x",
        b"/api/..",
        b"/api/%2e%2e/admin",
        b"/api/%2E%2e/admin",
        b"/api/.%2e/admin",
        b"/api/..%2fadmin",
        b"/api%2f..%2fadmin",
        b"/api/..%5cadmin",
        b"/api/..\\admin",
        b"/api/%252e%252e/admin",
        b"/api/%252fadmin",
        b"/api/..;/admin",
        b"/api/%00/x",
        b"/api/\x00",
        b"api/x",
        b"*",
    ],
)
def test_targets_that_could_escape_a_prefix_are_refused(raw: bytes) -> None:
    with pytest.raises(BadTarget):
        routing_path(raw)


@pytest.mark.parametrize(
    ("raw", "prefix", "expected"),
    [
        (b"/api/users", b"/api", b"/users"),
        (b"/api", b"/api", b"/"),
        (b"/api/", b"/api", b"/"),
        (b"/api/a/b?c", b"/api", b"/a/b?c"),
        (b"/api//users", b"/api", b"/users"),
        (b"/%61pi/users", b"/api", b"/users"),
        (b"/api;v=1/users", b"/api", b"/users"),
        (b"/v1/api/x", b"/v1/api", b"/x"),
        (b"//v1//api/x%2Fy", b"/v1/api", b"/x%2Fy"),
    ],
)
def test_strip_segments_removes_the_prefix_however_spelled(raw: bytes, prefix: bytes, expected: bytes) -> None:
    assert strip_segments(raw, prefix) == expected


def test_url_safe_encodes_only_bytes_a_url_cannot_hold() -> None:
    assert url_safe(b"/a%20b+c;d=e?x=1&x=2") == b"/a%20b+c;d=e?x=1&x=2"
    assert url_safe("/caf\u00e9".encode()) == b"/caf%C3%A9"
    assert url_safe(b'/a"b<c>') == b"/a%22b%3Cc%3E"
