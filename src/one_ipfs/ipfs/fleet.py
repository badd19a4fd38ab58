"""Hosts that fetch the same image at the same time share the frontend's link instead of each using it all.

Standard library only: hosts ship it. Bitswap sends a want to every connected node and takes the block
from whichever answers first; the frontend holds every block, so when N hosts fetch one image at once
it ends up sending most blocks several times, and its link sets the pace. Here the hosts of such a
fleet tell each other over pubsub (the image's topic, inside the private network) which leaves they
hold, and share the image's leaves among themselves: each host asks for its own share straight away,
which only the frontend can send, and reads the rest of the image from whichever members hold it,
through the holder's gateway over a libp2p stream (a want would reach the frontend as well, which
would send some of them). Nothing depends on the sharing being right: a leaf its holder does not send,
or whose owner went silent, is asked for by bitswap, and any node that holds it may send it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from one_ipfs.errors import IpfsError, OneIpfsError
from one_ipfs.ipfs.gateway import PEER_PROTOCOL, Gateway, checkable
from one_ipfs.ipfs.rpc import KuboClient, Subscription

TOPIC_PREFIX = "one-ipfs/fetching/"
ANNOUNCE_EVERY = 0.25
"""Seconds between a fetching host's looks at its progress: it reports it when it changed."""
HEARTBEAT = 1.0
"""Seconds after which a host reports its progress even if unchanged, so the others know it is there
(every report costs every member a little CPU, which a fleet on busy hosts feels)."""
OWN_AT_ONCE = 3
"""Own leaves a host asks for at once while it has a fleet: enough to keep its share of the frontend busy."""
OWNER_SILENT = 3.0
"""Seconds without a report (three heartbeats) after which an owner counts as gone: its leaves are asked
for from anyone."""
OWNER_STUCK = 15.0
"""Seconds an owner that still reports may go without holding more before its leaves are asked for from
anyone, so that a host that is stuck, or lies, does not hold the others back for longer. Far longer than
OWNER_SILENT: on a busy link a host's next leaf in order may well take seconds, and a fleet that gave up on
its owners early would be back to every host asking the frontend."""
RECHECK = 0.5
"""Seconds a worker waits with nothing to ask for before it looks again (an owner may be stuck)."""


def topic(cid: str) -> str:
    return TOPIC_PREFIX + cid


@dataclass(frozen=True)
class Want:
    """A leaf to fetch, and the member that reported holding it, if any: read from that member alone,
    it costs the frontend nothing (a want sent to every peer, the frontend's included, may well be
    answered by the frontend)."""

    leaf: str
    holder: str | None


