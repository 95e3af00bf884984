"""The edge protocol's documented import path (`--http gateway.server:EdgeProtocol`); it lives in gateway.edge."""

from gateway.edge import EdgeProtocol

__all__ = ["EdgeProtocol"]
