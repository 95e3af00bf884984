"""Real servers on 127.0.0.1 for the tests: the gateway under uvicorn, and upstreams that misbehave on command.

Everything binds port 0 on loopback and is stopped by its context manager; every wait has a time limit.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from gateway.edge import EdgeProtocol, GatewayConfig
from settings import LimitsSettings

ROOT = Path(__file__).resolve().parent.parent
WAIT = 15.0  # seconds: the most any helper waits for a server to come up or go down


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve_app(app: ASGIApp, *, limits: LimitsSettings | None = None, **config: Any) -> Iterator[str]:
    """Run `app` under a real uvicorn (httptools, uvloop) in a thread; yield its base URL.

    With `limits`, it runs as `python -m gateway` does: the gateway's edge protocol enforcing them."""
    sock = loopback_socket()
    options: dict[str, Any] = {"log_level": "warning", "proxy_headers": False, "lifespan": "on"}
    options.update(config)
    if limits is not None:
        options.setdefault("limit_concurrency", limits.max_connections)
        server = uvicorn.Server(GatewayConfig(app, limits=limits, http=EdgeProtocol, **options))
    else:
        server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(WAIT)
        sock.close()


@dataclass
class Received:
    """One request as the upstream read it off the wire."""

    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]


Responder = Callable[["UpstreamHandler", Received], None]


def respond_echo(handler: UpstreamHandler, request: Received) -> None:
    body = b"%s %s" % (request.method.encode(), request.target)
    handler.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (len(body), body))


LARGE = 12 * 1024 * 1024  # several times what the loopback buffers between the gateway and a client hold
ENDLESS = 1024 * 1024 * 1024  # what no test reads: the upstream writes until the gateway stops taking it
PIECE = 128 * 1024


