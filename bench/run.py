"""Relay benchmark: the same wrk load straight at a fast origin and through the gateway, in one run.

    python -m bench.run [--duration 5] [--scenarios small-c16,small-c128,get-1mib-c16,post-64kib-c16] [--floor]

Needs wrk (and uses nginx as the origin when installed; otherwise a uvicorn origin). Everything listens on
127.0.0.1. The gateway runs pinned to CPU 0, origin and wrk to CPU 1 (when `taskset` exists), so that
"gateway CPU per request" measures the gateway alone. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    connections: int
    body_bytes: int = 0
    new_connections: bool = False  # "Connection: close" on every request: one connection (handshake) each


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario("small-c16", "/", 16),
        Scenario("small-c128", "/", 128),
        Scenario("get-1mib-c16", "/1m.bin", 16),
        Scenario("post-64kib-c16", "/post", 16, 64 * 1024),
    )
}

NGINX_ORIGIN = """
worker_processes 1;
daemon off;
pid {dir}/origin.pid;
error_log {dir}/origin-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_buffer_size 1m;
  client_max_body_size 64m;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    listen 127.0.0.2:{port};  # the "three" feature set's second and third upstream instances
    listen 127.0.0.3:{port};
    location = / {{ add_header Cache-Control "max-age=3600"; return 200 "hello from origin\\n"; }}
    location = /1m.bin {{ root {dir}; }}
    location = /post {{ return 200 "posted\n"; }}
  }}
}}
"""


LAYERS = ("server", "app", "relay")  # bench/layers.py: the gateway cut short, for --layers
PEERS = ("nginx", "python-floor", *(f"layer/{layer}" for layer in LAYERS))  # rows that are not gateway configurations


def feature_env(features: str, workdir: Path, origin_url: str) -> dict[str, str]:
    """Settings for each --features choice (a TOML file for the long IP list: too big for a variable)."""
    if features == "three":
        port = origin_url.rsplit(":", 1)[1]
        instances = [f"http://127.0.0.{n}:{port}" for n in (1, 2, 3)]
        return {"GATEWAY_ROUTES": json.dumps([{"prefix": "/", "upstreams": instances, "max_body_bytes": None}])}
    if features == "bare":
        return {"GATEWAY_ACCESS_LOG__ENABLED": "false"}
    if features == "cache":
        route = {"prefix": "/", "upstreams": [origin_url], "max_body_bytes": None, "cache": {"enabled": True}}
        return {"GATEWAY_ROUTES": json.dumps([route]), "GATEWAY_ACCESS_LOG__ENABLED": "false"}
    if features == "no-metrics":
        return {"GATEWAY_ACCESS_LOG__ENABLED": "false", "GATEWAY_METRICS__ENABLED": "false"}
    if features == "no-splice":
        return {"GATEWAY_SERVER__SPLICE": "false"}
    if features == "all":
        deny = ", ".join(f'"10.{i // 256}.{i % 256}.0/24"' for i in range(10_000))
        config = workdir / "all-features.toml"
        config.write_text(
            f"[ip_filter]\ndeny = [{deny}]\n\n[[middleware]]\n"
            'factory = "examples.headers_policy:HeaderPolicyMiddleware"\n'
            'options = { remove = ["x-powered-by"] }\n\n'
            "[[rate_limit.policies]]\nrate = 1000000\nburst = 1000000\n"
        )
        return {"GATEWAY_CONFIG": str(config)}
    return {}


NGINX_PROXY = """
worker_processes 1;
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_max_body_size 64m;
  client_body_buffer_size 1m;       # bodies stay in memory, no temp files
  keepalive_requests 1000000;
  proxy_buffers 16 64k;
  proxy_max_temp_file_size 0;       # responses are never spooled to disk
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if shutil.which("taskset") else command


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url, timeout=1, verify=False)  # https peers use throwaway certificates
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def running(
    command: list[str], url: str, env: dict[str, str] | None = None, cwd: Path = ROOT, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` started, and stopped on leaving; its output goes to `log`, or is dropped."""
    with log.open("wb") if log else open(os.devnull, "wb") as output:
        # (The access log goes to stdout, by default to /dev/null: its formatting and writing are still paid for.)
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=output)
        try:
            wait_until_up(url)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def origin(workdir: Path) -> Iterator[str]:
    port = free_port()
    workdir.chmod(0o755)  # nginx workers run as an unprivileged user
    (workdir / "1m.bin").write_bytes(b"o" * MIB)
    url = f"http://127.0.0.1:{port}"
    if shutil.which("nginx"):
        config = workdir / "origin.conf"
        config.write_text(NGINX_ORIGIN.format(dir=workdir, port=port))
        command = pinned("1", ["nginx", "-c", str(config), "-e", str(workdir / "origin-error.log")])
    else:
        command = pinned("1", [sys.executable, str(Path(__file__).with_name("origin.py")), str(port), str(workdir)])
    with running(command, url):
        yield url


def process_tree_cpu(pid: int) -> float:
    """CPU seconds used by `pid` and its children (for uvicorn with workers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def load(url: str, scenario: Scenario, duration: int) -> dict[str, float]:
    env = {**os.environ, "BODY_BYTES": str(scenario.body_bytes), "NEW_CONNECTIONS": str(int(scenario.new_connections))}
    command = ["wrk", "-t1", f"-c{scenario.connections}", f"-d{duration}s", "--timeout", "5s"]
    command += ["-s", str(Path(__file__).with_name("report.lua")), url + scenario.path]
    output = subprocess.run(pinned("1", command), env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result: dict[str, float] = json.loads(line.removeprefix("RESULT "))
    return result


def measure(url: str, scenario: Scenario, duration: int, pid: int | None) -> dict[str, float]:
    load(url, scenario, 1)  # warm-up: connections, pools, caches
    cpu_before = process_tree_cpu(pid) if pid else 0.0
    result = load(url, scenario, duration)
    if pid:
        result["cpu_per_10k"] = (process_tree_cpu(pid) - cpu_before) / result["requests"] * 10_000
    result["rps"] = result["requests"] / result["seconds"]
    return result


def gateway_command(port: int) -> list[str]:
    """The gateway as it ships: `python -m gateway serve` (edge protocol, its listening sockets, workers)."""
    command = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return pinned(os.environ.get("PROXY_CPU", "0"), command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per cell (default 5)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, default all")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes (default 1)")
    parser.add_argument(
        "--features",
        default="default",
        help="comma-separated gateway configurations, each measured in the same run: default (shipped "
        "settings: access log and metrics on), bare (access log off), no-metrics (access log and metrics "
        "off), no-splice (default, long bodies through Python instead of splice(2)), cache (access log off, "
        "the route cache on: small GETs are hits), all (access log, a "
        "10,000-network IP filter, a "
        "rate limit that never refuses, a user middleware), three (three upstream instances, round robin). "
        "Default: default",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure bench/floor.py: the least a Python relay costs (callbacks on uvloop and httptools)",
    )
    parser.add_argument(
        "--layers",
        action="store_true",
        help="also measure bench/layers.py on the small scenarios: the gateway's server alone, then with the app's "
        "middleware chain, then with the proxy endpoint over a transport that answers at once",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of other code (a git worktree of an earlier commit) whose gateway and layers are measured "
        "in the same run, in rows marked before/",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/run.py needs wrk: apt-get install -y wrk (nginx too, for the fast origin)")
    scenarios = [SCENARIOS[name] for name in args.scenarios.split(",")]
    features = args.features.split(",")
    rows: list[tuple[Scenario, str, dict[str, float], dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as temp, origin(Path(temp)) as origin_url:
        routes = json.dumps([{"prefix": "/", "upstreams": [origin_url], "max_body_bytes": None}])
        direct = {scenario.name: measure(origin_url, scenario, args.duration, None) for scenario in scenarios}
        if shutil.which("nginx"):
            rows += nginx_rows(Path(temp), origin_url, scenarios, direct, args.duration)
        if args.floor:
            rows += module_rows("python-floor", ["bench.floor", origin_url], scenarios, direct, args.duration)
        small = [scenario for scenario in scenarios if scenario.path == "/"]  # the layers answer `/`'s body only
        trees = [("", ROOT)] + ([("before/", args.baseline.resolve())] if args.baseline else [])
        for label, tree in trees:
            if args.layers and small:
                for layer in LAYERS:
                    layer_args = ["bench.layers", layer, origin_url]
                    rows += module_rows(f"{label}layer/{layer}", layer_args, small, direct, args.duration, tree)
        for label, tree in trees:
            for feature in features:
                port = free_port()
                env = {**os.environ, "GATEWAY_ROUTES": routes, **feature_env(feature, Path(temp), origin_url)}
                env |= {"GATEWAY_SERVER__WORKERS": str(args.workers), "GATEWAY_SERVER__LOG_LEVEL": "warning"}
                gateway_url = f"http://127.0.0.1:{port}"
                with running(gateway_command(port), gateway_url + "/_gateway/health", env, cwd=tree) as gateway:
                    for scenario in scenarios:
                        through = measure(gateway_url, scenario, args.duration, gateway.pid)
                        rows.append((scenario, label + feature, direct[scenario.name], through))
    print_table(rows, args)


def nginx_rows(
    workdir: Path, origin_url: str, scenarios: list[Scenario], direct: dict[str, dict[str, float]], duration: int
) -> list[tuple[Scenario, str, dict[str, float], dict[str, float]]]:
    """nginx as the same reverse proxy (one worker, pooled upstream connections), pinned like the gateway."""
    port = free_port()
    config = workdir / "proxy.conf"
    config.write_text(NGINX_PROXY.format(dir=workdir, port=port, origin_port=origin_url.rsplit(":", 1)[1]))
    command = pinned(os.environ.get("PROXY_CPU", "0"), ["nginx", "-c", str(config), "-e", str(workdir / "proxy.log")])
    return peer_rows("nginx", command, f"http://127.0.0.1:{port}", scenarios, direct, duration)


def peer_rows(
    name: str,
    command: list[str],
    url: str,
    scenarios: list[Scenario],
    direct: dict[str, dict[str, float]],
    duration: int,
    cwd: Path = ROOT,
) -> list[tuple[Scenario, str, dict[str, float], dict[str, float]]]:
    """A proxy to compare with, started by `command` in `cwd` and measured on every scenario."""
    with running(command, url, cwd=cwd) as peer:
        return [
            (scenario, name, direct[scenario.name], measure(url, scenario, duration, peer.pid))
            for scenario in scenarios
        ]


def module_rows(
    name: str,
    module_args: list[str],
    scenarios: list[Scenario],
    direct: dict[str, dict[str, float]],
    duration: int,
    tree: Path = ROOT,
) -> list[tuple[Scenario, str, dict[str, float], dict[str, float]]]:
    """A bench module of `tree` serving on a free port (`python -m MODULE ARGS --port N`), pinned like the
    gateway."""
    port = free_port()
    command = pinned(os.environ.get("PROXY_CPU", "0"), [sys.executable, "-m", *module_args, "--port", str(port)])
    return peer_rows(name, command, f"http://127.0.0.1:{port}", scenarios, direct, duration, tree)


def print_table(rows: list[tuple[Scenario, str, dict[str, float], dict[str, float]]], args: argparse.Namespace) -> None:
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPUs  workers={args.workers}  {args.duration}s/cell")
    header = f"{'scenario':<16}{'target':<24}{'req/s':>9}{'MB/s':>8}{'p50 ms':>8}{'p99 ms':>9}{'errors':>7}"
    print(header + f"{'x direct':>9}{'x nginx':>9}{'CPU-s/10k':>10}{'µs/req':>8}")
    nginx = {scenario.name: result for scenario, feature, _, result in rows if feature == "nginx"}
    shown: set[str] = set()
    order = list(SCENARIOS)
    for scenario, feature, direct, through in sorted(rows, key=lambda row: order.index(row[0].name)):
        tree = "before/" if feature.startswith("before/") else ""  # --baseline's rows
        own = feature.removeprefix(tree)
        cells = [(tree + (own if own in PEERS else f"gateway/{own}"), through)]
        if scenario.name not in shown:
            cells.insert(0, ("direct", direct))
            shown.add(scenario.name)
        for name, result in cells:
            errors = int(result["errors"] + result["non2xx"])
            ratio = result["rps"] / direct["rps"]
            versus = f"{result['rps'] / nginx[scenario.name]['rps']:>9.3f}" if scenario.name in nginx else f"{'-':>9}"
            cpu = result.get("cpu_per_10k")
            cpu_text = f"{cpu:>10.2f}{cpu * 100:>8.0f}" if cpu is not None else f"{'-':>10}{'-':>8}"
            print(
                f"{scenario.name:<16}{name:<24}{result['rps']:>9.0f}{result['bytes'] / result['seconds'] / 1e6:>8.1f}"
                f"{result['p50_ms']:>8.2f}{result['p99_ms']:>9.2f}{errors:>7}{ratio:>9.3f}{versus}{cpu_text}"
            )


if __name__ == "__main__":
    main()
