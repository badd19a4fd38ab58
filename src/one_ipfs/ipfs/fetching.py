"""Fetching a whole image's blocks to a node, on the frontend and on hosts alike: leaf by leaf from the
node's peers and the fleet (``fetch_patiently``, ``scatter_fetch``), then pinned with progress
(``pin_with_progress``), each with two bounds.

Standard library only: hosts ship it. A fetch of a large image can take long and legitimately, so
the bound that catches content nobody provides is a stall (no new block for a while), not a short
total deadline; Kubo reports pin progress about twice a second, so counts that stop growing are
seen here.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from one_ipfs.errors import ContentNotFound, IpfsError, IpfsTimeout
from one_ipfs.ipfs.fleet import OWN_AT_ONCE, FetchOrder, Fleet
from one_ipfs.ipfs.rpc import DagLink, FileStat, KuboClient, PinProgress

PROGRESS_EVERY = 5.0
RAW_CODEC_PREFIX = "bafk"
SCATTER_WORKERS = 8
REASK_AFTER = 5.0
"""Seconds a want may wait for each of the host's wants in line when it was asked, itself included,
before its block is asked for again: a peer sends one host's blocks one after another, so a want behind
others is late, not lost. Asked again too early, a want is cancelled while its block may be on its way:
landing before the new want, the block is received and thrown away (Kubo keeps only wanted blocks),
then sent again."""
REASK_LONGEST = 3 * REASK_AFTER
"""Seconds after which any want is asked for again, however many are in line: a want its peer lost
(a peer that restarted, a connection replaced) costs no more."""
REDIAL_TIMEOUT = 5.0
"""Seconds a dial of a peering peer may take (Kubo tries all of its addresses)."""
READ_FROM_HOLDER = 10.0
"""Seconds a block may take to come from the fleet member that holds it before bitswap is asked."""
MIN_PIECE = 64 << 10
"""Bytes per leaf below which a DAG is not laid out here: images cut finer are read through Kubo."""

T = TypeVar("T")


def pin_with_progress(
    client: KuboClient,
    cid: str,
    name: str,
    *,
    log: Callable[[str], None],
    timeout: float,
    stall_timeout: float,
    total_bytes: int | None = None,
) -> None:
    """Pin ``cid`` as ``name`` with progress lines; IpfsTimeout once no block came for ``stall_timeout``."""
    now = time.monotonic()
    state = {"nodes": -1, "bytes": -1, "changed": now, "logged": now}

    def on_progress(progress: PinProgress) -> None:
        now = time.monotonic()
        if (progress.nodes, progress.bytes) != (state["nodes"], state["bytes"]):
            state["nodes"], state["bytes"] = progress.nodes, progress.bytes
            state["changed"] = now
        elif now - state["changed"] > stall_timeout:
            raise _stalled(cid, stall_timeout)
        if now - state["logged"] >= PROGRESS_EVERY:
            state["logged"] = now
            log(_progress_line(cid, progress.bytes, total_bytes))

    client.pin_add(cid, name=name, progress=on_progress, timeout=timeout)


def fetch_patiently(
    client: KuboClient, cid: str, *, log: Callable[[str], None], timeout: float, stall_timeout: float
) -> None:
    """Bring every block of the file ``cid`` to the node before pinning it, asking again for wants that
    go unanswered: ``pin add`` alone waits on a lost want until the stall timeout ends it."""
    deadline = time.monotonic() + timeout
    size = stat_patiently(client, cid, stall_timeout=stall_timeout, deadline=deadline).size
    layout = file_layout(client, cid, size, stall_timeout=stall_timeout, deadline=deadline)
    scatter_fetch(
        client, layout, log=log, timeout=max(deadline - time.monotonic(), 0.001), stall_timeout=stall_timeout
    )


def stat_patiently(client: KuboClient, cid: str, *, stall_timeout: float, deadline: float) -> FileStat:
    """The file's size and type from its root block, which may have to come from a peer first (a node
    that lost its peers meanwhile dials them again first; one whose bitswap then moves no block while the
    root goes unanswered reconnects them, once)."""
    redial_peering(client)
    idle = _IdleBitswap(client)

    def ask(wait: float) -> FileStat:
        try:
            return client.files_stat(f"/ipfs/{cid}", timeout=wait)
        except IpfsTimeout:
            idle.reconnect_peering_once()
            raise

    return ask_patiently(cid, ask, stall_timeout=stall_timeout, deadline=deadline)


def redial_peering(client: KuboClient) -> None:
    """Dial each of the node's ``Peering.Peers`` it is not connected to. Kubo redials them by itself,
    but 7.5 to 12.5 s after a connection dropped, and ever later (up to 10 minutes) while they stay out of
    reach: a deploy right after an outage would stall on that. A failure leaves it to Kubo, and the
    fetch's own bounds decide."""
    with contextlib.suppress(IpfsError):
        for peer, addresses, connected in _peering(client):
            if not connected:
                _dial(client, peer, addresses)


