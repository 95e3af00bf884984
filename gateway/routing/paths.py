"""Request-target rules: the path a route is chosen by, and the path the upstream receives.

The raw path goes upstream byte for byte; the route is chosen on a decoded view of it. A target whose
decoded and raw readings could disagree about which prefix it is under (dot-segments, encoded slashes or
backslashes, NUL, double encoding) is refused, so a lenient upstream can never read it as another path.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from starlette.types import Scope

from gateway.errors import BadRequest
from gateway.exchange import query_of, target_of

# Anything that needs the slow, segment-by-segment look; most paths match none of it.
_NEEDS_CHECK = re.compile(rb"[%\\;\x00-\x20\x7f-\xff]|//|/\.")
# After one decoding, an escape of these means the client encoded twice.
_DOUBLE_ENCODED = re.compile(rb"%(?:2e|2f|5c|00|25)", re.IGNORECASE)
# Bytes httpx would refuse in a URL; sent percent-encoded instead.
_UNSAFE_BYTE = re.compile(rb"[\x00-\x20\x7f-\xff\"<>\\^`{|}]")


class BadTarget(BadRequest):
    """The request target is malformed or could leave its route's prefix."""


def routing_path(raw_path: bytes) -> bytes:
    """The decoded path that routes are matched against (path parameters after `;` ignored).

    Raises BadTarget for targets that could escape a prefix.
    """
    if not raw_path.startswith(b"/"):
        raise BadTarget("the path must start with /")
    if not _NEEDS_CHECK.search(raw_path):
        return raw_path
    segments = []
    for raw_segment in raw_path.split(b"/"):
        segment = unquote_to_bytes(raw_segment)
        if b"/" in segment or b"\\" in segment or b"\x00" in segment:
            raise BadTarget("the path contains an encoded slash, a backslash or NUL")
        if _DOUBLE_ENCODED.search(segment):
            raise BadTarget("the path is encoded twice")
        name = segment.split(b";", 1)[0]
        if name in (b".", b".."):
            raise BadTarget("the path contains a dot-segment")
        if name:
            segments.append(name)
    return b"/" + b"/".join(segments)


def segment_count(prefix: bytes) -> int:
    return 0 if prefix == b"/" else prefix.count(b"/")


def strip_segments(raw_path: bytes, prefix: bytes) -> bytes:
    """`raw_path` without the route prefix's segments, always starting with a single `/`."""
    if raw_path.startswith(prefix) and raw_path[len(prefix) : len(prefix) + 1] in (b"", b"/"):
        rest = raw_path[len(prefix) :]
    else:
        # The prefix was spelled differently (escapes, `;params`, doubled slashes): drop as many
        # non-empty raw segments as the prefix has. routing_path() guarantees they correspond.
        pending = segment_count(prefix)
        parts = raw_path.split(b"/")
        index = 1
        while pending and index < len(parts):
            if parts[index]:
                pending -= 1
            index += 1
        rest = b"/" + b"/".join(parts[index:])
    return b"/" + rest.lstrip(b"/") if rest else b"/"


def upstream_target(scope: Scope, base_path: bytes, strip: bytes | None) -> bytes:
    """The target an upstream is sent: its base path, the client's path as sent (minus the route prefix `strip`
    when the route strips it), and the query as sent (an empty one included)."""
    raw_path = target_of(scope)
    target = base_path + (strip_segments(raw_path, strip) if strip is not None else raw_path)
    query = query_of(scope)
    return target if query is None else target + b"?" + query


def url_safe(raw_path: bytes) -> bytes:
    """Percent-encode the few bytes that may not appear literally in a URL; everything else is kept."""
    if not _UNSAFE_BYTE.search(raw_path):
        return raw_path
    return _UNSAFE_BYTE.sub(lambda match: b"%%%02X" % match.group()[0], raw_path)
