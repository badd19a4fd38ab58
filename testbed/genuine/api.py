"""oned's XML-RPC API on the bed's loopback, which the bed reads to watch what oned does.

Every wait of the bed (a VM reaching a state, an image READY, a host MONITORED) polls: through the CLI, each
look is a Ruby process (about a second of CPU), which on 2 busy cores made 16 concurrent waits miss their
bounds. Here each look is one HTTP request to oned, the very call the CLI would make (``one.vm.info``...).
The admin's commands stay OpenNebula's CLI (``testbed.genuine.cloud``): only the bed's watching comes here.
"""

from __future__ import annotations

import http.client
import xmlrpc.client

from testbed.one.failure import OneFailure

TIMEOUT = 60.0
"""Bounds one request: oned answers a read in milliseconds unless it hangs."""
NO_EXISTS = 0x0400
"""oned's error code for an object it does not have (``RequestManager``'s ``NO_EXISTS``)."""


class Missing(OneFailure):
    """oned has no such object (deleted, or never made)."""


class OnedApi:
    """oned's XML-RPC endpoint (``url``), called with oneadmin's ``session`` (``user:password``)."""

    def __init__(self, url: str, session: str) -> None:
        self.url = url
        self.session = session

    def call(self, method: str, *params: object) -> object:
        """``method`` (``one.vm.info``...) with ``params`` after the session; its answer, or ``OneFailure``
        with oned's message (``Missing`` where the object does not exist). A fresh connection per call,
        so that threads may call at once."""
        proxy = xmlrpc.client.ServerProxy(self.url, transport=_Transport(), allow_none=False)
        answer = getattr(proxy, method)(self.session, *params)
        if not isinstance(answer, list) or not answer:
            raise OneFailure(method, f"unexpected answer {answer!r}")
        if answer[0] is not True:
            message = str(answer[1]) if len(answer) > 1 else ""
            code = answer[2] if len(answer) > 2 else 0
            raise (Missing if code == NO_EXISTS else OneFailure)(method, message)
        return answer[1]

    def info(self, kind: str, oid: int) -> str:
        """The XML of one object (``kind``: ``vm``, ``image``, ``datastore``, ``host``, ``marketapp``...), as
        ``one<kind> show -x`` prints it."""
        return str(self.call(f"one.{kind}.info", oid, False))

    def exists(self, kind: str, oid: int) -> bool:
        try:
            self.info(kind, oid)
        except Missing:
            return False
        return True

    def answers(self) -> bool:
        """Whether oned is up and accepts oneadmin's session."""
        try:
            self.call("one.system.version")
        except (OSError, http.client.HTTPException, xmlrpc.client.Error, OneFailure):
            return False
        return True


class _Transport(xmlrpc.client.Transport):
    """xmlrpc.client's transport with a bound on each request."""

    def make_connection(self, host: tuple[str, dict[str, str]] | str) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = TIMEOUT
        return connection
