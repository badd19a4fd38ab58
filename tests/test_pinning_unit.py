"""How a host fetches an image's blocks (``scatter_fetch``) when its peers answer late or never.

The peer is a stand-in client whose wants behave like Kubo's: a ``block stat`` waits for the block
until its timeout and then gives up. Real Kubo runs the same code in tests/test_rpc.py and on the bed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from one_ipfs.errors import IpfsTimeout
from one_ipfs.ipfs import pinning
from one_ipfs.ipfs.pinning import scatter_fetch
from one_ipfs.ipfs.rpc import KuboClient

ROOT = "bafybeiroot"
MIB = 1 << 20


class Peer(KuboClient):
    """A node whose only source is one peer: ``serve`` decides whether a want of a block is answered."""

    def __init__(self, leaves: int, serve_after: float = 0.0, ignored_wants: int = 0) -> None:
        super().__init__("http://127.0.0.1:9")  # never connected: every method used here is replaced
        self.leaves = [f"bafkreileaf{i}" for i in range(leaves)]
        self.serve_after = serve_after
        self.ignored_wants = ignored_wants
        self.asked: Counter[str] = Counter()
        self.link = threading.Lock()
        self.guard = threading.Lock()

    def dag_links(self, cid: str, *, timeout: float | None = None) -> list[str]:
        self._want(cid, timeout)
        return self.leaves if cid == ROOT else []

    def block_stat(self, cid: str, *, timeout: float | None = None) -> int:
        wait = self._want(cid, timeout)
        if not self.link.acquire(timeout=wait):
            raise IpfsTimeout(f"ipfs block stat {cid}: Kubo gave up after {wait:g} s")
        try:
            time.sleep(self.serve_after)  # the link brings one block at a time
        finally:
            self.link.release()
        return MIB

    def _want(self, cid: str, timeout: float | None) -> float:
        """Count a want of ``cid``; one the peer ignores ends in Kubo's timeout."""
        with self.guard:
            self.asked[cid] += 1
            ignored = self.asked[cid] <= self.ignored_wants
        wait = timeout if timeout is not None else 60.0
        if ignored:
            time.sleep(wait)
            raise IpfsTimeout(f"ipfs block stat {cid}: Kubo gave up after {wait:g} s")
        return wait


@pytest.fixture(autouse=True)
def quick_reasking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pinning, "REASK_AFTER", 0.05)


def test_wants_the_peer_never_answers_are_asked_again_and_the_blocks_come() -> None:
    peer = Peer(leaves=12, ignored_wants=1)

    scatter_fetch(peer, ROOT, log=lambda _: None, timeout=30, stall_timeout=5)

    assert peer.asked == Counter({ROOT: 2, **{leaf: 2 for leaf in peer.leaves}})


def test_a_slow_link_that_keeps_bringing_blocks_is_not_a_stall() -> None:
    # Eight blocks are wanted at once and one arrives every 0.1 s: the last of them waits longer than
    # the stall timeout, though a block came every 0.1 s.
    peer = Peer(leaves=24, serve_after=0.1)

    scatter_fetch(peer, ROOT, log=lambda _: None, timeout=30, stall_timeout=0.5)

    assert set(peer.asked) == {ROOT, *peer.leaves}


def test_no_block_at_all_for_the_stall_timeout_fails_with_one_line_naming_the_image() -> None:
    peer = Peer(leaves=4, ignored_wants=1000)

    with pytest.raises(IpfsTimeout) as failure:
        scatter_fetch(peer, ROOT, log=lambda _: None, timeout=30, stall_timeout=0.3)

    assert str(failure.value) == (
        f"no block of {ROOT} arrived for 0.3 s: no reachable node seems to provide it"
    )
    assert min(peer.asked.values()) >= 2
