"""oned's XML-RPC API on the bed's loopback, which the bed reads to watch what oned does.

Every wait of the bed (a VM reaching a state, an image READY, a host MONITORED) polls: through the CLI, each
look is a Ruby process (about a second of CPU), which on 2 busy cores made 16 concurrent waits miss their
bounds. Here each look is one request through the drivers' own client of oned (``one_ipfs.opennebula.oned``),
the very call the CLI would make (``one.vm.info``...). The admin's commands stay OpenNebula's CLI
(``testbed.genuine.cloud``): only the bed's watching comes here.
"""

from __future__ import annotations

from one_ipfs.errors import ObjectMissing, OpenNebulaError
from one_ipfs.opennebula import oned
from testbed.one.failure import OneFailure


class Missing(OneFailure):
    """oned has no such object (deleted, or never made)."""


class OnedApi:
    """oned's XML-RPC endpoint (``url``), called with oneadmin's ``session`` (``user:password``)."""

    def __init__(self, url: str, session: str) -> None:
        self.endpoint = oned.Endpoint(url, session, "the test bed")

    def call(self, method: str, *params: object) -> object:
        """``method`` (``one.vm.info``...) with ``params`` after the session; its answer, or ``OneFailure``
        with oned's message (``Missing`` where the object does not exist)."""
        try:
            return oned.call(method, *params, at=self.endpoint)
        except ObjectMissing as exc:
            raise Missing(method, str(exc)) from None
        except OpenNebulaError as exc:
            raise OneFailure(method, str(exc)) from None

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
        except OneFailure:
            return False
        return True
