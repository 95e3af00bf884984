"""Static-file routes (`static_dir`): Starlette's StaticFiles below the route's prefix."""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from gateway.errors import send_problem
from gateway.exchange import request_id_of


class StaticEndpoint:
    """Serves files from one folder; the route prefix is removed from the path first.

    StaticFiles refuses paths that resolve outside its folder and answers GET and HEAD only.
    """

    def __init__(self, prefix: str, directory: Path) -> None:
        self._prefix = "" if prefix == "/" else prefix
        self._files = StaticFiles(directory=directory, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + self._prefix
        try:
            await self._files(child, receive, send)
        except HTTPException as exc:  # 404, 405: StaticFiles signals them by raising
            await send_problem(send, exc.status_code, exc.detail, request_id_of(scope))
