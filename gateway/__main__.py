"""`python -m gateway [serve|check|routes|explain|demo]`: settings -> uvicorn (edge protocol, limits, TLS,
workers) -> run; or the route table, or what would happen to one request."""

from __future__ import annotations

import argparse
import sys

from gateway.edge import run_server
from gateway.ops.explain import explain, route_lines
from gateway.ops.logs import configure_logging
from settings import GatewaySettings, SettingsError, load_settings


def serve(settings: GatewaySettings, args: argparse.Namespace) -> int:
    return run_server(settings, host=args.host, port=args.port)


def check(settings: GatewaySettings, args: argparse.Namespace) -> int:
    print("configuration is valid; routes (longest prefix wins):")
    return routes(settings, args)


def routes(settings: GatewaySettings, args: argparse.Namespace) -> int:
    for line in route_lines(settings):
        print(f"  {line}")
    return 0


def explain_request(settings: GatewaySettings, args: argparse.Namespace) -> int:
    if len(args.request) != 2:
        print("usage: python -m gateway explain METHOD PATH   (for example: explain GET /api/users?page=2)")
        return 2
    method, target = args.request
    print("\n".join(explain(settings, method.upper(), target)))
    return 0


def demo(settings: GatewaySettings, args: argparse.Namespace) -> int:
    from gateway.ops.demo import run_demo

    return run_demo(args.port if args.port is not None else 8000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "check", "routes", "explain", "demo"],
        help="default: serve",
    )
    parser.add_argument("request", nargs="*", help="for explain: METHOD PATH")
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
    commands = {"serve": serve, "check": check, "routes": routes, "explain": explain_request, "demo": demo}
    return commands[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
