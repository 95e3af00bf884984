"""Instructions per proxied request, counted by valgrind: the one figure this shared, noisy machine cannot move.

    python -m bench.instructions [--features bare,default] [--requests 500 2500] [-- PIPELINE OPTIONS]

Runs `python -m bench.pipeline` under callgrind twice per feature set, with a small and a large request count,
and prints the difference in instructions divided by the difference in requests: start-up and imports cancel
out. Hash randomisation is fixed so that two runs of the same code agree to within ~0.3%. Timings on this
machine swing by ±30% between runs; instruction counts do not, so a change of 1% is visible here long before
wrk can see it. Instructions are not time (a cache miss costs many), so confirm a gain under load too.
Needs valgrind (`apt-get install valgrind`). Each run takes a minute or two. Options after `--` go to
bench.pipeline (for example `-- --body 1048576`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

_COLLECTED = re.compile(rb"Collected\s*:\s*(\d+)")


def instructions(requests: int, features: str, extra: list[str]) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.pipeline",
        "--requests",
        str(requests),
        "--rounds",
        "1",
        "--features",
        features,
        *extra,
    ]
    run = subprocess.run(command, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"}, timeout=1800)
    found = _COLLECTED.search(run.stderr)
    if run.returncode != 0 or found is None:
        sys.exit(f"callgrind run failed ({' '.join(command)}):\n{run.stderr.decode(errors='replace')[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default="bare,default")
    parser.add_argument("--requests", type=int, nargs=2, default=[500, 2500], metavar=("FEW", "MANY"))
    parser.add_argument("pipeline_options", nargs="*", help="after --: options for bench.pipeline")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    few, many = args.requests
    if many <= few:
        sys.exit("--requests: the second count must be larger than the first")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  callgrind, {few} and {many} requests, instructions per request")
    for features in args.features.split(","):
        per_request = (
            instructions(many, features, args.pipeline_options) - instructions(few, features, args.pipeline_options)
        ) / (many - few)
        print(f"{features:<14}{per_request:>12,.0f} instructions/request", flush=True)


if __name__ == "__main__":
    main()
