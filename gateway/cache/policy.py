"""RFC 9111 rules for a shared cache, as pure functions over headers and an injected clock.

Nothing here does I/O: the middleware asks these functions whether a response may be stored, how fresh a
stored one is, and whether it may answer a request. Malformed values are read as the RFC says: an invalid
max-age or Expires makes a response stale, never fresh; unknown directives are ignored.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.cache.dates import http_date
from gateway.proxy.headers import Header

# RFC 9110 15.1: statuses cacheable by default (heuristic freshness allowed).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# Statuses whose semantics this cache implements (RFC 9111 3, 5.2.2.3: what `must-understand` asks for).
UNDERSTOOD_STATUSES = frozenset({200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501})
# RFC 9111 3.1: never stored, and those named by Connection too.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding", b"upgrade", b"trailer"}
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Cookies the upstream set. RFC 9111 3.1 has a cache store them like any field (a public response that sets a
# cookie sets it for everyone); a route may strip them instead (`set_cookie = "strip"`).
COOKIE_FIELDS = frozenset({b"set-cookie", b"set-cookie2"})


def header_values(headers: Iterable[Header], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


@dataclass(frozen=True)
class Directives:
    """Cache-Control directives: name -> argument ("" when none). Later duplicates do not override earlier ones."""

    values: dict[str, str] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.values

    def seconds(self, name: str) -> int | None:
        """A delta-seconds argument; -1 when present but invalid (callers treat that as "stale")."""
        if name not in self.values:
            return None
        argument = self.values[name]
        if not argument.isdigit():
            return -1
        return min(int(argument), 2**31)  # RFC 9111 1.2.2: cap, never overflow


def parse_cache_control(headers: Iterable[Header]) -> Directives:
    values: dict[str, str] = {}
    for line in header_values(headers, b"cache-control"):
        for item in _split(line.decode("latin-1")):
            name, equals, argument = item.partition("=")
            if equals and name != name.rstrip():
                argument = ""  # `max-age =60` is not the grammar: its value counts as invalid (so: stale)
            name = name.strip().lower()
            argument = argument.strip()
            if len(argument) >= 2 and argument[0] == argument[-1] == '"':
                argument = argument[1:-1]
            if name:
                values.setdefault(name, argument)
    return Directives(values)


def _split(text: str) -> list[str]:
    """Comma-separated items, keeping commas inside quoted strings (`no-cache="a, b"`)."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def first(headers: Iterable[Header], name: bytes) -> bytes | None:
    values = header_values(headers, name)
    return values[0] if values else None


def storable(
    method: str,
    status: int,
    request_headers: Sequence[Header],
    response_headers: Sequence[Header],
    *,
    store_without_freshness: bool = False,
) -> bool:
    """RFC 9111 3: may a shared cache store this response?"""
    if method not in ("GET", "HEAD") or status < 200 or status in (206, 304):
        return False  # final statuses only; partial content and 304s are not stored as responses
    request = parse_cache_control(request_headers)
    response = parse_cache_control(response_headers)
    if response.has("must-understand") and status not in UNDERSTOOD_STATUSES:
        return False
    # 5.2.2.3: must-understand with an understood status overrides no-store (it is there for older caches).
    if request.has("no-store") or (response.has("no-store") and not response.has("must-understand")):
        return False
    if response.has("private") and not response.values["private"]:
        return False  # private with field names: those fields are dropped when storing (see stored_headers)
    if header_values(response_headers, b"vary") and any(
        value.strip() == b"*" for line in header_values(response_headers, b"vary") for value in line.split(b",")
    ):
        return False  # Vary: * never matches a later request
    if first(request_headers, b"authorization") is not None and not (
        response.has("public") or response.has("s-maxage") or response.has("must-revalidate")
    ):
        return False  # 3.5
    explicit = (
        response.has("public")
        or response.has("s-maxage")
        or response.has("max-age")
        or first(response_headers, b"expires") is not None
    )
    if explicit:
        return True
    has_validator = any(first(response_headers, name) is not None for name in (b"etag", b"last-modified"))
    if status in HEURISTIC_STATUSES and has_validator:
        return True  # fresh by heuristic (Last-Modified), or stale at once and revalidated with its ETag on use
    return store_without_freshness and (has_validator or status in HEURISTIC_STATUSES)


def stored_headers(headers: Sequence[Header], *, strip_cookies: bool = False) -> list[Header]:
    """Headers kept with a stored response: no hop-by-hop ones, none named by Connection, none named by
    `private="..."` or `no-cache="..."` (those may not be sent to other clients without revalidation), and
    no cookies when `strip_cookies`."""
    named: set[bytes] = set()
    for line in header_values(headers, b"connection"):
        named.update(token.strip().lower() for token in line.split(b","))
    directives = parse_cache_control(headers)
    for qualified in ("private", "no-cache"):
        if directives.values.get(qualified):
            named.update(token.strip().lower().encode() for token in directives.values[qualified].split(","))
    if strip_cookies:
        named |= COOKIE_FIELDS
    return [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP and name.lower() not in named]


