"""`python -m gateway [serve|check|demo]`: settings -> uvicorn (edge protocol, limits, TLS, workers) -> run."""

from __future__ import annotations

import argparse
import sys

from gateway.logs import configure_logging
from gateway.server import run_server
from settings import GatewaySettings, SettingsError, load_settings


def serve(settings: GatewaySettings, args: argparse.Namespace) -> int:
    return run_server(settings, host=args.host, port=args.port)


def check(settings: GatewaySettings, args: argparse.Namespace) -> int:
    print("configuration is valid; routes (longest prefix wins):")
    for route in sorted(settings.routes, key=lambda route: len(route.prefix), reverse=True):
        if route.static_dir is not None:
            target = f"static files in {route.static_dir}"
        else:
            target = ", ".join(f"{upstream.url} (weight {upstream.weight})" for upstream in route.upstreams)
        options = [name for name in ("strip_prefix", "preserve_host") if getattr(route, name)]
        suffix = f"  [{', '.join(options)}]" if options else ""
        print(f"  {route.prefix:<20} -> {target}{suffix}")
    return 0


def demo(settings: GatewaySettings, args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args.port if args.port is not None else 8000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "check", "demo"], help="default: serve"
    )
    parser.add_argument("--host", help="listen address (overrides server.host)")
    parser.add_argument("--port", type=int, help="listen port (overrides PORT and server.port)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"configuration error: {problem}", file=sys.stderr)
        return 2
    configure_logging(settings.server.log_level, settings.access_log)
    commands = {"serve": serve, "check": check, "demo": demo}
    return commands[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
