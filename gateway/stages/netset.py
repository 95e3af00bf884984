"""Fast membership of an address in many networks: one set lookup per distinct prefix length."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

Network = IPv4Network | IPv6Network


class NetworkSet:
    """Networks indexed by prefix length: a lookup costs one shift and one set probe per distinct length
    (at most 33 for IPv4, 129 for IPv6), however many networks there are. Parsed once at start-up."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self._tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for network in networks:
            bits = network.max_prefixlen
            key = int(network.network_address) >> (bits - network.prefixlen)
            self._tables[network.version].setdefault(network.prefixlen, set()).add(key)
        self._lengths = {version: sorted(table) for version, table in self._tables.items()}

    def __bool__(self) -> bool:
        return any(self._lengths.values())

    def contains(self, address: str) -> bool:
        """Whether `address` lies in any network; an unparsable address is in none."""
        try:
            parsed: IPv4Address | IPv6Address = ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        value = int(parsed)
        bits = parsed.max_prefixlen
        table = self._tables[parsed.version]
        return any(value >> (bits - length) in table[length] for length in self._lengths[parsed.version])
