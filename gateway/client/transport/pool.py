"""Connections to one upstream origin: O(1) checkout of the warmest idle connection, a hard cap with a
FIFO queue of waiters, and bookkeeping that never awaits, so cancellation cannot leak a slot."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from enum import Enum

import httpx

from gateway.client.transport.connection import UpstreamConnection, wait_until


class _State(Enum):
    ACTIVE = 1
    IDLE = 2
    GONE = 3


class OriginPool:
    """Up to `max_connections` connections to (scheme, host, port), of which `max_idle` may wait idle."""

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        *,
        max_connections: int,
        max_idle: int,
        idle_expiry: float,
    ) -> None:
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._max_connections = max_connections
        self._max_idle = max_idle
        self._idle_expiry = idle_expiry
        self._idle: deque[UpstreamConnection] = deque()
        self._state: dict[UpstreamConnection, _State] = {}
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def size(self) -> int:
        return len(self._state) + self._opening

    async def acquire(self, pool_timeout: float | None, connect_timeout: float | None) -> UpstreamConnection:
        while True:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and conn.loop.time() < conn.idle_until:
                    self._state[conn] = _State.ACTIVE
                    conn.reused = True
                    return conn
                self._forget(conn)
                conn.close()
            if self.size < self._max_connections:
                return await self._open(connect_timeout)
            await self._wait_for_slot(pool_timeout)

    async def _open(self, timeout: float | None) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        self._opening += 1
        opened = False
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self._lost),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
            opened = True
        except TimeoutError:
            raise httpx.ConnectTimeout("connecting to the upstream timed out") from None
        except ssl.SSLError as exc:
            raise httpx.ConnectError(f"TLS with the upstream failed: {exc.reason}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to the upstream: {exc.strerror or exc}") from None
        finally:
            self._opening -= 1
            if not opened:
                self._wake_waiter()  # the slot this attempt held is free again
        self._state[conn] = _State.ACTIVE
        return conn

    async def _wait_for_slot(self, timeout: float | None) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await wait_until(waiter, timeout, httpx.PoolTimeout, "no upstream connection became free in time")
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._wake_waiter()  # we were handed a slot but will not use it: pass it on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after an exchange; it is kept only if it can carry another one."""
        if self._state.get(conn) is not _State.ACTIVE:
            return
        conn.active = False
        if conn.closed or not conn.complete or not conn.keep_alive or len(self._idle) >= self._max_idle:
            self.discard(conn)
            return
        self._state[conn] = _State.IDLE
        conn.idle_until = conn.loop.time() + min(self._idle_expiry, conn.keep_alive_hint)
        self._idle.append(conn)
        self._wake_waiter()

    def discard(self, conn: UpstreamConnection) -> None:
        """Close a connection whose exchange failed or was abandoned."""
        conn.active = False
        conn.close()
        if self._state.get(conn) is _State.IDLE:
            self._idle.remove(conn)
        self._forget(conn)

    def close(self) -> None:
        for conn in list(self._state):
            self.discard(conn)

    def _lost(self, conn: UpstreamConnection) -> None:
        # An idle connection the upstream closed leaves at once; an active one leaves via its user.
        if self._state.get(conn) is _State.IDLE:
            self._idle.remove(conn)
            self._forget(conn)

    def _forget(self, conn: UpstreamConnection) -> None:
        if self._state.pop(conn, None) is not None:
            self._wake_waiter()

    def _wake_waiter(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
