from __future__ import annotations

import random
from ipaddress import ip_address, ip_network

import pytest

from gateway.stages.netset import NetworkSet

NETWORKS = NetworkSet(
    ip_network(text) for text in ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32", "::1/128", "100.64.0.0/10"]
)


@pytest.mark.parametrize(
    ("address", "inside"),
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("192.168.1.7", True),
        ("192.168.1.8", False),
        ("100.127.255.255", True),
        ("100.128.0.0", False),
        ("2001:db8:1::5", True),
        ("2001:db9::1", False),
        ("::1", True),
        ("::ffff:10.9.9.9", True),  # IPv4-mapped IPv6 is the IPv4 address
        ("fe80::1%eth0", False),
        ("not-an-ip", False),
        ("", False),
    ],
)
def test_membership(address: str, inside: bool) -> None:
    assert NETWORKS.contains(address) is inside


def test_ten_thousand_networks_agree_with_ipaddress() -> None:
    rng = random.Random(7)
    networks = [
        ip_network(
            f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0/{rng.choice([16, 20, 24, 28, 32])}",
            strict=False,
        )
        for _ in range(10_000)
    ]
    table = NetworkSet(networks)
    # Half the probes inside a listed network, half random.
    probes = [str(networks[rng.randrange(len(networks))].network_address + 1) for _ in range(100)]
    probes += [
        f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(100)
    ]
    for address in probes:
        expected = any(ip_address(address) in network for network in networks)
        assert table.contains(address) is expected


def test_zero_length_prefix_matches_everything_of_its_family() -> None:
    everything = NetworkSet([ip_network("0.0.0.0/0")])
    assert everything.contains("203.0.113.1") and not everything.contains("2001:db8::1")
