"""RFC 9111 rules, one case per rule, as pure functions with an injected clock (no sleeps)."""

from __future__ import annotations

import email.utils

import pytest

from gateway.cache.policy import (
    Stored,
    freshened,
    freshness_lifetime,
    http_date,
    judge,
    not_modified_for,
    parse_cache_control,
    stale_if_error,
    storable,
    stored_headers,
    vary_snapshot,
)

NOW = 1_800_000_000.0


def date(offset: float = 0) -> bytes:
    return email.utils.formatdate(NOW + offset, usegmt=True).encode()


def h(*pairs: tuple[str, str | bytes]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value if isinstance(value, bytes) else value.encode()) for name, value in pairs]


def stored(
    *pairs: tuple[str, str | bytes],
    status: int = 200,
    request: list[tuple[bytes, bytes]] | None = None,
    at: float = NOW,
    lifetime: float | None = None,
) -> Stored:
    headers = h(("date", date(at - NOW)), *pairs)
    return Stored(
        status,
        headers,
        b"body",
        at,
        at,
        freshness_lifetime(status, headers) if lifetime is None else lifetime,
        vary_snapshot(request or [], headers),
    )


# Storability (RFC 9111 3, 3.5; RFC 9110 15.1)
@pytest.mark.parametrize(
    ("method", "status", "request_headers", "response_headers", "expected"),
    [
        ("GET", 200, [], [("cache-control", "max-age=60")], True),
        ("GET", 200, [], [], False),  # neither freshness nor validator
        ("GET", 200, [], [("last-modified", date(-3600))], True),  # heuristically cacheable
        ("GET", 206, [], [("cache-control", "max-age=60")], False),  # partial content: not understood here
        ("POST", 200, [], [("cache-control", "max-age=60")], False),
        ("GET", 200, [], [("cache-control", "no-store, max-age=60")], False),
        ("GET", 200, [("cache-control", "no-store")], [("cache-control", "max-age=60")], False),
        ("GET", 200, [], [("cache-control", "private, max-age=60")], False),
        ("GET", 200, [], [("cache-control", 'private="set-cookie", max-age=60')], True),
        ("GET", 200, [("authorization", "Bearer x")], [("cache-control", "max-age=60")], False),
        ("GET", 200, [("authorization", "Bearer x")], [("cache-control", "public, max-age=60")], True),
        ("GET", 200, [("authorization", "Bearer x")], [("cache-control", "s-maxage=60")], True),
        ("GET", 200, [("authorization", "Bearer x")], [("cache-control", "must-revalidate, max-age=5")], True),
        ("GET", 200, [], [("cache-control", "max-age=60"), ("vary", "*")], False),
        ("GET", 200, [], [("expires", date(60))], True),
        ("GET", 200, [], [("cache-control", "public")], True),
        ("GET", 500, [], [("cache-control", "max-age=60")], True),  # explicit freshness: any final status
        ("GET", 599, [], [("cache-control", "max-age=60, must-understand")], False),  # not understood
        ("GET", 404, [], [("cache-control", "max-age=60")], True),
        ("GET", 200, [], [("cache-control", "no-store, must-understand, max-age=60")], True),
        ("GET", 206, [], [("cache-control", "no-store, must-understand, max-age=60")], False),
    ],
)
def test_storable(
    method: str,
    status: int,
    request_headers: list[tuple[str, str]],
    response_headers: list[tuple[str, str]],
    expected: bool,
) -> None:
    assert storable(method, status, h(*request_headers), h(*response_headers)) is expected


