"""The gateway's own HTTP/1.1 transport under the shared httpx.AsyncClient."""

from gateway.transport.relay import COMPLETE_BODY, TLS_CONTEXT, RelayTransport

__all__ = ["COMPLETE_BODY", "TLS_CONTEXT", "RelayTransport"]
