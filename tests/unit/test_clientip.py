from __future__ import annotations

from ipaddress import ip_network

import pytest

from gateway.stages.clientip_resolver import ClientIPResolver

RESOLVER = ClientIPResolver([ip_network("10.0.0.0/8"), ip_network("::1/128")])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.9", [b"1.2.3.4"], "203.0.113.9"),  # untrusted peer: its header is ignored
        ("10.0.0.2", [b"1.2.3.4"], "1.2.3.4"),
        ("10.0.0.2", [b"6.6.6.6, 1.2.3.4"], "1.2.3.4"),  # the left part is the client's own claim
        ("10.0.0.2", [b"1.2.3.4, 10.0.0.7"], "1.2.3.4"),  # trusted hops are skipped
        ("10.0.0.2", [b"6.6.6.6", b"1.2.3.4, 10.1.1.1"], "1.2.3.4"),  # repeated header lines join
        ("10.0.0.2", [b"garbage, 1.2.3.4"], "1.2.3.4"),
        ("10.0.0.2", [b"1.2.3.4, garbage"], "10.0.0.2"),  # a malformed hop stops the walk
        ("10.0.0.2", [], "10.0.0.2"),
        ("::1", [b"2001:db8::1"], "2001:db8::1"),
    ],
)
def test_client_ip_walks_forwarded_for_from_the_right(peer: str, forwarded_for: list[bytes], client: str) -> None:
    assert RESOLVER.resolve(peer, forwarded_for) == client


def test_nothing_is_trusted_by_default() -> None:
    resolver = ClientIPResolver([])
    assert not resolver.is_trusted("127.0.0.1")
    assert resolver.resolve("127.0.0.1", [b"1.2.3.4"]) == "127.0.0.1"
