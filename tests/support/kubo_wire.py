"""A fake Kubo node on the wire: the transport a ``KuboClient`` is given in unit tests.

The fake answers commands as Kubo's RPC API does (its JSON objects, or bytes), so the real client reads
them: a test names only the commands it expects, and never re-declares the client's methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeAlias

from one_ipfs.errors import IpfsError, StreamBroken
from one_ipfs.ipfs.rpc import KuboClient
from one_ipfs.ipfs.transport import Call


class Answer:
    """A command's answer: JSON objects one per line (``events``), or bytes (``data``); either may be a
    generator, read as the client reads the answer (and raising where Kubo's stream would break)."""

    def __init__(self, *events: dict[str, Any], data: bytes | Iterable[bytes] = b"") -> None:
        self._events: Iterable[dict[str, Any]] = events
        self._data = [data] if isinstance(data, bytes) else data
        self.headers: dict[str, str] = {}
        self.received = 0

    @classmethod
    def streamed(cls, events: Iterable[dict[str, Any]]) -> Answer:
        answer = cls()
        answer._events = events
        return answer

    def body(self) -> Iterator[bytes]:
        for piece in self._data:
            self.received += len(piece)
            yield piece

    def events(self) -> Iterator[dict[str, Any]]:
        yield from self._events

    def broken(self, reason: str) -> IpfsError:
        return StreamBroken(f"the fake node's stream broke: {reason}")

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


NOT_ENABLED = {
    "pubsub": "experimental pubsub feature not enabled, run daemon with --enable-pubsub-experiment to use",
    "p2p": "libp2p stream mounting not enabled",
    "http-proxy": "answered HTTP 404",
}
"""What a Kubo 0.43 node without one of its experimental features (``testbed.kubo.EXPERIMENTAL``) answers
``pubsub/sub``, ``p2p/listen``, or a read through its gateway's ``/p2p/`` path with (tests/
test_fleet_without_experimental.py checks it against real Kubo)."""

Reply: TypeAlias = Answer | dict[str, Any] | Callable[[Call], "Answer | dict[str, Any]"]
"""How the fake answers an endpoint: always the same object, or a function of the call (which may raise
the error Kubo's answer would be)."""


class FakeNode:
    """A node answering each endpoint (``pin/ls``) from ``replies``; it records every call, and a command
    it has no reply for fails the test."""

    def __init__(self, replies: Mapping[str, Reply]) -> None:
        self.replies = dict(replies)
        self.calls: list[Call] = []

    def client(self, timeout: float = 60.0) -> KuboClient:
        return KuboClient("http://127.0.0.1:9", timeout, transport=self)

    def asked(self, endpoint: str) -> list[Call]:
        return [call for call in self.calls if call.endpoint == endpoint]

    def __call__(self, call: Call) -> Answer:
        self.calls.append(call)
        if call.endpoint not in self.replies:
            raise AssertionError(f"the fake node was asked ipfs {call.label}, which the test does not answer")
        reply = self.replies[call.endpoint]
        answer = reply(call) if callable(reply) else reply
        return answer if isinstance(answer, Answer) else Answer(answer)
