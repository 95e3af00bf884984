"""What the edge server offers the app on a connection, advertised as an ASGI extension.

The edge puts an EdgeOffer under `scope["extensions"]["gateway.edge"]`; under another server it is absent and the
app does without (a watcher task for disconnects, no splicing, the server's own Date). The app attaches the
running exchange, and the edge tells it what only the server can know: that the client's connection is lost, or
that the edge ended the exchange itself (a deadline, a slow reader, shutdown).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

EDGE_EXTENSION = "gateway.edge"
# Present (as {}) in a request's extensions when its target ended in a bare "?": an empty query that ASGI's
# `query_string` (b"" for none too) cannot tell apart from no query; the relay keeps it (signed URLs may).
EMPTY_QUERY_EXTENSION = "gateway.empty_query"


class EdgeListener(Protocol):
    """The running exchange, as the edge sees it (gateway.exchange.Exchange is one)."""

    def client_gone(self) -> None: ...

    def edge_ended(self, reason: str, status: int | None = None) -> None: ...


class EdgeOffer:
    """One per connection, made once: `attach(listener)` for the exchange that is running, `leave_out_date()` when
    the app sends a Date of its own (None where the server writes none), `splice` when the app may send the rest
    of a long body as a splice message (gateway.edge.splice), and `interim(status, headers)` to send a 1xx
    interim response (103 Early Hints) before the final one (None where the server cannot)."""

    __slots__ = ("attach", "interim", "leave_out_date", "splice")

    def __init__(
        self,
        attach: Callable[[EdgeListener], None],
        leave_out_date: Callable[[], None] | None,
        splice: bool,
        interim: Callable[[int, list[tuple[bytes, bytes]]], None] | None = None,
    ) -> None:
        self.attach = attach
        self.leave_out_date = leave_out_date
        self.splice = splice
        self.interim = interim
