"""Cost of choosing an upstream instance, per policy, with 3 and 100 instances.

python -m bench.balancers
"""

from __future__ import annotations

import timeit

from gateway.upstream.pool import Upstream, UpstreamPool
from gateway.upstream.selection import BALANCERS
from settings import OutlierSettings, UpstreamSettings


def main() -> None:
    print(f"{'policy':<16}{'3 instances µs':>16}{'100 instances µs':>18}")
    for name in BALANCERS.aliases():
        cells = []
        for count in (3, 100):
            pool = UpstreamPool(
                [Upstream(UpstreamSettings(url=f"http://10.0.{n // 250}.{n % 250}:80")) for n in range(count)],
                BALANCERS.make(name),
                OutlierSettings(),
            )
            number = 20_000 if count == 3 else 2_000
            seconds = timeit.timeit(lambda pool=pool: pool.choose("client-42"), number=number)
            cells.append(seconds / number * 1e6)
        print(f"{name:<16}{cells[0]:>16.2f}{cells[1]:>18.2f}")


if __name__ == "__main__":
    main()