class FetchOrder:
    """Which leaf a fetching worker asks for next, and from whom.

    Each leaf belongs to the member of the fleet that scores highest for it (rendezvous hashing of
    peer ID and leaf CID, which every member computes alike): its owner asks for it, in the order of
    its scores, OWN_AT_ONCE at a time, and it is the only member that does. Members report every leaf
    they hold, and a host reads another owner's leaf as soon as any member holds it, from the holder
    it is reading the fewest leaves from at the time: a leaf its owner got last need not leave the
    owner once per member, the first to read it pass it on. A member that joins takes over only the
    leaves it scores highest for, so a host that started alone, fetching its best-scored leaves
    first, has mostly fetched leaves that stay its own. Alone, a host asks for every leaf,
    ``alone_at_once`` at a time.
    """

    def __init__(self, leaves: Sequence[str], me: str, *, alone_at_once: int) -> None:
        self._leaves = list(leaves)
        self._index = {leaf: i for i, leaf in enumerate(self._leaves)}
        self._alone_at_once = alone_at_once
        self._me = me
        self._scores = {me: self._scores_of(me)}
        self._owner = [me] * len(self._leaves)
        self._held: dict[str, int] = {}
        self._heard_at: dict[str, float] = {}
        self._advanced_at: dict[str, float] = {}
        self._failed: set[str] = set()
        self._taken: set[int] = set()
        self._done = 0
        self._own_in_flight: set[int] = set()
        self._reading: dict[int, str] = {}
        self._stopped = False
        self._changed = threading.Condition()
        self._deal()

    @property
    def me(self) -> str:
        return self._me

    @property
    def members(self) -> list[str]:
        with self._changed:
            return sorted(self._scores)

    @property
    def leaf_count(self) -> int:
        return len(self._leaves)

    def held(self) -> int:
        """The leaves this host holds, as bits (bit i: leaf i of the layout)."""
        with self._changed:
            return self._done

    def heard(self, member: str, held: int) -> None:
        """A member's report: it holds the leaves whose bits are set."""
        with self._changed:
            if member not in self._scores:
                scores = self._scores[member] = self._scores_of(member)
                for i, owner in enumerate(self._owner):
                    if scores[i] > self._scores[owner][i]:
                        self._owner[i] = member
                self._deal()
            self._heard_at[member] = time.monotonic()
            before = self._held.get(member, 0)
            new = held & ~before & ((1 << len(self._leaves)) - 1)  # blocks do not go away mid-fetch
            if new:
                self._held[member] = before | new
                self._available.extend(i for i in _bits(new) if i not in self._taken)
            if new & self._owned.get(member, 0) or member not in self._advanced_at:
                self._advanced_at[member] = self._heard_at[member]
            self._changed.notify_all()

    def failed(self, member: str) -> bool:
        """``member`` did not send a leaf it holds: read nothing more from it. True the first time."""
        with self._changed:
            first = member not in self._failed
            self._failed.add(member)
            return first

    def has_failed(self, member: str) -> bool:
        with self._changed:
            return member in self._failed

    @property
    def failed_count(self) -> int:
        with self._changed:
            return len(self._failed)

    def take(self) -> Want | None:
        """The next leaf to ask for, waiting while the only ones left belong to owners that do not
        hold them yet; None once every leaf has been taken (or the fetch stopped)."""
        with self._changed:
            while not self._stopped:
                at_once = self._alone_at_once if len(self._scores) == 1 else OWN_AT_ONCE
                own = _untaken(self._own, self._taken) if len(self._own_in_flight) < at_once else None
                if own is not None:
                    self._own_in_flight.add(own)
                    return Want(self._taken_leaf(own), None)
                if (index := _untaken(self._available, self._taken)) is not None:
                    return Want(self._taken_leaf(index), self._least_busy_holder(index))
                if (index := self._of_gone_owner()) is not None:
                    return Want(self._taken_leaf(index), None)
                if len(self._taken) == len(self._leaves):
                    return None
                self._changed.wait(RECHECK)
            return None

    def done(self, leaf: str) -> None:
        with self._changed:
            index = self._index[leaf]
            self._done |= 1 << index
            self._own_in_flight.discard(index)
            self._reading.pop(index, None)
            self._changed.notify_all()

    def stop(self) -> None:
        """Wake and release every waiting worker: the fetch failed."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def _scores_of(self, member: str) -> list[bytes]:
        return [hashlib.blake2b(f"{member}/{leaf}".encode(), digest_size=8).digest() for leaf in self._leaves]

    def _taken_leaf(self, index: int) -> str:
        self._taken.add(index)
        return self._leaves[index]

    def _least_busy_holder(self, index: int) -> str | None:
        """The member holding leaf ``index`` that this host reads the fewest leaves from now; None when
        every holder failed (then it comes by bitswap)."""
        holders = [m for m, held in self._held.items() if held >> index & 1 and m not in self._failed]
        if not holders:
            return None
        busy = Counter(self._reading.values())
        holder = min(holders, key=lambda m: (busy[m], self._scores[m][index]))
        self._reading[index] = holder
        return holder

    def _deal(self) -> None:
        """Order every owner's leaves by its scores; queue those not yet taken."""
        by_owner: dict[str, list[int]] = {}
        for i, owner in enumerate(self._owner):
            by_owner.setdefault(owner, []).append(i)
        self._owned = {}
        for owner, owned in by_owner.items():
            owned.sort(key=self._scores[owner].__getitem__, reverse=True)
            self._owned[owner] = _bits_at(owned, len(self._leaves))
        mine = by_owner.pop(self._me, [])
        self._own = deque(i for i in mine if i not in self._taken)
        self._others = {
            owner: deque(i for i in owned if i not in self._taken) for owner, owned in by_owner.items()
        }
        held = 0
        for bits in self._held.values():
            held |= bits
        self._available = deque(i for i in _bits(held) if i not in self._taken)

    def _of_gone_owner(self) -> int | None:
        """The next leaf of an owner that went silent, or got none of its own leaves for OWNER_STUCK
        seconds: it is asked for from anyone."""
        now = time.monotonic()
        for owner, queue in self._others.items():
            gone = (
                now - self._heard_at.get(owner, now) > OWNER_SILENT
                or now - self._advanced_at.get(owner, now) > OWNER_STUCK
            )
            if gone and (index := _untaken(queue, self._taken)) is not None:
                return index
        return None


def _untaken(queue: deque[int], taken: set[int]) -> int | None:
    """The first index of ``queue`` not taken yet (those before it leave the queue)."""
    while queue:
        if queue[0] not in taken:
            return queue.popleft()
        queue.popleft()
    return None


