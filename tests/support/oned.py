"""A fake oned for unit tests: the simulator's XML-RPC server (``testbed.one.api``) answering given methods,
and the environment that points the drivers' client of oned at it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from testbed.one.api import ApiServer, Method

SESSION = "oneadmin:fake-oned"


@contextmanager
def fake_oned(folder: Path, methods: Mapping[str, Method]) -> Iterator[dict[str, str]]:
    """oned's API on loopback answering ``methods`` for ``SESSION``, until the block ends; yields
    ``ONE_XMLRPC`` and ``ONE_AUTH`` (a session file in ``folder``) as a driver's environment has them."""
    server = ApiServer(methods, SESSION)
    auth = folder / "one_auth"
    auth.write_text(f"{SESSION}\n")
    try:
        yield {"ONE_XMLRPC": server.url, "ONE_AUTH": str(auth)}
    finally:
        server.close()