def test_a_validator_makes_a_response_storable_without_freshness() -> None:
    """The issue's rule: never store a response with neither freshness nor a validator unless the route says
    so. An ETag is a validator: such a response is stored stale and revalidated on use (RFC 9111 4.3)."""
    assert storable("GET", 200, [], h(("etag", '"v1"')))
    assert storable("GET", 200, [], h(("etag", '"v1"'), ("cache-control", "no-cache")))
    assert not storable("GET", 200, [], h(("content-type", "text/plain")))
    assert storable("GET", 200, [], h(("content-type", "text/plain")), store_without_freshness=True)
    assert not storable("GET", 302, [], h(("etag", '"v1"')))  # not heuristically cacheable
    assert storable("GET", 302, [], h(("etag", '"v1"')), store_without_freshness=True)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", True),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:37 GMT", True),  # obsolete RFC 850
        ("Sun Nov  6 08:49:37 1994", True),  # obsolete asctime, which has no zone and means GMT
        ("Sun, 06 Nov 1994 08:49:37 AEST", False),  # HTTP-dates are GMT only
        ("yesterday", False),
    ],
)
def test_every_http_date_format_is_accepted(value: str, valid: bool) -> None:
    """RFC 9110 5.6.7: a recipient MUST accept all three HTTP-date formats."""
    assert http_date(value.encode()) == (784111777.0 if valid else None)


def test_whitespace_before_equals_makes_a_directive_value_invalid() -> None:
    """`max-age =3600` is not the grammar: the value counts as invalid, which makes the response stale (never
    fresher than it said); restrictive directives keep their effect."""
    assert freshness_lifetime(200, h(("date", date()), ("cache-control", "max-age =3600"))) == 0
    assert parse_cache_control(h(("cache-control", 'no-cache ="set-cookie"'))).values["no-cache"] == ""


# Freshness lifetime (4.2.1, 4.2.2)
@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        ([("cache-control", "max-age=60")], 60),
        ([("cache-control", "max-age=60, s-maxage=10")], 10),  # s-maxage wins in a shared cache
        ([("cache-control", "MAX-AGE=30")], 30),  # directive names are case-insensitive
        ([("cache-control", 'max-age="20"')], 20),  # quoted form tolerated
        ([("cache-control", "max-age=abc")], 0),  # invalid: stale
        ([("cache-control", "max-age=-5")], 0),
        ([("cache-control", "max-age=99999999999999")], 2**31),  # capped, no overflow
        ([("expires", date(120))], 120),
        ([("expires", "not a date")], 0),  # invalid Expires: already expired
        ([("expires", "0")], 0),
        ([("expires", date(120)), ("cache-control", "max-age=5")], 5),  # max-age beats Expires
        ([("last-modified", date(-10_000))], 1000),  # heuristic: 10% of Date - Last-Modified
        ([("last-modified", date(-10_000_000))], 86400),  # capped
        ([("last-modified", date(10))], 0),  # Last-Modified after Date: no heuristic
        ([], 0),
    ],
)
def test_freshness_lifetime(headers: list[tuple[str, str | bytes]], lifetime: float) -> None:
    assert freshness_lifetime(200, h(("date", date()), *headers)) == pytest.approx(lifetime)


def test_heuristic_only_for_heuristically_cacheable_statuses_and_when_allowed() -> None:
    headers = h(("date", date()), ("last-modified", date(-10_000)))
    assert freshness_lifetime(302, headers) == 0
    assert freshness_lifetime(200, headers, heuristic=False) == 0
    # RFC 9111 5.2.2.9: a public response with no explicit freshness is heuristically cacheable, any status.
    public = h(("date", date()), ("last-modified", date(-10_000)), ("cache-control", "public"))
    assert freshness_lifetime(599, public) == pytest.approx(1_000)


# Age (4.2.3)
def test_age_counts_upstream_age_transit_and_time_in_the_cache() -> None:
    headers = h(("date", date(-10)), ("age", "30"), ("cache-control", "max-age=100"))
    entry = Stored(200, headers, b"", NOW - 2, NOW, 100, [])
    # corrected_initial_age = max(apparent 10, age 30 + delay 2) = 32; plus 5 s resident
    assert entry.current_age(NOW + 5) == pytest.approx(37)


@pytest.mark.parametrize("value", ["soon", "-7200", "7200.0", "7200;foo=bar", ""])
def test_an_invalid_age_header_is_ignored(value: str) -> None:
    entry = Stored(200, h(("date", date()), ("age", value)), b"", NOW, NOW, 100, [])
    assert entry.current_age(NOW + 1) == pytest.approx(1)


