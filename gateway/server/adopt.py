"""`uvicorn gateway.main:app` served as the gateway, not as a bare uvicorn app.

Without `--http gateway.server:EdgeProtocol`, uvicorn serves the app with its own protocol: no `[limits]`, no
Host or framing checks, no send timeouts and no splice(2). Its proxy-header middleware rewrites the client
address from X-Forwarded-For before the gateway's own (`proxy.trusted_proxies`) sees it. And its loop takes one
new connection per turn, so that a busy worker is slow to take a burst of them (gateway.server.listen).

uvicorn reads the protocol, the event loop and the options below from its Config only after it has imported the
app (its command line imports the app first; a worker process resolves the protocol class and starts its loop
earlier, but builds its servers and each connection's protocol later). So while uvicorn imports gateway.main,
the gateway finds the Config doing so and, if `--http` was left at `auto`, applies what `python -m gateway` sets
for these. An explicit `--http` is the operator's choice: kept, with a warning when it is not the edge.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn
import uvloop
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from gateway.server.listen import ManyListenersLoop
from gateway.server.protocol import EdgeProtocol
from gateway.server.runner import server_options
from settings import GatewaySettings

logger = logging.getLogger("gateway.server")

# The options of server_options() that the edge, client addresses and WebSocket limits depend on; host, port,
# workers, TLS and timeouts stay uvicorn's command-line options.
_ADOPTED = ("proxy_headers", "access_log", "ws_per_message_deflate", "ws_max_size")


def adopt_loading_config(settings: GatewaySettings) -> None:
    """Called at import by gateway.main: put the gateway's server options on the uvicorn Config importing it."""
    config = _config_importing_app()
    if config is None:
        return  # imported by something else: python -m gateway (which serves with the edge), a test, a script
    if config.http != "auto":
        chosen = config.http
        if isinstance(chosen, str):
            chosen = import_from_string(HTTP_PROTOCOLS.get(chosen, chosen))
        if not (isinstance(chosen, type) and issubclass(chosen, EdgeProtocol)):
            logger.warning(
                "served with uvicorn's --http %s: [limits], the Host and framing checks and the send timeouts "
                "are off; leave --http out, or pass --http gateway.server:EdgeProtocol",
                getattr(chosen, "__name__", chosen),
            )
        return
    options = server_options(settings, port=0)  # (the port stays uvicorn's; 0 keeps PORT out of it)
    config.http = config.http_protocol_class = EdgeProtocol
    for name in _ADOPTED:
        setattr(config, name, options[name])
    if config.limit_concurrency is None:
        config.limit_concurrency = options["limit_concurrency"]
    if config.loop == "auto":
        config.loop = options["loop"]
        _running_loop_accepts_through_many_descriptors()
    # What uvicorn's --no-access-log does: its protocols log access when this logger has handlers.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers = []
    uvicorn_access.propagate = False
    logger.info(
        "serving with the gateway's edge protocol; uvicorn's proxy headers and access log are off "
        "(proxy.trusted_proxies and the gateway's access log take their place)"
    )


def _running_loop_accepts_through_many_descriptors() -> None:
    """A worker process (`--workers`, `--reload`) runs its loop before it imports the app, so the Config's loop
    comes too late there; its servers are not made yet, so that loop can still become the gateway's (the same
    uvloop, with ManyListenersLoop's create_server)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # uvicorn's command line in one process: it starts the Config's loop after this
    if type(loop) is uvloop.Loop:
        loop.__class__ = ManyListenersLoop


def _config_importing_app() -> uvicorn.Config | None:
    """The uvicorn Config whose load_app() is importing the caller, if any (a look up the call stack)."""
    load_app = uvicorn.Config.load_app.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is load_app:
            config = frame.f_locals.get("self")
            return config if isinstance(config, uvicorn.Config) else None
        frame = frame.f_back  # type: ignore[assignment]
    return None
