"""The gateway's own HTTP/1.1 transport under the shared httpx.AsyncClient."""

from gateway.client.transport.relay import (
    COMPLETE_BODY,
    HOLD_FOR_SPLICE,
    INTERIM,
    TLS_CONTEXT,
    RelayTransport,
    ResponseBody,
)

__all__ = ["COMPLETE_BODY", "HOLD_FOR_SPLICE", "INTERIM", "TLS_CONTEXT", "RelayTransport", "ResponseBody"]
