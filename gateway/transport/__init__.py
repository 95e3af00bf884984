"""The gateway's own HTTP/1.1 transport under the shared httpx.AsyncClient."""

from gateway.transport.relay import COMPLETE_BODY, RelayTransport

__all__ = ["COMPLETE_BODY", "RelayTransport"]
