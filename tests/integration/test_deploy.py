"""How the gateway is started: the Procfile on a PaaS, `python -m gateway`, and the README's commands."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.edge import server_options
from gateway.edge.listen import LISTENERS
from gateway.ops.docs import END as CHAIN_END
from gateway.ops.docs import START as CHAIN_START
from gateway.ops.docs import chain_block
from settings import load_settings
from settings.reference import END, START, reference
from tests.servers import (
    GUNICORN_ASGI_WORKER,
    GUNICORN_UVICORN_WORKER,
    ROOT,
    UVICORN,
    WAIT,
    free_port,
    gateway_process,
    python_m_gateway,
    scripted_upstream,
    wait_for_health,
)


def test_procfile_serves_on_port_keeps_idle_connections_and_stops_gracefully() -> None:
    web = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    port = free_port()
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "PORT": str(port),
        "GATEWAY_PROXY__TRUSTED_PROXIES": '["10.0.0.0/8"]',
    }
    process = subprocess.Popen(
        ["sh", "-c", web.removeprefix("web:")], cwd=ROOT, env=env, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/_gateway/health")
        assert conn.getresponse().read() == b'{"status":"ok"}'
        time.sleep(6)  # longer than uvicorn's default keep-alive of 5 s
        conn.request("GET", "/_gateway/health")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(WAIT)
    # uvicorn shuts down gracefully; the gateway makes its re-raised SIGTERM a plain exit 0.
    assert code == 0
    assert process.stderr is not None
    assert "Application shutdown complete" in process.stderr.read().decode()


def test_python_m_gateway_options_follow_settings_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SERVER__KEEPALIVE_TIMEOUT", "95")
    monkeypatch.setenv("GATEWAY_SERVER__WORKERS", "2")
    monkeypatch.setenv("PORT", "5123")
    options = server_options(load_settings())
    assert options["port"] == 5123
    assert options["timeout_keep_alive"] == 95
    assert options["workers"] == 2
    assert options["proxy_headers"] is False and options["server_header"] is False
    assert server_options(load_settings(), host="0.0.0.0", port=1)["host"] == "0.0.0.0"


@pytest.mark.parametrize(
    ("server", "args"),
    [(UVICORN, ()), (UVICORN, ("--http", "gateway.server:EdgeProtocol")), (GUNICORN_UVICORN_WORKER, ())],
    ids=["uvicorn", "uvicorn-http-edge", "gunicorn-uvicorn-worker"],
)
def test_uvicorn_and_its_gunicorn_worker_serve_the_gateway_with_its_edge_and_own_client_addresses(
    server: tuple[str, ...], args: tuple[str, ...]
) -> None:
    """`uvicorn gateway.main:app` with no `--http` or with the edge's, or gunicorn with uvicorn's worker class: the
    edge's `[limits]` apply, and an X-Forwarded-For from an untrusted peer is not taken for the client's address
    (uvicorn's proxy headers would take it from 127.0.0.1, which both trust by default)."""
    with scripted_upstream() as upstream:
        env = {
            "GATEWAY_ROUTES": json.dumps([{"prefix": "/api", "upstreams": [upstream.url]}]),
            "GATEWAY_LIMITS__MAX_HEADERS": "10",
        }
        with gateway_process(env, args, server=server) as gateway:
            crowded = httpx.get(gateway.url + "/api/x", headers={f"x-extra-{index}": "1" for index in range(10)})
            forwarded = httpx.get(gateway.url + "/api/x", headers={"X-Forwarded-For": "203.0.113.7"})
            record = json.loads(gateway.stdout_lines(1, skip="/_gateway/")[0])  # the edge's 431 is not in it
    assert crowded.status_code == 431
    assert forwarded.status_code == 200
    assert [request.header(b"x-forwarded-for") for request in upstream.requests] == [[b"127.0.0.1"]]
    assert (record["status"], record["client_ip"]) == (200, "127.0.0.1")


def test_plain_uvicorn_keeps_an_explicit_http_protocol_and_warns_of_what_it_lacks() -> None:
    with scripted_upstream() as upstream:
        env = {
            "GATEWAY_ROUTES": json.dumps([{"prefix": "/api", "upstreams": [upstream.url]}]),
            "GATEWAY_LIMITS__MAX_HEADERS": "10",
        }
        with gateway_process(env, ("--http", "httptools")) as gateway:
            crowded = httpx.get(gateway.url + "/api/x", headers={f"x-extra-{index}": "1" for index in range(10)})
            stderr = gateway.stderr()
    assert crowded.status_code == 200
    assert "served with uvicorn's --http HttpToolsProtocol: [limits]" in stderr


def test_a_server_that_cannot_give_the_edge_serves_with_a_warning_of_what_is_off() -> None:
    with gateway_process(
        {"GATEWAY_ROUTES": "[]", "GATEWAY_LIMITS__MAX_HEADERS": "10"}, server=GUNICORN_ASGI_WORKER
    ) as gateway:
        crowded = httpx.get(gateway.url + "/_gateway/health", headers={f"x-extra-{index}": "1" for index in range(10)})
        stderr = gateway.stderr()
    assert crowded.status_code == 200
    assert "imported by gunicorn, which serves it without the gateway's edge protocol: [limits]" in stderr


@pytest.mark.parametrize(
    ("args", "workers"),
    [
        (("-m", "uvicorn", "gateway.main:app", "--port", "PORT"), 1),
        (("-m", "uvicorn", "gateway.main:app", "--port", "PORT", "--workers", "2"), 2),
        (("-m", "gateway", "serve", "--port", "PORT"), 2),  # server.workers = 2, from the environment
        (
            (
                "-m",
                "gunicorn",
                "-k",
                "uvicorn.workers.UvicornWorker",
                "-w",
                "2",
                "-b",
                "127.0.0.1:PORT",
                "--no-control-socket",
                "gateway.main:app",
            ),
            2,
        ),
    ],
    ids=["uvicorn", "uvicorn-workers", "python-m-gateway-workers", "gunicorn-uvicorn-workers"],
)
def test_every_serving_process_accepts_through_many_descriptors(args: tuple[str, ...], workers: int) -> None:
    """In one process and in worker processes (whose loop runs before they import the app), each serving
    process's loop dups the socket uvicorn listens on."""
    port = free_port()
    env = {**os.environ, "GATEWAY_ROUTES": "[]", "GATEWAY_SERVER__WORKERS": str(workers)}
    command = [sys.executable, *(arg.replace("PORT", str(port)) for arg in args)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process)
        for _ in range(100):  # bounded: health says one worker is up; wait up to 10 s for the others
            descriptors = _listening_descriptors(process.pid, port)
            if sorted(descriptors.values())[-workers:] == [LISTENERS] * workers:
                break
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(WAIT)
    assert sorted(descriptors.values())[-workers:] == [LISTENERS] * workers


def _listening_descriptors(parent: int, port: int) -> dict[int, int]:
    """For `parent` and each of its children: how many of its descriptors are the socket listening on
    127.0.0.1:`port` (/proc/net/tcp gives its inode; state 0A is LISTEN)."""
    local = f"0100007F:{port:04X}"
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    link = next(f"socket:[{row[9]}]" for row in rows if row[1] == local and row[3] == "0A")
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    counts = {}
    for pid in [parent, *map(int, children)]:
        fds = Path(f"/proc/{pid}/fd")
        counts[pid] = sum(1 for fd in fds.iterdir() if _readlink(fd) == link)
    return counts


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed while we looked
        return ""


def test_python_m_gateway_on_a_port_in_use_stops_with_the_address_and_why() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = python_m_gateway(
            "serve", "--port", str(port), env={"GATEWAY_ROUTES": "[]"}, stdout=subprocess.DEVNULL
        )
        _, stderr = process.communicate(timeout=WAIT)
    assert process.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in stderr.decode() and "Address already in use" in stderr.decode()


def test_readme_configuration_reference_matches_the_models() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(START), readme.index(END) + len(END)
    assert readme[start:end] == reference(), "run `python -m settings.reference` and paste it into README.md"


def test_readme_chain_section_comes_from_the_plan() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(CHAIN_START), readme.index(CHAIN_END) + len(CHAIN_END)
    assert readme[start:end] == chain_block(), "run `python -m gateway.ops.docs README.md`"


def test_readme_opens_with_the_run_and_test_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```")
    first_commands = [line for line in blocks[1].splitlines() if line and not line.startswith(("#", "bash", "sh"))]
    assert first_commands[0] == "pip install -r requirements.txt && python -m gateway"
    assert first_commands[1] == "pip install -r requirements-dev.txt && python -m pytest"
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()


def test_demo_runs_the_example_topology_and_stops_on_ctrl_c() -> None:
    port = free_port()
    process = python_m_gateway("demo", "--port", str(port), env={})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process)
        instances = [httpx.get(url + "/api/users?page=2").json() for _ in range(2)]
        token = httpx.post(url + "/auth/login").json()["token"]
        whoami = httpx.get(url + "/auth/whoami", headers={"Authorization": f"Bearer {token}"})
        static = httpx.get(url + "/static/index.html")
    finally:
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=WAIT)
    assert sorted(item["instance"] for item in instances) == ["api-1", "api-2"]
    assert instances[0]["path"] == "/users" and instances[0]["query"] == "page=2"
    assert whoami.json() == {"user": "demo"}
    assert static.status_code == 200
    assert b"curl" in stdout
    assert process.returncode in (0, -signal.SIGINT)