@pytest.mark.parametrize(("lines", "age"), [(["7200,0"], 7200), (["0, 7200"], 0), (["7200", "0"], 7200)])
def test_a_list_based_age_counts_its_first_member(lines: list[str], age: int) -> None:
    """RFC 9111 5.1: Age is a singleton; a cache seeing a list SHOULD use the first member."""
    entry = Stored(200, h(("date", date()), *[("age", line) for line in lines]), b"", NOW, NOW, 100, [])
    assert entry.current_age(NOW) == pytest.approx(age)


# Serving (4.2, 5.2.1)
def test_fresh_then_stale() -> None:
    entry = stored(("cache-control", "max-age=60"))
    assert judge(entry, [], NOW + 59).fresh
    assert judge(entry, [], NOW + 61).must_revalidate


@pytest.mark.parametrize(
    ("request_directives", "offset", "fresh", "stale_allowed"),
    [
        ("no-cache", 1, False, False),
        ("max-age=10", 5, True, False),
        ("max-age=10", 20, False, False),
        ("max-age=0", 1, False, False),
        ("min-fresh=30", 40, False, False),  # 60 - 40 = 20 left, 30 wanted
        ("min-fresh=30", 20, True, False),
        ("max-stale", 600, False, True),
        ("max-stale=100", 120, False, True),
        ("max-stale=10", 120, False, False),
        ("max-stale=x", 70, False, False),  # invalid argument grants nothing
    ],
)
def test_request_directives(request_directives: str, offset: float, fresh: bool, stale_allowed: bool) -> None:
    verdict = judge(stored(("cache-control", "max-age=60")), h(("cache-control", request_directives)), NOW + offset)
    assert (verdict.fresh, verdict.stale_allowed) == (fresh, stale_allowed)


def test_pragma_no_cache_counts_only_without_cache_control() -> None:
    entry = stored(("cache-control", "max-age=60"))
    assert judge(entry, h(("pragma", "no-cache")), NOW + 1).must_revalidate
    assert judge(entry, h(("pragma", "no-cache"), ("cache-control", "max-stale")), NOW + 1).fresh


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate", "s-maxage=60"])
def test_responses_that_forbid_stale_serving_ignore_max_stale(directive: str) -> None:
    entry = stored(("cache-control", f"max-age=60, {directive}"))
    assert not judge(entry, h(("cache-control", "max-stale")), NOW + 120).stale_allowed


def test_no_cache_response_is_always_revalidated() -> None:
    entry = stored(("cache-control", "no-cache, max-age=60"))
    assert judge(entry, [], NOW + 1).must_revalidate


# Vary (4.1)
def test_vary_matches_normalised_values_and_missing_fields() -> None:
    request = h(("accept-encoding", "gzip,  br"))
    entry = stored(("cache-control", "max-age=60"), ("vary", "Accept-Encoding"), request=request)
    assert entry.matches(h(("Accept-Encoding", "gzip, br")))
    assert not entry.matches(h(("accept-encoding", "identity")))
    assert not entry.matches([])
    absent = stored(("cache-control", "max-age=60"), ("vary", "x-tenant"))
    assert absent.matches([]) and not absent.matches(h(("x-tenant", "a")))


@pytest.mark.parametrize(
    ("first_request", "later_request", "matches"),
    [
        ([("foo", "1, 2")], [("foo", "1"), ("foo", "2")], True),  # field lines combined (RFC 9110 5.3)
        ([("foo", "1,2")], [("foo", " 1, 2 ")], True),  # list members trimmed
        ([("foo", "a b")], [("foo", "ab")], False),  # whitespace inside a member is not ignored
        ([("foo", "Text")], [("foo", "text")], False),  # values may be case-sensitive
        ([("accept-language", "en, de")], [("accept-language", "eN ,   De")], True),  # language tags are not
        ([("accept-language", "en, de")], [("accept-language", "de, en")], False),  # order is preference
    ],
)
def test_selecting_fields_are_normalised_only_where_the_value_cannot_change(
    first_request: list[tuple[str, str]], later_request: list[tuple[str, str]], matches: bool
) -> None:
    name = first_request[0][0]
    entry = stored(("cache-control", "max-age=60"), ("vary", name), request=h(*first_request))
    assert entry.matches(h(*later_request)) is matches


