"""The gateway's own pure-ASGI middleware, one concern per module."""