def freshness_lifetime(
    status: int, headers: Sequence[Header], *, heuristic: bool = True, fraction: float = 0.1, cap: float = 86400.0
) -> float:
    """RFC 9111 4.2.1 for a shared cache: s-maxage, max-age, Expires - Date, or a heuristic; 0 when stale."""
    directives = parse_cache_control(headers)
    for name in ("s-maxage", "max-age"):
        seconds = directives.seconds(name)
        if seconds is not None:
            return max(seconds, 0) if seconds >= 0 else 0.0
    expires_values = header_values(headers, b"expires")
    if expires_values:
        expires = http_date(expires_values[0])
        if expires is None or len(expires_values) > 1:
            return 0.0  # an invalid (or ambiguous) Expires means already expired
        date = http_date(first(headers, b"date"))
        return max(0.0, expires - date) if date is not None else 0.0
    last_modified = http_date(first(headers, b"last-modified"))
    # RFC 9111 5.2.2.9: `public` makes any status heuristically cacheable.
    heuristically_cacheable = status in HEURISTIC_STATUSES or directives.has("public")
    if heuristic and heuristically_cacheable and last_modified is not None and not directives.has("no-cache"):
        date = http_date(first(headers, b"date"))
        if date is not None and date > last_modified:
            return min((date - last_modified) * fraction, cap)
    return 0.0


@dataclass(slots=True)
class Stored:
    """A stored response with what its age is computed from (RFC 9111 4.2.3). What a hit needs (initial
    age, directives, size) is worked out once, when it is stored, not on every hit."""

    status: int
    headers: list[Header]
    body: bytes
    request_time: float
    response_time: float
    lifetime: float
    vary: list[tuple[bytes, bytes | None]]  # (request header, its value then) for each field Vary names
    initial_age: float = field(init=False)
    response_directives: Directives = field(init=False)
    always_revalidate: bool = field(init=False)  # `no-cache` without field names
    size: int = field(init=False)
    # What an answer from the cache sends as stored: the fields but those it works out afresh, Date, length.
    answer_headers: list[Header] = field(init=False)
    date: bytes | None = field(init=False)
    length: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.date = first(self.headers, b"date")
        date = http_date(self.date)
        apparent_age = max(0.0, self.response_time - date) if date is not None else 0.0
        response_delay = self.response_time - self.request_time
        self.initial_age = max(apparent_age, _age_header(self.headers) + response_delay)
        self.response_directives = parse_cache_control(self.headers)
        self.always_revalidate = self.response_directives.values.get("no-cache") == ""
        self.size = len(self.body) + sum(len(name) + len(value) for name, value in self.headers) + 200
        self.answer_headers = [(name, value) for name, value in self.headers if name.lower() not in _ANSWERED_AFRESH]
        self.length = b"%d" % len(self.body)

    def current_age(self, now: float) -> float:
        return self.initial_age + (now - self.response_time)

    def directives(self) -> Directives:
        return self.response_directives

    def matches(self, request_headers: Sequence[Header]) -> bool:
        """RFC 9111 4.1: every field named by Vary has the same (normalised) value as when stored."""
        return all(_vary_value(request_headers, name) == value for name, value in self.vary)


_ANSWERED_AFRESH = frozenset({b"age", b"date", b"content-length"})


def _age_header(headers: Sequence[Header]) -> float:
    """RFC 9111 5.1: the first member of a list-based Age counts; an invalid value is ignored."""
    value = first(headers, b"age")
    if value is None:
        return 0.0
    text = value.split(b",", 1)[0].strip()
    return float(min(int(text), 2**31)) if text.isdigit() else 0.0


# Request fields whose values are case-insensitive tokens (RFC 9110 8.4.1, 8.5.1), compared lowercased.
_CASELESS_FIELDS = frozenset({b"accept-encoding", b"accept-language", b"accept-charset"})


def _vary_value(headers: Sequence[Header], name: bytes) -> bytes | None:
    """A selecting field's value, normalised as RFC 9110 5.3 allows: field lines combined, list members
    trimmed, runs of whitespace made one. Case is kept (values may be case-sensitive) but for token fields."""
    values = header_values(headers, name)
    if not values:
        return None
    return _normalised(values[0] if len(values) == 1 else b",".join(values), name in _CASELESS_FIELDS)


@functools.lru_cache(maxsize=4096)
def _normalised(value: bytes, caseless: bool) -> bytes:
    """Clients send the same few values again and again: each is worked out once."""
    combined = b",".join(b" ".join(member.split()) for member in value.split(b","))
    return combined.lower() if caseless else combined


def vary_snapshot(
    request_headers: Sequence[Header], response_headers: Sequence[Header]
) -> list[tuple[bytes, bytes | None]]:
    names = [
        token.strip().lower()
        for line in header_values(response_headers, b"vary")
        for token in line.split(b",")
        if token.strip()
    ]
    return [(name, _vary_value(request_headers, name)) for name in names]


@dataclass(frozen=True)
class Verdict:
    """What a stored response may do for a request."""

    fresh: bool  # usable as is
    stale_allowed: bool  # stale, but the request's max-stale allows serving it
    must_revalidate: bool  # stale (or no-cache) and must not be served without validation


