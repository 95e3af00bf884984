"""`python -m gateway [serve|check|demo]`: settings -> uvicorn (TLS, host, port, workers) -> run."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import uvicorn

from gateway.logs import configure_logging
from settings import GatewaySettings, SettingsError, load_settings


def server_options(settings: GatewaySettings, *, host: str | None = None, port: int | None = None) -> dict[str, Any]:
    """uvicorn's settings for the gateway. PORT (set by a PaaS) wins over `server.port`.

    uvicorn's own X-Forwarded-* handling is off: the gateway decides whom to trust (`proxy.trusted_proxies`).
    Its Server header is off; its Date header stays (the gateway drops the upstream's, as nginx does).
    """
    server = settings.server
    return dict(
        host=host or server.host,
        port=port if port is not None else int(os.environ.get("PORT", server.port)),
        workers=server.workers,
        timeout_keep_alive=int(server.keepalive_timeout),
        timeout_graceful_shutdown=int(server.graceful_shutdown_timeout),
        ssl_certfile=settings.tls.certfile,
        ssl_keyfile=settings.tls.keyfile,
        proxy_headers=False,
        access_log=False,  # the gateway writes its own (gateway.access)
        server_header=False,
        date_header=True,
        log_level=server.log_level,
    )


def serve(settings: GatewaySettings, args: argparse.Namespace) -> int:
    # An import string, so that each worker process builds its own app (pools are per worker).
    uvicorn.run("gateway.main:app", **server_options(settings, host=args.host, port=args.port))
    return 0


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
