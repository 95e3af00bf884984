"""The terminal endpoints: the proxy relay (headers, retries, WebSocket relay) and static files."""
