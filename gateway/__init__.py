"""A reverse-proxy gateway on Starlette: routes by prefix, relays through one shared httpx client."""

from gateway.app import create_app

__all__ = ["create_app"]
