"""The HTTP cache conformance suite (cache-tests.fyi, npm `http-cache-tests`) against the gateway's route cache.

    python -m bench.conformance [--out results.json]

Needs node and npm. The suite is fetched from the npm registry once (into ~/.cache/gateway-bench), its origin
server runs on 127.0.0.1 behind a gateway with one cached route, and its command-line client runs every test
through the gateway. The score is printed beside the published results of other caches that ship with the
suite, counted the same way (bench/conformance/score.mjs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.run import free_port, running

SUITE = "http-cache-tests@0.4.5"
CACHE_DIR = Path.home() / ".cache" / "gateway-bench" / SUITE.replace("@", "-")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RUN_SECONDS = 600  # the suite takes about 20 s; a hang ends here


def suite_dir() -> Path:
    """The unpacked suite with its dependencies, fetched on first use."""
    package = CACHE_DIR / "package"
    if (package / "node_modules").is_dir():
        return package
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    packed = subprocess.run(
        ["npm", "pack", SUITE, "--silent"], cwd=CACHE_DIR, capture_output=True, text=True, check=True, timeout=300
    )
    with tarfile.open(CACHE_DIR / packed.stdout.strip().splitlines()[-1]) as archive:
        archive.extractall(CACHE_DIR, filter="data")
    subprocess.run(
        ["npm", "install", "--omit=dev", "--no-audit", "--no-fund", "--silent"], cwd=package, check=True, timeout=600
    )
    return package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="keep the raw results (JSON) here")
    args = parser.parse_args()
    suite = suite_dir()
    origin_port, gateway_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        origin_env = {
            "npm_package_config_protocol": "http",
            "npm_package_config_port": str(origin_port),
            "npm_package_config_pidfile": str(work / "origin.pid"),
        }
        origin = ["node", "--require", str(HERE / "loopback.cjs"), "server/server.mjs"]
        route = {"prefix": "/", "upstreams": [f"http://127.0.0.1:{origin_port}"], "cache": {"enabled": True}}
        gateway_env = {
            "GATEWAY_ROUTES": json.dumps([route]),
            "GATEWAY_ACCESS_LOG__ENABLED": "false",
            "GATEWAY_SERVER__LOG_LEVEL": "warning",
        }
        gateway = [sys.executable, "-m", "gateway", "serve", "--port", str(gateway_port)]
        origin_url, gateway_url = f"http://127.0.0.1:{origin_port}", f"http://127.0.0.1:{gateway_port}"
        with (
            running(origin, origin_url, {**os.environ, **origin_env}, suite, work / "origin.log"),
            running(
                gateway, gateway_url + "/_gateway/health", {**os.environ, **gateway_env}, ROOT, work / "gateway.log"
            ),
        ):
            client_env = {
                **os.environ,
                "npm_package_config_base": gateway_url,
                "npm_package_config_id": "",
            }
            started = time.monotonic()
            run = subprocess.run(
                ["node", "--no-warnings", "cli.mjs"],
                cwd=suite,
                env=client_env,
                capture_output=True,
                text=True,
                check=True,
                timeout=RUN_SECONDS,
            )
            took = time.monotonic() - started
        gateway_log = (work / "gateway.log").read_text(errors="replace")
        results = work / "gateway.json"
        results.write_text(run.stdout)
        if args.out:
            args.out.write_text(run.stdout)
        others = sorted(str(path) for path in (suite / "results").glob("*.json"))
        print(f"{SUITE}, {len(json.loads(run.stdout))} tests through the gateway in {took:.0f} s\n")
        subprocess.run(["node", str(HERE / "score.mjs"), str(suite), str(results), *others], check=True, timeout=60)
        tracebacks = gateway_log.count("Traceback")
        print(f"\nGateway log: {tracebacks} tracebacks, {gateway_log.count(' failed with ')} relay failures logged")


if __name__ == "__main__":
    main()