def reconnect_peering(client: KuboClient) -> None:
    """Close and reopen the node's connections to its ``Peering.Peers``. Kubo's bitswap can stop sending
    wants to a peer it is still connected to: a send that fails while a connection is being replaced marks
    the peer unresponsive, and only a message from that peer or a new connection undoes it (boxo#1163 is
    one such case). A new connection makes bitswap ask the peer again."""
    with contextlib.suppress(IpfsError):
        for peer, addresses, connected in _peering(client):
            if connected:
                with contextlib.suppress(IpfsError):
                    client.swarm_disconnect(peer)
                _dial(client, peer, addresses)


class _IdleBitswap:
    """Reconnects the node's peering peers, once, if its bitswap received and sent no block since this
    was made: a node that moves blocks is busy, not deaf, and its transfers are left alone."""

    def __init__(self, client: KuboClient) -> None:
        self._client = client
        self._moved = _blocks_moved(client)
        self._once = threading.Lock()

    def reconnect_peering_once(self) -> None:
        with self._once:
            moved, self._moved = self._moved, None
        if moved is not None and _blocks_moved(self._client) == moved:
            reconnect_peering(self._client)


def _blocks_moved(client: KuboClient) -> tuple[int, int] | None:
    try:
        return client.bitswap_blocks_moved()
    except IpfsError:
        return None


def _peering(client: KuboClient) -> list[tuple[str, list[str], bool]]:
    """``(peer, addresses, connected)`` of each ``Peering.Peers`` entry that has addresses."""
    connected = {peer for peer, _ in client.swarm_peers()}
    return [(peer, addresses, peer in connected) for peer, addresses in client.peering_peers() if addresses]


def _dial(client: KuboClient, peer: str, addresses: list[str]) -> None:
    with contextlib.suppress(IpfsError):
        client.swarm_connect(*(f"{a}/p2p/{peer}" for a in addresses), timeout=REDIAL_TIMEOUT)


def ask_patiently(cid: str, ask: Callable[[float], T], *, stall_timeout: float, deadline: float) -> T:
    """``ask(timeout)`` for a block of ``cid``, asked again every REASK_AFTER seconds (a new want each
    time) until it answers, ``stall_timeout`` passed or the ``deadline`` (monotonic) came."""
    give_up = min(time.monotonic() + stall_timeout, deadline)
    while True:
        left = give_up - time.monotonic()
        if left <= 0:
            raise _stalled(cid, stall_timeout)
        try:
            return ask(min(REASK_AFTER, left))
        except IpfsTimeout:
            continue


def _stalled(cid: str, stall_timeout: float) -> IpfsTimeout:
    return IpfsTimeout(
        f"no block of {cid} arrived for {stall_timeout:g} s: no reachable node seems to provide it"
    )


