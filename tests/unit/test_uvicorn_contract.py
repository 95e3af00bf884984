"""What the edge takes from uvicorn beyond its supported levers, checked against the uvicorn installed: these fail
loudly, naming what to look at again, when a new uvicorn renames or drops what the edge builds on."""

from __future__ import annotations

import inspect

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gateway.edge.cycle import EdgeCycle
from gateway.edge.protocol import UVICORN_REFUSAL_LINE, EdgeProtocol
from gateway.edge.websocket_protocol import EdgeWebSocketProtocol

# The uvicorn versions the edge is tested with (requirements.txt pins one; the README says so).
TESTED = ("0.54.0",)

# The uvicorn methods the edge replaces or extends: each must still exist on uvicorn's class, or the edge's own
# would silently never be called.
OVERRIDDEN = {
    HttpToolsProtocol: (
        "__init__",
        "connection_made",
        "connection_lost",
        "data_received",
        "_unset_keepalive_if_required",
        "on_response_complete",
        "_start_asgi_task",
        "send_400_response",
        "shutdown",
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "pause_writing",
        "resume_writing",
    ),
    RequestResponseCycle: ("__init__", "receive", "send"),
    WebSocketsSansIOProtocol: ("__init__", "handle_connect", "connection_lost", "pause_writing", "resume_writing"),
}
OURS = {
    HttpToolsProtocol: EdgeProtocol,
    RequestResponseCycle: EdgeCycle,
    WebSocketsSansIOProtocol: EdgeWebSocketProtocol,
}


def test_uvicorn_is_a_version_the_edge_is_tested_with() -> None:
    assert uvicorn.__version__ in TESTED, (
        f"uvicorn {uvicorn.__version__} is installed; the edge is tested with {', '.join(TESTED)}. Check the "
        "methods in OVERRIDDEN and gateway/edge/adopt.py against the new uvicorn, then add it to TESTED"
    )


@pytest.mark.parametrize("base", list(OVERRIDDEN), ids=lambda base: base.__name__)
def test_every_uvicorn_method_the_edge_overrides_still_exists(base: type) -> None:
    ours = OURS[base]
    for name in OVERRIDDEN[base]:
        assert callable(getattr(base, name, None)), (
            f"uvicorn's {base.__name__}.{name} is gone: {ours.__name__} overrides it"
        )
        assert any(name in vars(klass) for klass in ours.__mro__[: ours.__mro__.index(base)]), name
    # And nothing else of uvicorn's is replaced without being listed here.
    replaced = {
        name
        for klass in ours.__mro__[: ours.__mro__.index(base)]
        for name, value in vars(klass).items()
        if (callable(value) and hasattr(base, name) and not name.startswith("__")) or name == "__init__"
    }
    assert replaced <= set(OVERRIDDEN[base]) | {"__init__"}, sorted(replaced - set(OVERRIDDEN[base]))


def test_the_adoption_finds_the_loader_it_walks_the_stack_for() -> None:
    """gateway.edge.adopt looks for uvicorn.Config.load_app's frame and sets http, loop and the options below."""
    load_app = uvicorn.Config.load_app
    assert inspect.isfunction(load_app) and "self" in inspect.signature(load_app).parameters
    config = uvicorn.Config("gateway.main:app")
    for name in ("http", "loop", "proxy_headers", "access_log", "limit_concurrency", "ws_max_size"):
        assert hasattr(config, name), f"uvicorn.Config has no {name}: gateway/edge/adopt.py sets it"
    # The protocol class is resolved in load(), before the app is imported (and so before the adoption).
    load = inspect.getsource(uvicorn.Config.load)
    assert load.index("self.http_protocol_class") < load.index("self.load_app()")


def test_the_refusal_line_the_edge_leaves_out_is_still_uvicorns() -> None:
    """gateway.edge.protocol filters exactly this line of uvicorn's (its own names the refusal instead)."""
    assert repr(UVICORN_REFUSAL_LINE) in inspect.getsource(HttpToolsProtocol.data_received).replace('"', "'")
