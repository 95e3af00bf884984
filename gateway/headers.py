"""Pure header rules for both directions of the relay (RFC 9110 section 7.6.1 for hop-by-hop fields)."""

from __future__ import annotations

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
_RESPONSE_DROPPED_WITH_LENGTH = _RESPONSE_DROPPED | {b"content-length"}


def connection_named(headers: Iterable[Header]) -> frozenset[bytes]:
    """Field names listed in Connection headers, which are hop-by-hop too."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return frozenset(named)


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
    the client's values go).
    """
    headers = list(headers)
    dropped = _REQUEST_DROPPED[(host is not None, forwarded.trusted)]
    named = connection_named(headers)
    if named:
        dropped = dropped | named
    result: list[Header] = [] if host is None else [(b"host", host)]
    prior_for: list[bytes] = []
    seen: set[bytes] = set()
    host = b""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"host":
            host = value
        if lowered in dropped:
            continue
        if lowered == b"x-forwarded-for":
            prior_for.append(value)
            continue
        if lowered == b"content-length":
            value = b"%d" % int(value)  # "003" -> "3": the server checked it is digits; upstreams may not agree
        seen.add(lowered)
        result.append((name, value))
    chain = b", ".join([*prior_for, forwarded.peer.encode("latin-1")])
    result.append((b"x-forwarded-for", chain))
    if b"x-forwarded-proto" not in seen:
        result.append((b"x-forwarded-proto", forwarded.scheme.encode("latin-1")))
    if b"x-forwarded-host" not in seen and host:
        result.append((b"x-forwarded-host", host))
    if forwarded.prefix and b"x-forwarded-prefix" not in seen:
        result.append((b"x-forwarded-prefix", forwarded.prefix))
    result.append((b"x-request-id", forwarded.request_id))
    return result


def client_response_headers(headers: Iterable[Header], status: int) -> list[Header]:
    """The upstream's response headers as the client should see them, repeated fields kept apart.

    Content-Length goes when the upstream framed the body with Transfer-Encoding (RFC 9112 6.3: the
    length is then meaningless) and on statuses that carry no body.
    """
    headers = list(headers)
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in headers)
    dropped = _RESPONSE_DROPPED_WITH_LENGTH if chunked or status in BODYLESS_STATUSES else _RESPONSE_DROPPED
    named = connection_named(headers)
    if named:
        dropped = dropped | named
    return [(name.lower(), value) for name, value in headers if name.lower() not in dropped]
