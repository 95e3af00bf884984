"""TLS termination by `python -m gateway`, with trustme certificates and real handshakes on loopback."""

from __future__ import annotations

import contextlib
import datetime
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from settings import SettingsError, TlsSettings, load_settings
from tests.servers import (
    WAIT,
    ScriptedServer,
    free_port,
    python_m_gateway,
    respond_large,
    scripted_upstream,
    wait_for_health,
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(certificate chain, key, CA bundle) for 127.0.0.1."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(paths[1]))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(paths[0]), append=True)
    ca.cert_pem.write_to_path(str(paths[2]))
    return paths


@contextlib.contextmanager
def https_gateway(config: str, tmp_path: Path, verify: ssl.SSLContext) -> Iterator[str]:
    """`python -m gateway` with this TOML; yields its https URL once it answers a client using `verify`."""
    port = free_port()
    (tmp_path / "gateway.toml").write_text(config)
    env = {"GATEWAY_CONFIG": str(tmp_path / "gateway.toml"), "GATEWAY_SERVER__LOG_LEVEL": "warning"}
    process = python_m_gateway("serve", "--port", str(port), env=env, stdout=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, verify=verify)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(WAIT)


def tls_section(cert: Path, key: Path, extra: str = "") -> str:
    return f'[tls]\ncertfile = "{cert}"\nkeyfile = "{key}"\n{extra}\n'


def route_to(upstream: ScriptedServer) -> str:
    return f'[[routes]]\nprefix = "/api"\nupstreams = ["{upstream.url}"]\n'


def client_context(ca_file: Path, *, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if maximum is not None:
        context.maximum_version = maximum
    return context


def test_https_with_minimum_version_hsts_forwarded_proto_and_redirect_listener(
    server_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, key, ca_file = server_files
    redirect_port = free_port()
    extra = f'min_version = "1.3"\nhsts_max_age = 31536000\nredirect_http_port = {redirect_port}'
    with scripted_upstream() as upstream:
        config = tls_section(cert, key, extra) + route_to(upstream)
        with https_gateway(config, tmp_path, client_context(ca_file)) as url:
            response = httpx.get(url + "/api/x?y=1", verify=client_context(ca_file))
            with pytest.raises(httpx.ConnectError):
                httpx.get(url + "/api/old", verify=client_context(ca_file, maximum=ssl.TLSVersion.TLSv1_2))
            with pytest.raises(httpx.TransportError):
                httpx.get(url.replace("https", "http") + "/api/plain")  # plain HTTP on the TLS port
            redirect = httpx.post(f"http://127.0.0.1:{redirect_port}/api/x?y=1", content=b"body")
    assert response.status_code == 200
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    forwarded = upstream.requests[-1]
    assert forwarded.target == b"/api/x?y=1"
    assert forwarded.header(b"x-forwarded-proto") == [b"https"]
    assert redirect.status_code == 308
    assert redirect.headers["location"] == f"{url}/api/x?y=1"
    assert [request.target for request in upstream.requests] == [b"/api/x?y=1"]


def test_mutual_tls_requires_a_client_certificate_from_the_configured_ca(
    ca: trustme.CA, server_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, key, ca_file = server_files
    stranger_ca = trustme.CA()
    with scripted_upstream() as upstream:
        config = tls_section(cert, key, f'client_ca_file = "{ca_file}"') + route_to(upstream)
        client = ca.issue_cert("client.example")
        stranger = stranger_ca.issue_cert("client.example")
        with_cert, with_stranger = client_context(ca_file), client_context(ca_file)
        client.configure_cert(with_cert)
        stranger.configure_cert(with_stranger)
        with https_gateway(config, tmp_path, with_cert) as url:
            accepted = httpx.get(url + "/api/x", verify=with_cert)
            refused = [
                _handshake_fails(url + "/api/x", context) for context in (client_context(ca_file), with_stranger)
            ]
    assert accepted.status_code == 200
    assert refused == [True, True]
    assert [request.target for request in upstream.requests] == [b"/api/x"]


def test_a_tls_client_that_takes_none_of_its_response_is_dropped_after_the_send_timeout(
    server_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, key, ca_file = server_files
    context = client_context(ca_file)
    with scripted_upstream(respond_large) as upstream:
        config = tls_section(cert, key) + "[limits]\nsend_timeout = 0.5\n" + route_to(upstream)
        with https_gateway(config, tmp_path, context) as url:
            raw = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=WAIT)
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
                conn.sendall(b"GET /api/endless/chunked HTTP/1.1\r\nHost: gw\r\n\r\n")
                assert conn.recv(12) == b"HTTP/1.1 200"
                # then reads nothing more: the gateway must give up on it and close its upstream connection
                assert upstream.client_went_away.wait(WAIT)


def _handshake_fails(url: str, context: ssl.SSLContext) -> bool:
    try:
        httpx.get(url, verify=context)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return True
    return False


def _encrypted_key(key: Path, password: bytes, tmp_path: Path) -> Path:
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )
    return encrypted


def test_bad_tls_files_stop_start_up_naming_the_setting(
    ca: trustme.CA, server_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, key, _ = server_files
    other_key = tmp_path / "other-key.pem"
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other_key))
    expired_cert, expired_key = tmp_path / "expired.pem", tmp_path / "expired-key.pem"
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = ca.issue_cert("127.0.0.1", not_before=past, not_after=past + datetime.timedelta(days=1))
    expired.cert_chain_pems[0].write_to_path(str(expired_cert))
    expired.private_key_pem.write_to_path(str(expired_key))
    encrypted = _encrypted_key(key, b"s3cret", tmp_path)
    cases = {
        "missing file": ({"certfile": tmp_path / "nope.pem", "keyfile": key}, "is not a readable file"),
        "key of another certificate": ({"certfile": cert, "keyfile": other_key}, "cannot be used together"),
        "expired": ({"certfile": expired_cert, "keyfile": expired_key}, "expired on"),
        "wrong password": (
            {"certfile": cert, "keyfile": encrypted, "keyfile_password": "wrong"},
            "wrong keyfile_password",
        ),
        "certificate without key": ({"certfile": cert}, "set both or neither"),
        "client CA not a CA bundle": ({"certfile": cert, "keyfile": key, "client_ca_file": key}, "no usable CA"),
    }
    for name, (tls, message) in cases.items():
        with pytest.raises(SettingsError) as caught:
            load_settings(tls=tls)
        assert caught.value.problems[0].startswith("tls"), name
        assert message in caught.value.problems[0], name
    assert TlsSettings(certfile=cert, keyfile=encrypted, keyfile_password="s3cret").enabled


def test_python_m_gateway_refuses_an_expired_certificate_with_one_line(ca: trustme.CA, tmp_path: Path) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = ca.issue_cert("127.0.0.1", not_before=past, not_after=past + datetime.timedelta(days=1))
    expired.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    expired.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    env = {"GATEWAY_TLS__CERTFILE": str(tmp_path / "cert.pem"), "GATEWAY_TLS__KEYFILE": str(tmp_path / "key.pem")}
    process = python_m_gateway(env=env)
    _, stderr = process.communicate(timeout=WAIT)
    assert process.returncode == 2
    assert b"Traceback" not in stderr
    assert stderr.decode().startswith("configuration error: tls: ")
    assert b"expired on" in stderr