def _progress_line(cid: str, done: int, total: int | None) -> str:
    if total:
        percent = min(100 * done // max(total, 1), 100)
        return f"fetching {cid}: {done >> 20} of {total >> 20} MiB ({percent}%)"
    return f"fetching {cid}: {done >> 20} MiB"


@dataclass(frozen=True)
class Leaf:
    """A distinct leaf block of a file and every offset its bytes lie at (a zero block lies at many)."""

    cid: str
    size: int
    offsets: tuple[int, ...]


@dataclass(frozen=True)
class FileLayout:
    """An image's leaf blocks. ``assemblable`` when they are raw and hold every byte of the file, so the
    file can be written from them in any order as they arrive; otherwise (dag-pb leaves, bytes inside
    interior nodes, a DAG that does not add up) only Kubo's own reader can put the bytes together."""

    cid: str
    size: int
    leaves: list[Leaf]
    assemblable: bool


BlockSink = Callable[[Leaf, "bytes | None"], None]
"""Called as each leaf arrives in the node's blockstore, from several threads at once, with its bytes
when the fetch had them in hand (read from another host), else None."""


def file_layout(
    client: KuboClient, cid: str, size: int, *, stall_timeout: float, deadline: float
) -> FileLayout:
    """Read the interior nodes of ``cid``, a file of ``size`` bytes, in order: where each leaf lies.

    Identical subtrees (runs of zeros) are read once. A DAG whose leaves claim more than ``size`` bytes,
    or that is larger than any importer makes for ``size`` bytes, is not followed further: it is not
    assemblable, and Kubo's reader, which trusts the file's own sizes, is left to make sense of it.
    """
    offsets: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}
    children: dict[str, list[DagLink]] = {}
    assemblable, position, steps = True, 0, 0
    stack = [DagLink(cid, size)]
    while stack:
        link = stack.pop()
        steps += 1
        if steps > _max_links(size):
            assemblable = False
            break
        if steps % 4096 == 0 and time.monotonic() > deadline:
            raise IpfsTimeout(f"reading the layout of {cid} did not finish in time")
        if link.cid.startswith(RAW_CODEC_PREFIX):
            claimed = sizes.setdefault(link.cid, link.size)
            if claimed != link.size or link.size <= 0 or position + link.size > size:
                assemblable = False
                break
            offsets.setdefault(link.cid, []).append(position)
            position += link.size
            continue
        if link.cid not in children:
            children[link.cid] = ask_patiently(
                cid, partial(_links, client, link.cid), stall_timeout=stall_timeout, deadline=deadline
            )
        if not children[link.cid]:  # a dag-pb leaf: its bytes are inside the node just read
            assemblable = False
        stack.extend(reversed(children[link.cid]))
    leaves = [Leaf(leaf, sizes[leaf], tuple(at)) for leaf, at in offsets.items()]
    return FileLayout(cid, size, leaves, assemblable and position == size)


def scatter_fetch(
    client: KuboClient,
    layout: FileLayout,
    *,
    log: Callable[[str], None],
    timeout: float,
    stall_timeout: float,
    sink: BlockSink | None = None,
    fleet: bool = False,
) -> None:
    """Fetch an image's leaf blocks in an order of this host's own, telling ``sink`` of each.

    Hosts that deploy one image at once would otherwise all ask for the same blocks in DAG order,
    and the one node that has them (the frontend) would send each block to every host. In an order
    of its own each host soon holds blocks the others still want, and bitswap lets them trade; with
    ``fleet`` the hosts fetching the image learn of each other and share its leaves out among
    themselves (``one_ipfs.ipfs.fleet``). With a ``sink`` (an assemblable layout only) a disk is
    written while blocks still arrive, rather than read back from the node afterwards.

    A block that has not come within REASK_AFTER per want in line before it (REASK_LONGEST at most) is
    asked for again (Kubo cancels the want and sends a new one): a peer that restarted, or whose
    connection was replaced, may never answer the first want. The fetch stalls only when no block at
    all arrived for ``stall_timeout``, so a slow link that brings a block now and then is not mistaken
    for content nobody provides.
    """
    if sink is not None and not layout.assemblable:
        raise ValueError(f"{layout.cid} cannot be assembled from its leaves")
    me = client.id().peer_id if fleet else os.urandom(8).hex()  # alone: an order no other host shares
    order = FetchOrder([leaf.cid for leaf in layout.leaves], me, alone_at_once=SCATTER_WORKERS)
    workers = SCATTER_WORKERS + (OWN_AT_ONCE if fleet else 0)
    with ExitStack() as stack:
        members = (
            stack.enter_context(Fleet(client, layout.cid, order, timeout=timeout, log=log)) if fleet else None
        )
        fetch = _LeafFetch(
            client,
            layout,
            order,
            members,
            log=log,
            timeout=timeout,
            stall_timeout=stall_timeout,
            sink=sink,
        )
        pool = stack.enter_context(ThreadPoolExecutor(workers))
        running = [pool.submit(fetch.work) for _ in range(workers)]
        wait(running, return_when=FIRST_EXCEPTION)
        order.stop()  # a failed worker ends the others at their next leaf
        for worker in running:
            worker.result()