def _bits_at(positions: Sequence[int], count: int) -> int:
    """The number with the bits at ``positions`` set (built bytewise: images may have 100 000 leaves)."""
    raw = bytearray((count + 7) // 8)
    for i in positions:
        raw[i >> 3] |= 1 << (i & 7)
    return int.from_bytes(raw, "little")


def _bits(value: int) -> Iterator[int]:
    """The positions of the bits set in ``value``, lowest first."""
    while value:
        low = value & -value
        yield low.bit_length() - 1
        value ^= low


class Fleet:
    """This host's membership of the fleet fetching one image: while it fetches it reports its progress
    on the image's topic, and passes the others' reports to the order.

    A node without pubsub, or any failure of it, only leaves the host fetching as if alone
    (``log`` tells why); the fetch itself never fails because of the fleet.
    """

    def __init__(
        self,
        client: KuboClient,
        cid: str,
        order: FetchOrder,
        *,
        timeout: float,
        log: Callable[[str], None],
    ) -> None:
        self._client = client
        self._topic = topic(cid)
        self._order = order
        self._timeout = timeout
        self._log = log
        self._leaving = threading.Event()
        self._subscription: Subscription | None = None
        self._gateway: Gateway | None = None
        self._read = 0
        self._counting = threading.Lock()
        self._threads = [
            threading.Thread(target=self._listen, name="fleet-listen", daemon=True),
            threading.Thread(target=self._report, name="fleet-report", daemon=True),
        ]

    def __enter__(self) -> Fleet:
        try:
            self._subscription = self._client.pubsub_subscribe(self._topic, timeout=self._timeout)
        except IpfsError as exc:
            self._log(f"fetching without knowing of other hosts: {exc}")
            return self
        self._gateway = self._serve_blocks()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._leaving.set()
        if self._subscription is not None:
            self._subscription.close()
            for thread in self._threads:
                thread.join()
        failed = self._order.failed_count
        if self._read or failed:
            self._log(
                f"{self._read} block(s) came from the other hosts that held them; "
                f"{failed} host(s) failed to send theirs, which came by bitswap"
            )

    def read_from(self, holder: str, leaf: str, timeout: float) -> bytes | None:
        """The bytes of ``leaf``, read from ``holder`` alone and checked (the caller stores them: that is
        the node's work, which ``holder`` has no part in); None when that did not work (the leaf is then
        fetched by bitswap like any other). A holder that failed once is not asked again in this fetch:
        one that went away would cost every leaf it holds a timeout, and what it had sent of a leaf
        when it failed is received again, so at most the leaves being read from it then come twice."""
        if self._gateway is None or self._order.has_failed(holder) or not checkable(leaf):
            return None
        try:
            data = self._gateway.peer_block(holder, leaf, timeout)
        except OneIpfsError as exc:
            if self._order.failed(holder):
                self._log(f"reading blocks from another host failed: {exc}")
            return None
        with self._counting:
            self._read += 1
        return data

    def _serve_blocks(self) -> Gateway | None:
        """Let the other members read this node's blocks through its gateway (which never fetches for
        them); None when the node cannot: then the others fetch from it by bitswap, and so does it."""
        try:
            address = self._client.gateway_address()
            if address is None:
                self._log("no gateway on this node: blocks from other hosts come by bitswap")
                return None
            host, port = address
            self._client.p2p_listen(PEER_PROTOCOL, f"/{_protocol_of(host)}/{host}/tcp/{port}")
        except IpfsError as exc:
            self._log(f"blocks from other hosts come by bitswap: {exc}")
            return None
        return Gateway(host, port)

    def _listen(self) -> None:
        assert self._subscription is not None
        heard: set[str] = set()
        try:
            for sender, data in self._subscription.messages():
                held = _decode_held(data, self._order.leaf_count)
                if sender == self._order.me or held is None:
                    continue
                self._order.heard(sender, held)
                if sender not in heard:
                    heard.add(sender)
                    self._log(f"fetching alongside {len(heard)} other host(s)")
        except IpfsError as exc:
            self._log(f"no longer hearing of other hosts: {exc}")

    def _report(self) -> None:
        """Progress as it changes (looked at every ANNOUNCE_EVERY seconds) or every HEARTBEAT seconds,
        and once more as the host leaves (holding it all, when the fetch succeeded)."""
        reported, reported_at = -1, 0.0
        while True:
            leaving = self._leaving.is_set()
            held = self._order.held()
            if leaving or held != reported or time.monotonic() - reported_at >= HEARTBEAT:
                try:
                    report = _encode_held(held, self._order.leaf_count)
                    self._client.pubsub_publish(self._topic, report, timeout=ANNOUNCE_EVERY * 8)
                except IpfsError as exc:
                    self._log(f"cannot tell other hosts of this fetch: {exc}")
                    return
                reported, reported_at = held, time.monotonic()
            if leaving:
                return
            self._leaving.wait(ANNOUNCE_EVERY)


def _encode_held(held: int, count: int) -> bytes:
    """A report: the bits of the leaves held, compressed (long runs of ones, and of zeros)."""
    return zlib.compress(held.to_bytes((count + 7) // 8, "little"))


def _decode_held(report: bytes, count: int) -> int | None:
    """The bits of a report; None for anything that is not one for ``count`` leaves."""
    size = (count + 7) // 8
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(report, size + 1)
    except zlib.error:
        return None
    if len(raw) != size or not inflater.eof or inflater.unused_data:
        return None
    return int.from_bytes(raw, "little")


def _protocol_of(host: str) -> str:
    try:
        return f"ip{ipaddress.ip_address(host).version}"
    except ValueError:
        return "dns"
