"""`python -m gateway demo`: the classic topology on loopback, in one process.

Client -> gateway -> /api (two instances), /auth, /static. The services run in threads on ports the OS
picks; the gateway runs in the main thread, so Ctrl-C stops it and then them.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.app import create_app
from settings import GatewaySettings, RouteSettings

DEMO_TOKEN = "demo-token"
STATIC_DIR = Path(__file__).resolve().parents[2] / "settings" / "welcome"


def api_service(instance: str) -> Starlette:
    async def echo(request: Request) -> Response:
        return JSONResponse(
            {
                "service": "api",
                "instance": instance,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "x_forwarded_for": request.headers.get("x-forwarded-for"),
                "x_request_id": request.headers.get("x-request-id"),
            }
        )

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", echo, methods=methods)])


def auth_service() -> Starlette:
    async def login(request: Request) -> Response:
        return JSONResponse({"token": DEMO_TOKEN})

    async def whoami(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {DEMO_TOKEN}":
            return JSONResponse({"error": "send Authorization: Bearer <token from /auth/login>"}, status_code=401)
        return JSONResponse({"user": "demo"})

    return Starlette(routes=[Route("/login", login, methods=["POST"]), Route("/whoami", whoami)])


def _loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _start_in_thread(app: Starlette) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = _loopback_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    # Outside the main thread uvicorn leaves signal handling alone; the gateway owns Ctrl-C.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def run_demo(port: int) -> int:
    services = [_start_in_thread(app) for app in (api_service("api-1"), api_service("api-2"), auth_service())]
    api_1, api_2, auth = (url for _, _, url in services)
    routes = [
        {"prefix": "/api", "upstreams": [api_1, api_2], "strip_prefix": True},
        {"prefix": "/auth", "upstreams": [auth], "strip_prefix": True},
        {"prefix": "/static", "static_dir": STATIC_DIR},
    ]
    settings = GatewaySettings(routes=[RouteSettings.model_validate(route) for route in routes])
    gateway = f"http://127.0.0.1:{port}"
    print(
        f"""
Demo topology: gateway on {gateway}
  /api    -> {api_1}, {api_2} (round robin, prefix stripped)
  /auth   -> {auth}
  /static -> {STATIC_DIR}

Try:
  curl -s {gateway}/api/users?page=2          # run it twice: api-1, then api-2
  curl -s -X POST {gateway}/auth/login
  curl -s {gateway}/auth/whoami -H 'Authorization: Bearer {DEMO_TOKEN}'
  curl -s {gateway}/static/index.html | head -3
  curl -s {gateway}/nowhere                   # 404 problem document
  curl -s {gateway}/_gateway/health
Ctrl-C stops everything.
""",
        flush=True,
    )
    try:
        uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, proxy_headers=False, log_level="info")
        ).run()
    finally:
        for server, thread, _ in services:
            server.should_exit = True
            thread.join(timeout=5)
    return 0
