"""Pure header rules for both directions of the relay (RFC 9110 section 7.6.1 for hop-by-hop fields)."""

from __future__ import annotations

import functools
from collections.abc import Iterable

Header = tuple[bytes, bytes]

# Fields that describe one connection, not the message (RFC 9110 7.6.1), plus the proxy-auth pair,
# which is addressed to the gateway itself. Never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)

# Client-supplied statements about the path a request took; believed only from trusted proxies.
FORWARDING = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-proto",
        b"x-real-ip",
    }
)

# Request fields the gateway sets itself: Host is the upstream's (unless preserve_host), the gateway
# answers `Expect: 100-continue` on its side, and the request id is the one the gateway settled on.
_REQUEST_OWNED = frozenset({b"expect", b"x-request-id"})

# The gateway's server writes its own Date and Server, as nginx does; relaying the upstream's too would
# send each twice.
_RESPONSE_OWNED = frozenset({b"date", b"server"})

# Statuses whose responses never have a body (RFC 9110 6.4.1); a Content-Length on them would make the
# server wait for bytes that never come.
BODYLESS_STATUSES = frozenset({204, 304})


# The fixed parts of what is dropped, built once: (Host replaced, peer trusted) -> fields.
_REQUEST_DROPPED = {
    (host_replaced, trusted): HOP_BY_HOP
    | _REQUEST_OWNED
    | ({b"host"} if host_replaced else frozenset())
    | (frozenset() if trusted else FORWARDING)
    for host_replaced in (False, True)
    for trusted in (False, True)
}
_RESPONSE_DROPPED = HOP_BY_HOP | _RESPONSE_OWNED
_CONTENT_LENGTH = frozenset({b"content-length"})
# Request fields the single pass looks at besides dropping them.
_REQUEST_SPECIAL = frozenset({b"host", b"connection", b"x-forwarded-for", b"content-length"})
_NOTHING: frozenset[bytes] = frozenset()


def connection_named(headers: Iterable[Header]) -> frozenset[bytes]:
    """Field names listed in Connection headers, which are hop-by-hop too."""
    named: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name.lower() == b"connection":
            named |= _tokens(value)
    return named


class ForwardedFor:
    """What the gateway tells the upstream about the client."""

    __slots__ = ("peer", "prefix", "request_id", "scheme", "trusted")

    def __init__(self, *, peer: str, scheme: str, prefix: bytes, trusted: bool, request_id: bytes) -> None:
        self.peer = peer
        self.scheme = scheme
        self.prefix = prefix
        self.trusted = trusted
        self.request_id = request_id


def upstream_request_headers(headers: Iterable[Header], forwarded: ForwardedFor, *, host: bytes | None) -> list[Header]:
    """The client's headers as the upstream should see them.

    Drops hop-by-hop fields and those named in Connection, puts `host` first in place of the client's Host
    (None keeps the client's), and appends to X-Forwarded-* only when the peer is a trusted proxy (otherwise
    the client's values go). One pass over the headers (this runs for every request); fields named in
    Connection, which are rare, are taken out afterwards.
    """
    dropped = _REQUEST_DROPPED[(host is not None, forwarded.trusted)]
    result: list[Header] = [] if host is None else [(b"host", host)]
    prior_for: list[bytes] = []
    named: frozenset[bytes] = frozenset()
    client_host = b""
    for name, value in headers:
        lowered = name.lower()
        if lowered in _REQUEST_SPECIAL:
            if lowered == b"host":
                client_host = value
            elif lowered == b"connection":
                named |= _tokens(value)
            elif lowered == b"x-forwarded-for" and forwarded.trusted:
                prior_for.append(value)
                continue
            elif lowered == b"content-length":
                value = b"%d" % int(value)  # "003" -> "3": the server checked it is digits; upstreams may not agree
        if lowered not in dropped:
            result.append((lowered, value))
    named -= dropped  # ("keep-alive" is hop-by-hop anyway)
    if named:
        result = [(name, value) for name, value in result if name not in named or name == b"host"]
    seen = {name for name, _ in result} if forwarded.trusted else _NOTHING
    prior_for.append(forwarded.peer.encode("latin-1"))
    result.append((b"x-forwarded-for", b", ".join(prior_for)))
    if b"x-forwarded-proto" not in seen:
        result.append((b"x-forwarded-proto", forwarded.scheme.encode("latin-1")))
    if client_host and b"x-forwarded-host" not in seen:
        result.append((b"x-forwarded-host", client_host))
    if forwarded.prefix and b"x-forwarded-prefix" not in seen:
        result.append((b"x-forwarded-prefix", forwarded.prefix))
    result.append((b"x-request-id", forwarded.request_id))
    return result


def client_response_headers(headers: Iterable[Header], status: int) -> list[Header]:
    """The upstream's response headers as the client should see them, names lowercased, repeated fields
    kept apart.

    Content-Length goes when the upstream framed the body with Transfer-Encoding (RFC 9112 6.3: the
    length is then meaningless) and on statuses that carry no body. One pass, as for requests.
    """
    result: list[Header] = []
    named: frozenset[bytes] = frozenset()
    drop_length = status in BODYLESS_STATUSES
    for name, value in headers:
        lowered = name.lower()
        if lowered in _RESPONSE_DROPPED:
            if lowered == b"transfer-encoding":
                drop_length = True
            elif lowered == b"connection":
                named |= _tokens(value)
            continue
        result.append((lowered, value))
    named -= _RESPONSE_DROPPED
    if drop_length:
        named |= _CONTENT_LENGTH
    if named:
        result = [(name, value) for name, value in result if name not in named]
    return result


@functools.lru_cache(maxsize=64)  # nearly every message says "keep-alive" or "close"
def _tokens(value: bytes) -> frozenset[bytes]:
    return frozenset(token.strip().lower() for token in value.split(b","))
