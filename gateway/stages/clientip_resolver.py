"""The one client-IP resolver: the peer, or X-Forwarded-For walked right to left across trusted proxies."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address

Network = IPv4Network | IPv6Network


class ClientIPResolver:
    """Decides who the client is. Trusts forwarding headers only from peers inside `trusted` networks."""

    def __init__(self, trusted: Sequence[Network]) -> None:
        self._trusted = tuple(trusted)

    def is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        try:
            parsed = ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self._trusted)

    def resolve(self, peer: str, forwarded_for: Iterable[bytes]) -> str:
        """The client's address: walk X-Forwarded-For from the right while hops are trusted proxies.

        The first hop that is not a trusted proxy is the client; a malformed entry stops the walk there,
        since nothing to its left can be believed.
        """
        if not self.is_trusted(peer):
            return peer
        hops = [hop.strip() for value in forwarded_for for hop in value.decode("latin-1").split(",")]
        client = peer
        for hop in reversed(hops):
            try:
                ip_address(hop)
            except ValueError:
                return client
            client = hop
            if not self.is_trusted(hop):
                return client
        return client