def respond_large(handler: UpstreamHandler, request: Received) -> None:
    """A long body framed by Content-Length (spliced by the edge) or chunked (relayed through Python), as the
    target says; a short answer for /api/after."""
    if request.target == b"/api/after":
        respond_echo(handler, request)
        return
    size = ENDLESS if b"/endless" in request.target else LARGE
    chunked = request.target.endswith(b"/chunked")
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    handler.write(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n")
    for _ in range(size // PIECE):
        handler.write(b"%x\r\n%s\r\n" % (PIECE, b"b" * PIECE) if chunked else b"b" * PIECE)
    if chunked:
        handler.write(b"0\r\n\r\n")


class UpstreamHandler(socketserver.StreamRequestHandler):
    """Reads HTTP/1.1 requests (Content-Length or chunked bodies) and lets the test's responder answer."""

    server: ScriptedServer

    def handle(self) -> None:
        self.server.connections += 1
        self.server.open_sockets.add(self.connection)
        try:
            self._serve()
        finally:
            self.server.open_sockets.discard(self.connection)

    def _serve(self) -> None:
        while True:
            request = self._read_request()
            if request is None:
                return
            self.server.record(request)
            try:
                self.server.responder(self, request)
            except (BrokenPipeError, ConnectionResetError):
                self.server.client_went_away.set()
                return
            if self.server.close_after_response or self.connection.fileno() == -1:
                return

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def reset(self) -> None:
        """Close with RST instead of FIN (the file objects hold the socket open until they close too)."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()

    def _read_request(self) -> Received | None:
        line = self.rfile.readline(65537)
        if not line:
            return None
        method, target, _ = line.split(b" ", 2)
        headers = []
        while (line := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            headers.append((name, value.strip()))
        request = Received(method.decode(), target, headers, b"")
        if self.server.read_body:
            request.body = self._read_body(request)
        return request

    def _read_body(self, request: Received) -> bytes:
        if request.header(b"transfer-encoding"):
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        length = request.header(b"content-length")
        return self.rfile.read(int(length[0])) if length else b""


class ScriptedServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, responder: Responder, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), UpstreamHandler)
        self.open_sockets: set[socket.socket] = set()
        self.responder = responder
        self.requests: list[Received] = []
        self.connections = 0
        self.read_body = True
        self.close_after_response = False
        self.client_went_away = threading.Event()
        self._lock = threading.Lock()

    def record(self, request: Received) -> None:
        with self._lock:
            self.requests.append(request)

    def kill(self) -> None:
        """Stop like a crashed process: stop listening and reset every open connection."""
        self.shutdown()
        self.server_close()
        for conn in list(self.open_sockets):
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RDWR)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def scripted_upstream(responder: Responder = respond_echo, port: int = 0) -> Iterator[ScriptedServer]:
    """A raw HTTP/1.1 upstream in threads, answering through `responder`, recording what it received."""
    server = ScriptedServer(responder, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
        for conn in list(server.open_sockets):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@dataclass
class GatewayProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    out: IO[bytes]

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stdout_lines(self, count: int, skip: str = "/_gateway/health") -> list[str]:
        """The first `count` lines the gateway wrote to stdout that do not mention `skip` (the start-up
        health polls, however many there were); waits up to WAIT seconds for them."""
        deadline = time.monotonic() + WAIT
        while True:
            self.out.seek(0)
            lines = [line for line in self.out.read().decode(errors="replace").splitlines() if skip not in line]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines[:count]
            time.sleep(0.05)

    def peak_rss_kib(self) -> int:
        return _status_kib(self.process.pid, "VmHWM")

    def rss_kib(self) -> int:
        return _status_kib(self.process.pid, "VmRSS")


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


# Servers that import gateway.main:app, as gateway_process runs them ({fd}: the pre-bound socket's descriptor).
UVICORN = ("-m", "uvicorn", "gateway.main:app", "--fd", "{fd}")
GUNICORN = ("-m", "gunicorn", "-b", "fd://{fd}", "--no-control-socket", "gateway.main:app")
GUNICORN_UVICORN_WORKER = (*GUNICORN, "-k", "uvicorn.workers.UvicornWorker")
GUNICORN_ASGI_WORKER = (*GUNICORN, "-k", "asgi")


@contextlib.contextmanager
def gateway_process(
    env: dict[str, str], args: tuple[str, ...] = (), server: tuple[str, ...] = UVICORN
) -> Iterator[GatewayProcess]:
    """`uvicorn gateway.main:app` (or another `server`) in its own process (for memory and signal tests), on a
    pre-bound socket; as the customer runs it, without `--http` (gateway.main puts the edge protocol in place)."""
    sock = loopback_socket()
    sock.listen(128)
    command = [sys.executable, *(arg.format(fd=sock.fileno()) for arg in server), "--log-level", "warning", *args]
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    full_env.update(env)
    log, out = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    process = subprocess.Popen(command, cwd=ROOT, env=full_env, pass_fds=[sock.fileno()], stderr=log, stdout=out)
    gateway = GatewayProcess(f"http://127.0.0.1:{sock.getsockname()[1]}", process, log, out)
    try:
        wait_for_health(gateway.url, process, log)
        yield gateway
    finally:
        log.close()
        out.close()
        process.terminate()
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(WAIT)
        sock.close()


def read_to_close(conn: socket.socket) -> bytes:
    """Everything the peer sends until it closes the connection (a reset counts as the close)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def free_port() -> int:
    """A loopback port free right now (for servers that bind by number, such as `python -m gateway`)."""
    sock = loopback_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def python_m_gateway(*args: str, env: dict[str, str], stdout: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """`python -m gateway ARGS` from the project root, seeing only `env` (and a PATH to this Python)."""
    full_env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin", **env}
    command = [sys.executable, "-m", "gateway", *args]
    return subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=stdout, stderr=subprocess.PIPE)


def wait_for_health(
    url: str, process: subprocess.Popen[bytes], log: IO[bytes] | None = None, verify: ssl.SSLContext | bool = True
) -> None:
    """Wait until `url/_gateway/health` answers 200; fail with the process's stderr if it exits first."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stderr.read() if process.stderr else b""
            if log is not None:
                log.seek(0)
                output = log.read()
            raise RuntimeError(f"gateway exited: {output.decode(errors='replace')}")
        try:
            if httpx.get(url + "/_gateway/health", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("gateway did not become healthy")


def raw_request(url: str, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the server at `url` and read until it closes the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait (bounded) for `condition`, the event a test needs before its next step, instead of a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def accepted(pid: int, server_port: int, client: socket.socket) -> bool:
    """Whether process `pid` has accept(2)ed the connection `client` made to `server_port` on loopback: the
    kernel gives the server's end an inode only then, and `pid` holds a descriptor of it."""
    client_port = client.getsockname()[1]
    wanted = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as table:
        inodes = {fields[9] for fields in (line.split() for line in table) if tuple(fields[1:3]) == wanted}
    inodes.discard("0")
    if not inodes:
        return False
    holding = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed since the listing
            holding.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return any(f"socket:[{inode}]" in holding for inode in inodes)


class StderrLines:
    """A running process's standard error, read as it comes by a thread of its own, so that a test can wait for
    a line (with wait_until) while the process runs."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._lines.append(line.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self._lines)
