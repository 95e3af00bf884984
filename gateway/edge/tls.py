"""The server side of TLS: the SSLContext uvicorn serves `[tls]` with."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from uvicorn.config import Config

from settings import TlsSettings

# Mozilla's "intermediate" suites for TLS 1.2 (forward secrecy, AEAD only); TLS 1.3 suites are OpenSSL's own.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """Certificate and key, a minimum version, modern ciphers, and client certificates when configured."""
    assert tls.certfile is not None and tls.keyfile is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.set_ciphers(TLS12_CIPHERS)
    password = tls.keyfile_password.get_secret_value() if tls.keyfile_password else None
    context.load_cert_chain(tls.certfile, tls.keyfile, password)
    if tls.client_ca_file is not None:
        context.load_verify_locations(cafile=str(tls.client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED if tls.client_cert == "required" else ssl.CERT_OPTIONAL
    return context


class ContextFactory:
    """uvicorn's `ssl_context_factory` hook; a class (not a closure) so that worker processes can receive it."""

    def __init__(self, tls: TlsSettings) -> None:
        self.tls = tls

    def __call__(self, config: Config, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return server_context(self.tls)
