"""The listening side: uvicorn with the gateway's edge protocol, TLS and limits."""

from gateway.edge.protocol import EdgeProtocol
from gateway.edge.runner import GatewayConfig, run_server, server_options

__all__ = ["EdgeProtocol", "GatewayConfig", "run_server", "server_options"]
