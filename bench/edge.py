"""What the edge costs: `[limits]` enforcement and TLS termination, against the same gateway without them.

    python -m bench.edge [--duration 5]

One run, one nginx origin, the gateway pinned to CPU 0 (wrk and origin on CPU 1), access log off so that the
difference is the edge alone. Configurations:

- `edge`: `uvicorn gateway.main:app --http gateway.server:EdgeProtocol`: the default `[limits]` enforced
- `no-limits`: the same with `--http httptools`, uvicorn's own protocol (no limits, no Host or framing checks)
- `python-m`: `python -m gateway` on plain HTTP (the Procfile's way): the same edge protocol and limits
- `tls`: `python -m gateway` with `[tls]` (a trustme certificate, ECDSA P-256, TLS 1.3), limits enforced

Scenarios: small GET on 16 keep-alive connections; small GET with a new connection per request (TCP, plus the
TLS handshake for `tls`: the handshake rate); 1 MiB GET on 16 connections (TLS throughput). Prints req/s,
p99, CPU per request and the ratio to `edge` in the same run; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import trustme

from bench.run import Scenario, free_port, measure, origin, pinned, running

SCENARIOS = [
    Scenario("small-c16", "/", 16),
    Scenario("new-conn-c16", "/", 16, new_connections=True),
    Scenario("get-1mib-c16", "/1m.bin", 16),
]


def commands(port: int, workdir: Path) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (command, extra environment, base URL)."""
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(workdir / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))
    main = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    uvicorn = [sys.executable, "-m", "uvicorn", "gateway.main:app", "--port", str(port), "--log-level", "warning"]
    uvicorn += ["--no-proxy-headers", "--no-access-log", "--limit-concurrency", "10000"]
    tls = {
        "GATEWAY_TLS__CERTFILE": str(workdir / "cert.pem"),
        "GATEWAY_TLS__KEYFILE": str(workdir / "key.pem"),
        "GATEWAY_TLS__MIN_VERSION": "1.3",
    }
    plain = f"http://127.0.0.1:{port}"
    return {
        "edge": ([*uvicorn, "--http", "gateway.server:EdgeProtocol"], {}, plain),
        "no-limits": ([*uvicorn, "--http", "httptools"], {}, plain),
        "python-m": (main, {}, plain),
        "tls": (main, tls, f"https://127.0.0.1:{port}"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per cell (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the median is shown (default 1)")
    args = parser.parse_args()
    rounds: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-edge-bench-") as temp, origin(Path(temp)) as origin_url:
        routes = json.dumps([{"prefix": "/", "upstreams": [origin_url], "max_body_bytes": None}])
        base_env = {
            **os.environ,
            "GATEWAY_ROUTES": routes,
            "GATEWAY_ACCESS_LOG__ENABLED": "false",
            "GATEWAY_SERVER__LOG_LEVEL": "warning",
        }
        port = free_port()
        configurations = commands(port, Path(temp))
        names = list(configurations)
        for round_number in range(args.rounds):
            # Each round starts with a different configuration: the first of a round measured slower here.
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                command, env, url = configurations[name]
                proxy_cpu = os.environ.get("PROXY_CPU", "0")
                with running(pinned(proxy_cpu, command), url + "/_gateway/health", {**base_env, **env}) as gateway:
                    for scenario in SCENARIOS:
                        result = measure(url, scenario, args.duration, gateway.pid)
                        rounds.setdefault((name, scenario.name), []).append(result)
    results = {key: sorted(cells, key=lambda cell: cell["rps"])[len(cells) // 2] for key, cells in rounds.items()}
    when = time.strftime("%Y-%m-%d %H:%M")
    print(f"# {when}  {os.cpu_count()} CPUs  {args.duration}s/cell  median of {args.rounds}  access log off")
    print(f"{'scenario':<15}{'gateway':<11}{'req/s':>9}{'MB/s':>9}{'p99 ms':>9}{'errors':>8}{'x edge':>8}{'µs/req':>8}")
    for scenario in SCENARIOS:
        reference = results[("edge", scenario.name)]["rps"]
        for name in ("edge", "no-limits", "python-m", "tls"):
            result = results[(name, scenario.name)]
            errors = int(result["errors"] + result["non2xx"])
            rate = result["bytes"] / result["seconds"] / 1e6
            print(
                f"{scenario.name:<15}{name:<11}{result['rps']:>9.0f}{rate:>9.1f}{result['p99_ms']:>9.2f}{errors:>8}"
                f"{result['rps'] / reference:>8.3f}{result['cpu_per_10k'] * 100:>8.0f}"
            )


if __name__ == "__main__":
    main()
