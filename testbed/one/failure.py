"""The one exception the simulator raises: OpenNebula reported a failure."""

from __future__ import annotations

from one_ipfs.errors import OpenNebulaError


class OneFailure(OpenNebulaError):
    """OpenNebula reported a failure: a driver's FAILURE reply or an API call oned refused.

    ``action`` is the protocol action (``CP``, ``TRANSFER``, ``MIGRATE``...) or the API call
    (``one.vm.deploy``); ``info`` is exactly the text OpenNebula got; ``oid`` the object concerned.
    It subclasses the project's OpenNebulaError because that is what it is for a caller: an
    OpenNebula operation that failed.
    """

    def __init__(self, action: str, info: str, oid: int | None = None) -> None:
        super().__init__(f"{action} failed: {info}")
        self.action = action
        self.info = info
        self.oid = oid
