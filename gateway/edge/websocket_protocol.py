"""uvicorn's WebSocket protocol (websockets, sans-I/O), with the edge's send timeout.

Once a connection is upgraded, its transport talks to this protocol instead of the edge's HTTP one. A client
that stops reading would otherwise hold its session, and the upstream session relayed to it, for as long as
its TCP connection lives: sends wait for the write buffer to drain, and even a close frame or a failed
keep-alive ping only asks the transport to close once everything buffered has been taken.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.utils import get_client_addr
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.http11 import Request

from gateway.edge.cycle import SEND_TIMEOUT
from gateway.edge.limits import SendTimeout, limits_for
from gateway.edge.offer import EDGE_EXTENSION, EdgeListener, EdgeOffer

logger = logging.getLogger("gateway.server")


class EdgeWebSocketProtocol(SendTimeout, WebSocketsSansIOProtocol):
    """Drops a client that takes none of what is written for it for `send_timeout` seconds, as the edge's HTTP
    protocol does: the session ends as for a client that left (the relay closes the upstream session)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._start_send_timeout(self.loop, limits_for(config).send_timeout)
        self._listener: EdgeListener | None = None

    def handle_connect(self, event: Request) -> None:
        """uvicorn's, with the edge's offer in the session's scope (its task has not run yet)."""
        super().handle_connect(event)
        extensions = cast(dict[str, object], self.scope["extensions"])
        extensions[EDGE_EXTENSION] = EdgeOffer(self._attach, None, splice=False)

    def _attach(self, listener: EdgeListener) -> None:
        self._listener = listener

    def _send_timed_out(self) -> None:
        scope = getattr(self, "scope", None)  # set once the handshake request has been read
        if scope is not None:
            if self._listener is not None:
                self._listener.edge_ended(SEND_TIMEOUT)
            client = get_client_addr(scope)
        else:
            client = "a client"
        logger.info("dropped the WebSocket connection of %s: it took nothing for %g s", client, self._send_timeout)
        self.transport.abort()