class _LeafFetch:
    """What the workers of one ``scatter_fetch`` share: the order, the bounds, the progress."""

    def __init__(
        self,
        client: KuboClient,
        layout: FileLayout,
        order: FetchOrder,
        fleet: Fleet | None,
        *,
        log: Callable[[str], None],
        timeout: float,
        stall_timeout: float,
        sink: BlockSink | None,
    ) -> None:
        self._fleet = fleet
        self._client = client
        self._layout = layout
        self._leaves = {leaf.cid: leaf for leaf in layout.leaves}
        self._order = order
        self._log = log
        self._timeout = timeout
        self._stall_timeout = stall_timeout
        self._sink = sink
        self._deadline = time.monotonic() + timeout
        self._last_block = self._logged = time.monotonic()
        self._fetched = 0
        self._wanting = 0
        self._idle: _IdleBitswap | None = None
        self._counting = threading.Lock()

    def work(self) -> None:
        while (want := self._order.take()) is not None:
            self._fetch(self._leaves[want.leaf], want.holder)
            self._order.done(want.leaf)

    def _fetch(self, leaf: Leaf, holder: str | None) -> None:
        if holder is not None and self._fleet is not None:
            if self._held_here(leaf):
                self._arrived(leaf, None)
                return
            wait = min(READ_FROM_HOLDER, max(self._deadline - time.monotonic(), 0.001))
            data = self._fleet.read_from(holder, leaf.cid, wait)
            if data is not None:
                self._store(data)
                self._arrived(leaf, data)
                return
        with self._counting:
            self._wanting += 1
            in_line = self._wanting
        try:
            while True:
                wait = self._wait(REASK_AFTER * in_line)  # raises once the fetch's bounds ran out
                try:
                    self._client.block_stat(leaf.cid, timeout=wait)
                except IpfsTimeout:
                    self._unanswered()
                    continue
                self._arrived(leaf, None)
                return
        finally:
            with self._counting:
                self._wanting -= 1

    def _store(self, data: bytes) -> None:
        """Put a block read from another host into the node, again while Kubo does not answer in time:
        the bytes are in hand, and a want for them would bring them a second time."""
        while True:
            wait = self._wait(REASK_LONGEST)  # raises once the fetch's bounds ran out
            try:
                self._client.block_put(data, timeout=wait)
            except IpfsTimeout:
                continue
            return

    def _wait(self, longest: float) -> float:
        """Seconds the next call for a block may take: ``longest`` (REASK_LONGEST at most) within the
        fetch's bounds, which raise once they ran out."""
        now = time.monotonic()
        if now >= self._deadline:
            raise IpfsTimeout(f"fetching {self._layout.cid} did not finish within {self._timeout:g} s")
        quiet_for = now - self._last_block
        if quiet_for >= self._stall_timeout:
            raise _stalled(self._layout.cid, self._stall_timeout)
        return min(longest, REASK_LONGEST, self._stall_timeout - quiet_for, self._deadline - now)

    def _unanswered(self) -> None:
        """A want ran out. The first to do so in a quiet spell (no block for REASK_AFTER) notes what the
        node's bitswap moved; one running out once the spell lasted half the stall timeout reconnects the
        peering peers if bitswap moved nothing meanwhile, leaving the other half for blocks to come over
        the new connections: a peer Kubo's bitswap stopped asking after the root came would otherwise
        stall the leaves (``stat_patiently`` covers the root)."""
        quiet_for = time.monotonic() - self._last_block
        if quiet_for < REASK_AFTER:
            return
        with self._counting:
            idle = self._idle
            if idle is None:
                self._idle = _IdleBitswap(self._client)
                return
        if quiet_for >= self._stall_timeout / 2:
            idle.reconnect_peering_once()

    def _held_here(self, leaf: Leaf) -> bool:
        """Whether this node holds the leaf already (an unchanged block of a warm deploy), so that no
        other host sends it again."""
        try:
            self._client.block_stat(leaf.cid, offline=True, timeout=self._stall_timeout)
        except ContentNotFound:
            return False
        return True

    def _arrived(self, leaf: Leaf, data: bytes | None) -> None:
        self._last_block = time.monotonic()
        if self._sink is not None:
            self._sink(leaf, data)
        with self._counting:
            self._idle = None  # the quiet spell, if any, is over
            self._fetched += leaf.size * len(leaf.offsets)
            if time.monotonic() - self._logged >= PROGRESS_EVERY:
                self._logged = time.monotonic()
                self._log(_progress_line(self._layout.cid, self._fetched, self._layout.size))


def _max_links(size: int) -> int:
    """More links than this for ``size`` bytes is no image an importer made: a DAG built to explode."""
    return 2 * (size // MIN_PIECE) + 1024


def _links(client: KuboClient, node: str, wait: float) -> list[DagLink]:
    return client.dag_links(node, timeout=wait)
