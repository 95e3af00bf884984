"""IP filter lookup cost against list size: prints µs per decision and memory for 10 to 10,000 networks.

python -m bench.ipfilter
"""

from __future__ import annotations

import random
import timeit
import tracemalloc
from collections.abc import Callable
from ipaddress import ip_address, ip_network

from gateway.stages.netset import NetworkSet


def networks(count: int, rng: random.Random) -> list[object]:
    lengths = [8, 12, 16, 20, 24, 28, 32]
    return [
        ip_network(
            f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0/{rng.choice(lengths)}", strict=False
        )
        for _ in range(count)
    ]


def _seconds_per_call(run: Callable[[list[str]], object], addresses: list[str]) -> float:
    return timeit.timeit(lambda: run(addresses), number=3) / (3 * len(addresses))


def main() -> None:
    rng = random.Random(1)
    probes = [
        f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(1000)
    ]
    print(f"{'networks':>9} {'µs/lookup':>10} {'linear scan µs':>15} {'table KiB':>10}")
    for count in (10, 100, 1_000, 10_000):
        listed = networks(count, rng)
        tracemalloc.start()
        table = NetworkSet(listed)  # type: ignore[arg-type]
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        per_lookup = _seconds_per_call(lambda addresses, t=table: [t.contains(a) for a in addresses], probes)
        linear = _seconds_per_call(
            lambda addresses, n=listed: [any(ip_address(a) in x for x in n) for a in addresses], probes[:50]
        )
        print(f"{count:>9} {per_lookup * 1e6:>10.2f} {linear * 1e6:>15.1f} {size / 1024:>10.0f}")


if __name__ == "__main__":
    main()
