"""Run uvicorn the way the settings say: edge protocol and limits, TLS, workers, the HTTPS redirect listener."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from gateway.edge.listen import LOOP
from gateway.edge.protocol import EdgeProtocol
from gateway.edge.redirect import RedirectToHttps
from gateway.edge.tls import ContextFactory
from gateway.ops.workers import prepare_workers
from settings import GatewaySettings, LimitsSettings

logger = logging.getLogger("gateway.server")

APP = "gateway.main:app"  # an import string, so that each worker process builds its own app (pools are per worker)
STARTUP_FAILURE = 3  # uvicorn's exit status when it could not start
DEFAULT_WS_SIZE = 16 * 1024 * 1024


class GatewayConfig(uvicorn.Config):
    """uvicorn's Config carrying the `[limits]` that EdgeProtocol enforces (picklable, for worker processes)."""

    def __init__(self, app: Any, *, limits: LimitsSettings, **options: Any) -> None:
        super().__init__(app, **options)
        self.limits = limits


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
        http=EdgeProtocol,
        loop=LOOP,
        limit_concurrency=settings.limits.max_connections,
        # uvicorn refuses (1009) a client message over the largest any route accepts, before buffering it whole.
        # No permessage-deflate towards clients: one read of compressed frames can inflate to hundreds of MiB
        # (uvicorn parses every frame of a read before pausing), and upstream legs are uncompressed anyway.
        ws_per_message_deflate=False,
        ws_max_size=max((route.websocket.max_message_bytes for route in settings.routes), default=DEFAULT_WS_SIZE),
        timeout_keep_alive=int(server.keepalive_timeout),
        timeout_graceful_shutdown=int(server.graceful_shutdown_timeout),
        ssl_context_factory=ContextFactory(settings.tls) if settings.tls.enabled else None,
        proxy_headers=False,
        access_log=False,  # the gateway writes its own (gateway.access)
        server_header=False,
        date_header=True,
        log_level=server.log_level,
    )


def run_server(settings: GatewaySettings, *, host: str | None = None, port: int | None = None) -> int:
    """Serve until a signal stops it (uvicorn.run, with our Config); the exit status."""
    config = GatewayConfig(APP, limits=settings.limits, **server_options(settings, host=host, port=port))
    redirect = _redirect_server(settings, config) if settings.tls.redirect_http_port is not None else None
    server = uvicorn.Server(config)
    # uvicorn re-raises SIGTERM after its graceful shutdown, under the handler found before it started: this one
    # makes that a plain exit 0, and a SIGTERM during start-up a prompt stop.
    signal.signal(signal.SIGTERM, lambda signum, frame: setattr(server, "should_exit", True))
    try:
        sockets = [config.bind_socket()]  # the loop (gateway.edge.listen) accepts through 64 descriptors of it
    except SystemExit:  # uvicorn has logged why (the address is in use, say); this says where
        logger.error("cannot listen on %s:%d", config.host, config.port)
        return STARTUP_FAILURE
    try:
        if redirect is not None:
            redirect.start()
        if config.workers > 1:
            prepare_workers()
            Multiprocess(config, sockets=sockets).run()
            return 0
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        if redirect is not None:
            redirect.stop()
    return 0 if server.started else STARTUP_FAILURE


class _RedirectThread(threading.Thread):
    """The plain-HTTP listener runs in a thread beside the HTTPS server (uvicorn serves one app per Server)."""

    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__(name="gateway-https-redirect", daemon=True)
        self.server = server

    def run(self) -> None:
        self.server.run()

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(5)


def _redirect_server(settings: GatewaySettings, config: GatewayConfig) -> _RedirectThread:
    redirect_config = GatewayConfig(
        RedirectToHttps(config.port),
        limits=settings.limits,
        host=config.host,
        port=settings.tls.redirect_http_port,
        http=EdgeProtocol,
        lifespan="off",
        ws="none",  # the redirect listener answers WebSocket handshakes with plain HTTP
        limit_concurrency=settings.limits.max_connections,
        timeout_keep_alive=config.timeout_keep_alive,
        proxy_headers=False,
        access_log=False,
        server_header=False,
        log_level=config.log_level,
    )
    return _RedirectThread(uvicorn.Server(redirect_config))
