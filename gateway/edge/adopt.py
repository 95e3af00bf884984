"""`uvicorn gateway.main:app` served as the gateway, not as a bare uvicorn app.

Without `--http gateway.server:EdgeProtocol`, uvicorn serves the app with its own protocol: no `[limits]`, no
Host or framing checks, no send timeouts and no splice(2). Its proxy-header middleware rewrites the client
address from X-Forwarded-For before the gateway's own (`proxy.trusted_proxies`) sees it. And its loop takes one
new connection per turn, so that a busy worker is slow to take a burst of them (gateway.edge.listen).

uvicorn reads the protocol, the event loop and the options below from its Config only after it has imported the
app (its command line imports the app first; a worker process resolves the protocol class and starts its loop
earlier, but builds its servers and each connection's protocol later). So while uvicorn imports gateway.main,
the gateway finds the Config doing so and, if `--http` was left at `auto` or names the edge, applies what
`python -m gateway` sets for these. Another `--http` is the operator's choice: kept, with a warning.

gunicorn with uvicorn's worker class (`-k uvicorn.workers.UvicornWorker`, or the uvicorn-worker package's) is
served the same way: each worker makes its uvicorn Config before it imports the app and reads it after. Other
servers that import the app by its path (gunicorn's own ASGI worker, Hypercorn, Granian, Daphne) cannot serve
the edge protocol: a warning says what is off.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn
import uvloop
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from gateway.edge.listen import ManyListenersLoop
from gateway.edge.protocol import EdgeProtocol
from gateway.edge.runner import server_options
from settings import GatewaySettings

logger = logging.getLogger("gateway.server")

# The options of server_options() that the edge, client addresses and WebSocket limits depend on; host, port,
# workers, TLS and timeouts stay uvicorn's command-line options.
_ADOPTED = ("proxy_headers", "access_log", "ws_per_message_deflate", "ws_max_size")
# ASGI servers besides uvicorn that import an app by its path (their top-level packages).
_OTHER_SERVERS = frozenset({"gunicorn", "hypercorn", "granian", "daphne"})


def adopt_loading_config(settings: GatewaySettings) -> None:
    """Called at import by gateway.main: put the gateway's server options on the uvicorn Config importing it."""
    config, server = _server_importing_app()
    if config is None:
        if server is not None:
            logger.warning(
                "imported by %s, which serves it without the gateway's edge protocol: [limits], the Host and "
                "framing checks, the send timeouts and splice(2) are off; run `python -m gateway serve` "
                "(server.workers for more processes), `uvicorn gateway.main:app`, or gunicorn with "
                "`-k uvicorn.workers.UvicornWorker` and without --preload",
                server,
            )
        return  # or imported by python -m gateway (which serves with the edge), a test, a script
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
    else:
        config.http = config.http_protocol_class = EdgeProtocol
    # The edge chosen by --http, or put in place here: either way the client's address is the gateway's to
    # decide (proxy.trusted_proxies), so uvicorn's proxy headers go, with the other options the edge needs.
    options = server_options(settings, port=0)  # (the port stays uvicorn's; 0 keeps PORT out of it)
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


def _server_importing_app() -> tuple[uvicorn.Config | None, str | None]:
    """The uvicorn Config the caller is being imported for, else the package of another server importing it (a
    look up the call stack): (None, None) when neither is found.

    uvicorn's loader is `Config.load_app`; a gunicorn worker imports the app in its `load_wsgi`, and a uvicorn
    worker class keeps its Config as the worker's `config`."""
    load_app = uvicorn.Config.load_app.__code__
    server = None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is load_app:
            config = frame.f_locals.get("self")
            return (config if isinstance(config, uvicorn.Config) else None), None
        package = str(frame.f_globals.get("__name__", "")).partition(".")[0]
        if package in _OTHER_SERVERS:
            server = package
            worker_config = getattr(frame.f_locals.get("self"), "config", None) if package == "gunicorn" else None
            if isinstance(worker_config, uvicorn.Config):
                return worker_config, server
        frame = frame.f_back  # type: ignore[assignment]
    return None, server
