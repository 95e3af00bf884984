"""HTTPS upstreams through RelayTransport: verified by default, against a custom CA when configured."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway import create_app
from tests.conftest import settings_with
from tests.servers import serve_app


async def whoami(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"tls {request.url.scheme} host={request.headers['host']}")


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def tls_upstream(authority: trustme.CA, tmp_path: Path):  # type: ignore[no-untyped-def]
    cert = authority.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "upstream.pem"))
    app = Starlette(routes=[Route("/{path:path}", whoami)])
    return serve_app(app, ssl_certfile=str(tmp_path / "upstream.pem"), ssl_keyfile=str(tmp_path / "upstream.pem"))


def test_https_upstream_verified_against_the_configured_ca(authority: trustme.CA, tmp_path: Path) -> None:
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with tls_upstream(authority, tmp_path) as plain_url:
        upstream = "https://localhost:" + plain_url.rsplit(":", 1)[1]  # the certificate names localhost
        settings = settings_with({"prefix": "/", "upstreams": [upstream]}, client={"ca_file": str(tmp_path / "ca.pem")})
        with serve_app(create_app(settings)) as gateway:
            answer = httpx.get(gateway + "/x")
    assert answer.status_code == 200
    assert answer.text.startswith("tls https host=localhost:")


def test_an_unverifiable_upstream_is_a_502_never_a_downgrade(
    authority: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tls_upstream(authority, tmp_path) as plain_url:
        upstream = "https://localhost:" + plain_url.rsplit(":", 1)[1]  # the certificate names localhost
        with (
            caplog.at_level(logging.ERROR, logger="gateway"),
            serve_app(create_app(settings_with({"prefix": "/", "upstreams": [upstream]}))) as gateway,
        ):
            answer = httpx.get(gateway + "/x")
    assert answer.status_code == 502
    assert "certificate" not in answer.text.lower()
    assert any(
        "ConnectError" in record.getMessage() and "CERTIFICATE_VERIFY_FAILED" in record.getMessage()
        for record in caplog.records
    )


def test_a_route_with_its_own_ca_and_client_certificate_reaches_a_mutual_tls_upstream(
    authority: trustme.CA, tmp_path: Path
) -> None:
    """The upstream demands a client certificate; only the route that has one gets through."""
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    authority.issue_cert("gateway.internal").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    cert = authority.issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "upstream.pem"))
    app = Starlette(routes=[Route("/{path:path}", whoami)])
    upstream_server = serve_app(
        app,
        ssl_certfile=str(tmp_path / "upstream.pem"),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        ssl_ca_certs=str(tmp_path / "ca.pem"),
    )
    with upstream_server as plain_url:
        upstream = "https://localhost:" + plain_url.rsplit(":", 1)[1]
        own_tls = {"ca_file": str(tmp_path / "ca.pem"), "certfile": str(tmp_path / "client.pem")}
        own_tls["keyfile"] = own_tls["certfile"]
        settings = settings_with(
            {"prefix": "/with-cert", "upstreams": [upstream], "upstream_tls": own_tls},
            {"prefix": "/without", "upstreams": [upstream]},
            client={"ca_file": str(tmp_path / "ca.pem")},
        )
        with serve_app(create_app(settings)) as gateway:
            with_cert = httpx.get(gateway + "/with-cert/x")
            without = httpx.get(gateway + "/without/x")
    assert with_cert.status_code == 200 and with_cert.text.startswith("tls https host=localhost:")
    assert without.status_code == 502


def test_a_missing_ca_file_is_named() -> None:
    from settings import SettingsError, load_settings

    with pytest.raises(SettingsError) as caught:
        load_settings(client={"ca_file": "/no/such/ca.pem"})
    assert caught.value.problems == ["client.ca_file: '/no/such/ca.pem' is not a readable file"]


def test_a_client_certificate_without_its_key_is_named(tmp_path: Path) -> None:
    from settings import SettingsError, load_settings

    (tmp_path / "client.pem").write_text("not a certificate")
    with pytest.raises(SettingsError) as caught:
        load_settings(
            routes=[
                {
                    "prefix": "/",
                    "upstreams": ["https://127.0.0.1:1"],
                    "upstream_tls": {"certfile": str(tmp_path / "client.pem")},
                }
            ]
        )
    assert caught.value.problems[0].startswith("routes[0].upstream_tls: ")
    assert "certfile and keyfile go together" in caught.value.problems[0]
