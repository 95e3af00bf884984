"""Hot reload under load: how long a reload takes and whether any request fails meanwhile.

    python -m bench.reload [--duration 10] [--reloads 10] [--routes 50]

Runs an nginx origin and `python -m gateway` (one worker, pinned to CPU 0) with a config file of `--routes`
routes, puts wrk load (16 connections, small GET) on it for `--duration` seconds twice: once quietly, once
while `--reloads` reloads alternate between two configurations (`POST /_gateway/reload`). Prints req/s and
errors of both runs, and each reload's time as seen by the caller. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.run import Scenario, free_port, load, origin, pinned, running


def config(origin_url: str, routes: int, variant: int) -> str:
    """`routes` routes; the variant changes every other route's retries, so that a reload has work to do."""
    lines = [f'[[routes]]\nprefix = "/"\nupstreams = ["{origin_url}"]\n']
    for index in range(routes - 1):
        attempts = 2 + (variant if index % 2 else 0)
        lines.append(
            f'[[routes]]\nprefix = "/service-{index}"\nupstreams = ["{origin_url}"]\n'
            f"[routes.balancing.retries]\nattempts = {attempts}\n"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--routes", type=int, default=50)
    args = parser.parse_args()
    scenario = Scenario("small-c16", "/", 16)
    with tempfile.TemporaryDirectory(prefix="gateway-reload-bench-") as temp, origin(Path(temp)) as origin_url:
        path = Path(temp) / "gateway.toml"
        path.write_text(config(origin_url, args.routes, 0))
        port = free_port()
        env = {**os.environ, "GATEWAY_CONFIG": str(path), "GATEWAY_ACCESS_LOG__ENABLED": "false"}
        env["GATEWAY_SERVER__LOG_LEVEL"] = "error"
        command = pinned(
            os.environ.get("PROXY_CPU", "0"), [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
        )
        url = f"http://127.0.0.1:{port}"
        with running(command, url + "/_gateway/health", env):
            load(url, scenario, 1)  # warm-up
            quiet = load(url, scenario, args.duration)
            timings: list[float] = []
            statuses: list[int] = []
            reloader = threading.Thread(
                target=_reload_repeatedly,
                args=(url, path, origin_url, args, timings, statuses),
                daemon=True,
            )
            reloader.start()
            busy = load(url, scenario, args.duration)
            reloader.join(args.duration + 30)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {args.routes} routes, {args.reloads} reloads in {args.duration} s")
    for name, result in (("no reloads", quiet), ("reloading", busy)):
        errors = int(result["errors"] + result["non2xx"])
        rate = result["requests"] / result["seconds"]
        print(f"{name:<12}{rate:>9.0f} req/s   p99 {result['p99_ms']:7.2f} ms   errors {errors}")
    if timings:
        print(
            f"reload time  median {statistics.median(timings):.1f} ms, max {max(timings):.1f} ms; "
            f"answers {sorted(set(statuses))}"
        )


def _reload_repeatedly(
    url: str, path: Path, origin_url: str, args: argparse.Namespace, timings: list[float], statuses: list[int]
) -> None:
    time.sleep(1)
    gap = max(args.duration - 2, 1) / args.reloads
    with httpx.Client(base_url=url, timeout=30) as client:
        for number in range(args.reloads):
            path.write_text(config(origin_url, args.routes, 1 + number % 2))
            started = time.perf_counter()
            statuses.append(client.post("/_gateway/reload").status_code)
            timings.append((time.perf_counter() - started) * 1000)
            time.sleep(gap)


if __name__ == "__main__":
    main()
