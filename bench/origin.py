"""Fallback origin for bench/run.py when nginx is missing: a bare ASGI app under uvicorn."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

SMALL = b"hello from origin\n"


def make_app(one_mib: bytes):  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        body = one_mib if scope["path"] == "/1m.bin" else SMALL
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/octet-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    port, workdir = int(sys.argv[1]), Path(sys.argv[2])
    uvicorn.run(make_app((workdir / "1m.bin").read_bytes()), host="127.0.0.1", port=port, log_level="warning")