FRESH = Verdict(True, False, False)
STALE_ALLOWED = Verdict(False, True, False)
MUST_REVALIDATE = Verdict(False, False, True)
_REQUEST_CONTROLS = frozenset({b"cache-control", b"pragma"})


def judge(stored: Stored, request_headers: Sequence[Header], now: float) -> Verdict:
    """RFC 9111 4.2 and 5.2: is `stored` fresh enough for this request?"""
    if stored.always_revalidate:
        return MUST_REVALIDATE
    age = stored.current_age(now)
    lifetime = stored.lifetime
    if not any(name.lower() in _REQUEST_CONTROLS for name, _ in request_headers):
        return FRESH if lifetime > age else MUST_REVALIDATE  # most requests say nothing about caching
    request = parse_cache_control(request_headers)
    response = stored.directives()
    pragma = first(request_headers, b"pragma") or b""
    if request.has("no-cache") or (not request.values and b"no-cache" in pragma.lower()):  # 5.4: Pragma, legacy
        return MUST_REVALIDATE
    max_age = request.seconds("max-age")
    if max_age is not None and (max_age < 0 or age > max_age):
        return MUST_REVALIDATE
    min_fresh = request.seconds("min-fresh")
    needed = age + (min_fresh if min_fresh and min_fresh > 0 else 0)
    if lifetime > needed:
        return FRESH
    no_stale = response.has("must-revalidate") or response.has("proxy-revalidate") or response.has("s-maxage")
    if not no_stale and request.has("max-stale"):
        limit = request.seconds("max-stale")
        staleness = age - lifetime
        if request.values["max-stale"] == "" or (limit is not None and limit >= 0 and staleness <= limit):
            return STALE_ALLOWED
    return MUST_REVALIDATE


def stale_if_error(
    stored: Stored, request_headers: Sequence[Header], now: float, unreachable_window: float = 0.0
) -> bool:
    """May this stale response answer when the upstream errs? Within a `stale-if-error` window (RFC 5861 4),
    or, when the upstream could not be reached at all, within `unreachable_window` seconds of going stale
    (RFC 9111 4.2.4 allows a disconnected cache to serve stale). Never when the response forbids it."""
    response = stored.directives()
    if not _may_go_stale(response):
        return False
    staleness = stored.current_age(now) - stored.lifetime
    if staleness <= unreachable_window:
        return True
    for directives in (parse_cache_control(request_headers), response):
        window = directives.seconds("stale-if-error")
        if window is not None and window >= 0 and staleness <= window:
            return True
    return False


def stale_while_revalidate(stored: Stored, now: float) -> bool:
    """RFC 5861 3: may this stale response answer at once while it is revalidated in the background?"""
    response = stored.directives()
    if not _may_go_stale(response):
        return False
    window = response.seconds("stale-while-revalidate")
    staleness = stored.current_age(now) - stored.lifetime
    return window is not None and window >= 0 and 0 < staleness <= window


def _may_go_stale(response: Directives) -> bool:
    """RFC 9111 4.2.4: these directives forbid serving the response stale, whatever else allows it."""
    return not (
        response.has("must-revalidate")
        or response.has("proxy-revalidate")
        or response.has("s-maxage")
        or (response.has("no-cache") and not response.values["no-cache"])
    )


def age_header(stored: Stored, now: float) -> bytes:
    return b"%d" % min(math.floor(stored.current_age(now)), 2**31)


def freshened(
    stored: Stored,
    not_modified: Sequence[Header],
    request_time: float,
    response_time: float,
    *,
    strip_cookies: bool = False,
) -> Stored:
    """RFC 9111 4.3.4: a 304 updates the stored headers (except framing ones) and restarts its age."""
    replaced = {name.lower() for name, _ in not_modified} - {
        b"content-length",
        b"content-encoding",
        b"transfer-encoding",
    }
    headers = [(name, value) for name, value in stored.headers if name.lower() not in replaced]
    kept = stored_headers(not_modified, strip_cookies=strip_cookies)
    headers += [(name, value) for name, value in kept if name.lower() in replaced]
    return Stored(
        stored.status,
        headers,
        stored.body,
        request_time,
        response_time,
        freshness_lifetime(stored.status, headers),
        stored.vary,
    )


def not_modified_for(stored: Stored, request_headers: Sequence[Header]) -> bool:
    """RFC 9110 13.1.2/13.1.3 for a client's conditional GET/HEAD answered from the cache."""
    etag = first(stored.headers, b"etag")
    if_none_match = header_values(request_headers, b"if-none-match")
    if if_none_match:
        if etag is None:
            return False
        tags = [tag.strip() for line in if_none_match for tag in line.split(b",")]
        return b"*" in tags or _weak(etag) in {_weak(tag) for tag in tags}
    since = http_date(first(request_headers, b"if-modified-since"))
    modified = http_date(first(stored.headers, b"last-modified")) or http_date(first(stored.headers, b"date"))
    return since is not None and modified is not None and modified <= since


def _weak(tag: bytes) -> bytes:
    return tag.removeprefix(b"W/")