# Stored headers (3.1)
def test_hop_by_hop_connection_named_and_qualified_private_fields_are_not_stored() -> None:
    headers = h(
        ("connection", "x-trace"),
        ("x-trace", "1"),
        ("keep-alive", "timeout=5"),
        ("cache-control", 'private="set-cookie", max-age=60'),
        ("set-cookie", "sid=1"),
        ("content-type", "text/plain"),
    )
    kept = {name for name, _ in stored_headers(headers)}
    assert kept == {b"cache-control", b"content-type"}


# Validation (4.3)
def test_a_304_updates_stored_headers_and_restarts_the_age() -> None:
    entry = stored(("cache-control", "max-age=60"), ("etag", '"v1"'), ("x-version", "1"), ("content-length", "4"))
    renewed = freshened(
        entry,
        h(("date", date(100)), ("cache-control", "max-age=120"), ("x-version", "2"), ("content-length", "0")),
        NOW + 100,
        NOW + 100,
    )
    headers = dict(renewed.headers)
    assert headers[b"x-version"] == b"2" and headers[b"content-length"] == b"4" and headers[b"etag"] == b'"v1"'
    assert renewed.lifetime == 120 and judge(renewed, [], NOW + 150).fresh


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([("if-none-match", '"v1"')], True),
        ([("if-none-match", 'W/"v1"')], True),  # weak comparison
        ([("if-none-match", '"v2", "v1"')], True),
        ([("if-none-match", "*")], True),
        ([("if-none-match", '"v2"')], False),
        ([("if-modified-since", date(-10))], True),  # not modified since (Last-Modified is Date - 100)
        ([("if-modified-since", date(-1000))], False),
        ([("if-none-match", '"v2"'), ("if-modified-since", date(-10))], False),  # If-None-Match wins
        ([("if-modified-since", "garbage")], False),
    ],
)
def test_client_conditionals_answered_from_the_cache(conditions: list[tuple[str, str | bytes]], expected: bool) -> None:
    entry = stored(("cache-control", "max-age=60"), ("etag", '"v1"'), ("last-modified", date(-100)))
    assert not_modified_for(entry, h(*conditions)) is expected


# RFC 5861
def test_stale_if_error_window() -> None:
    entry = stored(("cache-control", "max-age=60, stale-if-error=100"))
    assert stale_if_error(entry, [], NOW + 150)
    assert not stale_if_error(entry, [], NOW + 200)
    assert stale_if_error(
        stored(("cache-control", "max-age=60")), h(("cache-control", "stale-if-error=500")), NOW + 200
    )
    assert not stale_if_error(
        stored(("cache-control", "max-age=60, must-revalidate, stale-if-error=100")), [], NOW + 70
    )


def test_malformed_cache_control_never_crashes() -> None:
    for value in ["max-age=,,,", '"', 'no-cache="a, b', "=5", "max-age", ", , ,", "\x00"]:
        directives = parse_cache_control(h(("cache-control", value)))
        assert isinstance(directives.values, dict)
        assert freshness_lifetime(200, h(("date", date()), ("cache-control", value))) == 0


@pytest.mark.parametrize(
    "headers",
    [
        [("vary", ",,, ,")],
        [("vary", "Accept-Encoding,,")],
        [("age", "-5")],
        [("age", "99999999999999999999")],
        [("expires", "Thu, 01 Jan 1970 00:00:00 GMT")],
        [("date", "yesterday")],
        [("cache-control", "max-age=60"), ("cache-control", "max-age=5")],  # first occurrence wins
    ],
)
def test_malformed_upstream_headers_are_read_safely(headers: list[tuple[str, str]]) -> None:
    entry = stored(*headers)
    assert entry.current_age(NOW + 1) >= 0
    assert entry.matches([]) is True  # nothing it could vary on is in the request it was stored for, nor in this one
    lifetime = freshness_lifetime(200, entry.headers)
    assert lifetime in (0, 60) and judge(entry, [], NOW + 1).fresh is (lifetime == 60)
