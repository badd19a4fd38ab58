"""A fake oned for unit tests: the simulator's XML-RPC server (``testbed.one.api``) answering given methods,
and the environment that points the drivers' client of oned at it."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from testbed.one.api import ApiServer, Method

SESSION = "oneadmin:fake-oned"


@contextmanager
def fake_oned(
    folder: Path, methods: Mapping[str, Method], tls: ssl.SSLContext | None = None
) -> Iterator[dict[str, str]]:
    """oned's API on loopback answering ``methods`` for ``SESSION`` (over https with ``tls``), until the
    block ends; yields ``ONE_XMLRPC`` and ``ONE_AUTH`` (a session file in ``folder``) as a driver's
    environment has them."""
    server = ApiServer(methods, SESSION, tls)
    auth = folder / "one_auth"
    auth.write_text(f"{SESSION}\n")
    try:
        yield {"ONE_XMLRPC": server.url, "ONE_AUTH": str(auth)}
    finally:
        server.close()


def self_signed(folder: Path) -> ssl.SSLContext:
    """A server's TLS settings with a new self-signed certificate for 127.0.0.1, made by ``openssl``; the
    certificate, its own CA, is left in ``folder``/ca/oned.pem for clients to trust."""
    (folder / "ca").mkdir()
    cert, key = folder / "ca" / "oned.pem", folder / "oned.key"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ),
            *("-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=oned"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
