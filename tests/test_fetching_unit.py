"""How a host lays out an image's blocks (``file_layout``) and fetches them (``scatter_fetch``) when its
peers answer late or never.

The peer is a stand-in client whose wants behave like Kubo's: a ``block stat`` waits for the block
until its timeout and then gives up. Real Kubo runs the same code in tests/test_rpc.py and on the bed.
"""

from __future__ import annotations

import base64
import hashlib
import http
import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from one_ipfs.errors import CommandFailed, ContentNotFound, IpfsTimeout
from one_ipfs.ipfs import fetching, fleet
from one_ipfs.ipfs.fetching import FileLayout, Leaf, fetch_patiently, file_layout, scatter_fetch
from one_ipfs.ipfs.fleet import FetchOrder, Fleet
from one_ipfs.ipfs.rpc import DagLink, FileStat, KuboClient
from one_ipfs.ipfs.transport import Call
from tests.support.kubo_wire import NOT_ENABLED, Answer, FakeNode, Reply

ROOT = "bafybeiroot"
SOURCE = "12D3KooWSource"
MIB = 1 << 20


class Peer(KuboClient):
    """A node whose only source is one peer: ``serve`` decides whether a want of a block is answered."""

    def __init__(
        self, leaves: int, serve_after: float = 0.0, ignored_wants: int = 0, deaf_to_leaves: bool = False
    ) -> None:
        super().__init__(
            transport=FakeNode(
                {
                    "dag/get": self._dag_get,
                    "files/stat": self._files_stat,
                    "block/stat": self._block_stat,
                    "swarm/peers": {"Peers": [{"Peer": SOURCE, "Addr": "/ip4/10.0.0.1/tcp/4001"}]},
                    "swarm/peering/ls": {"Peers": [{"ID": SOURCE, "Addrs": ["/ip4/10.0.0.1/tcp/4001"]}]},
                    "bitswap/stat": {"BlocksReceived": 0, "BlocksSent": 0},
                    "swarm/disconnect": lambda call: self._count(
                        f"disconnect {call.args[0].removeprefix('/p2p/')}"
                    ),
                    "swarm/connect": lambda call: self._count(f"connect {call.args[0]}"),
                }
            )
        )
        self.leaves = [f"bafkreileaf{i}" for i in range(leaves)]
        self.serve_after = serve_after
        self.ignored_wants = ignored_wants
        self.deaf_to_leaves = deaf_to_leaves  # until the node reconnects it, as Kubo's bitswap can
        self.asked: Counter[str] = Counter()
        self.link = threading.Lock()
        self.guard = threading.Lock()

    def _dag_get(self, call: Call) -> dict[str, object]:
        self._want(call.args[0], call.timeout)
        links = self.leaves if call.args[0] == ROOT else []
        return {"Links": [{"Hash": {"/": leaf}, "Tsize": MIB} for leaf in links]}

    def _files_stat(self, call: Call) -> dict[str, object]:
        cid = call.args[0].removeprefix("/ipfs/")
        self._want(f"stat {cid}", call.timeout)
        size = len(self.leaves) * MIB
        return {
            "Hash": cid,
            "Size": size,
            "CumulativeSize": size,
            "Blocks": len(self.leaves) + 1,
            "Type": "file",
        }

    def _block_stat(self, call: Call) -> dict[str, object]:
        cid = call.args[0]
        wait = self._want(cid, call.timeout)
        if not self.link.acquire(timeout=wait):
            raise IpfsTimeout(f"ipfs block stat {cid}: Kubo gave up after {wait:g} s")
        try:
            time.sleep(self.serve_after)  # the link brings one block at a time
        finally:
            self.link.release()
        return {"Key": cid, "Size": MIB}

    def _count(self, what: str) -> dict[str, object]:
        self.asked[what] += 1
        return {}

    def _want(self, cid: str, timeout: float | None) -> float:
        """Count a want of ``cid``; one the peer ignores ends in Kubo's timeout."""
        with self.guard:
            self.asked[cid] += 1
            ignored = self.asked[cid] <= self.ignored_wants or (
                self.deaf_to_leaves and cid in self.leaves and not self.asked[f"disconnect {SOURCE}"]
            )
        wait = timeout if timeout is not None else 60.0
        if ignored:
            time.sleep(wait)
            raise IpfsTimeout(f"ipfs block stat {cid}: Kubo gave up after {wait:g} s")
        return wait


def dag(nodes: dict[str, list[DagLink]]) -> FakeNode:
    """A node answering ``dag get`` for interior nodes (``bafybei...``) and their links at once; leaves
    are ``bafk...``."""

    def links(call: Call) -> dict[str, object]:
        return {"Links": [{"Hash": {"/": link.cid}, "Tsize": link.size} for link in nodes[call.args[0]]]}

    return FakeNode({"dag/get": links})


@pytest.fixture(autouse=True)
def quick_reasking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetching, "REASK_AFTER", 0.05)


def fetch(peer: Peer, stall_timeout: float) -> None:
    layout = file_layout(
        peer, ROOT, len(peer.leaves) * MIB, stall_timeout=stall_timeout, deadline=time.monotonic() + 30
    )
    scatter_fetch(peer, layout, log=lambda _: None, timeout=30, stall_timeout=stall_timeout)


def layout_of(nodes: dict[str, list[DagLink]], size: int) -> FileLayout:
    return file_layout(dag(nodes).client(), ROOT, size, stall_timeout=1, deadline=time.monotonic() + 5)


def test_layout_places_a_repeated_leaf_at_every_offset_and_reads_a_repeated_subtree_once() -> None:
    data, zero = DagLink("bafkreidata", MIB), DagLink("bafkreizero", MIB)
    nodes = {
        ROOT: [DagLink("bafybeirun", 3 * MIB), data, DagLink("bafybeirun", 3 * MIB)],
        "bafybeirun": [zero] * 3,
    }
    node = dag(nodes)

    layout = file_layout(node.client(), ROOT, 7 * MIB, stall_timeout=1, deadline=time.monotonic() + 5)

    assert layout == FileLayout(
        ROOT,
        7 * MIB,
        [
            Leaf("bafkreizero", MIB, (0, MIB, 2 * MIB, 4 * MIB, 5 * MIB, 6 * MIB)),
            Leaf("bafkreidata", MIB, (3 * MIB,)),
        ],
        assemblable=True,
    )
    assert Counter(call.args[0] for call in node.asked("dag/get")) == Counter({ROOT: 1, "bafybeirun": 1})


def test_a_single_raw_block_is_its_own_layout() -> None:
    layout = file_layout(
        dag({}).client(), "bafkreisingle", 5000, stall_timeout=1, deadline=time.monotonic() + 5
    )

    assert layout == FileLayout("bafkreisingle", 5000, [Leaf("bafkreisingle", 5000, (0,))], assemblable=True)


@pytest.mark.parametrize(
    ("links", "size"),
    [
        pytest.param(
            [DagLink("bafkreia", MIB), DagLink("bafkreib", MIB)], 3 * MIB, id="bytes-inside-the-root"
        ),
        pytest.param(
            [DagLink("bafkreia", MIB), DagLink("bafkreib", MIB)], MIB, id="leaves-claim-more-than-the-file"
        ),
        pytest.param([DagLink("bafkreia", MIB), DagLink("bafkreia", 5)], MIB + 5, id="one-leaf-two-sizes"),
        pytest.param([DagLink("bafkreia", 0), DagLink("bafkreib", MIB)], MIB, id="an-empty-leaf"),
        pytest.param([DagLink("bafybeipbleaf", MIB)], MIB, id="dag-pb-leaves"),
    ],
)
def test_a_dag_that_does_not_add_up_to_its_file_is_left_to_kubos_reader(
    links: list[DagLink], size: int
) -> None:
    assert not layout_of({ROOT: links, "bafybeipbleaf": []}, size).assemblable


def test_a_dag_built_to_explode_is_not_followed() -> None:
    # 40 levels of a node linking twice to the next: 2**40 leaves, a few dozen blocks stored.
    nodes = {f"bafybeilevel{depth}": [DagLink(f"bafybeilevel{depth + 1}", 0)] * 2 for depth in range(40)}
    nodes[ROOT] = [DagLink("bafybeilevel0", 0)]
    nodes["bafybeilevel40"] = [DagLink("bafkreitiny", 1)]

    layout = layout_of(nodes, 1 << 30)

    assert not layout.assemblable


def test_wants_the_peer_never_answers_are_asked_again_and_the_blocks_come() -> None:
    peer = Peer(leaves=12, ignored_wants=1)

    fetch(peer, stall_timeout=5)

    assert peer.asked == Counter({ROOT: 2, **{leaf: 2 for leaf in peer.leaves}})


def test_a_datastore_hold_asks_again_for_the_root_and_blocks_a_peer_never_answered() -> None:
    peer = Peer(leaves=6, ignored_wants=1)

    fetch_patiently(peer, ROOT, log=lambda _: None, timeout=30, stall_timeout=5)

    # The root went unanswered while nothing moved: the node reconnected its peer once, then asked again.
    reconnected = {"disconnect 12D3KooWSource": 1, "connect /ip4/10.0.0.1/tcp/4001/p2p/12D3KooWSource": 1}
    assert peer.asked == Counter(
        {f"stat {ROOT}": 2, ROOT: 2, **{leaf: 2 for leaf in peer.leaves}, **reconnected}
    )


def test_a_slow_link_that_keeps_bringing_blocks_is_not_a_stall() -> None:
    # Eight blocks are wanted at once and one arrives every 0.1 s: the last of them waits longer than
    # the stall timeout, though a block came every 0.1 s.
    peer = Peer(leaves=24, serve_after=0.1)

    fetch(peer, stall_timeout=0.5)

    assert set(peer.asked) == {ROOT, *peer.leaves}


def test_leaves_no_peer_sends_end_the_fetch_at_the_stall_timeout() -> None:
    # The image's layout is known, none of its leaves comes: the stall, raised between two timed-out wants,
    # ends the fetch (caught once as one more timed-out want, it left a partitioned host spinning).
    peer = Peer(leaves=4, ignored_wants=1000)
    layout = FileLayout(
        ROOT, 4 * MIB, [Leaf(cid, MIB, (i * MIB,)) for i, cid in enumerate(peer.leaves)], True
    )

    with pytest.raises(IpfsTimeout, match=f"^no block of {ROOT} arrived for 0.3 s"):
        scatter_fetch(peer, layout, log=lambda _: None, timeout=30, stall_timeout=0.3)
    assert peer.asked[f"disconnect {SOURCE}"] == 1  # halfway through the spell, to no avail


def test_no_block_at_all_for_the_stall_timeout_fails_with_one_line_naming_the_image() -> None:
    peer = Peer(leaves=4, ignored_wants=1000)

    with pytest.raises(IpfsTimeout) as failure:
        fetch(peer, stall_timeout=0.3)

    assert str(failure.value) == (
        f"no block of {ROOT} arrived for 0.3 s: no reachable node seems to provide it"
    )
    assert min(peer.asked.values()) >= 2


def test_leaves_a_peer_stopped_answering_after_the_root_came_arrive_once_the_node_reconnects_it() -> None:
    peer = Peer(leaves=6, deaf_to_leaves=True)

    fetch(peer, stall_timeout=1)

    assert peer.asked[f"disconnect {SOURCE}"] == 1
    assert peer.asked[f"connect /ip4/10.0.0.1/tcp/4001/p2p/{SOURCE}"] == 1
    assert all(peer.asked[leaf] >= 2 for leaf in peer.leaves)


class Member(KuboClient):
    """A node of a private network whose peering lists three members: connected to one, not to the others."""

    def __init__(self, answers: dict[str, Reply] | None = None) -> None:
        peering = [
            {"ID": "12D3KooWUp", "Addrs": ["/ip4/10.0.0.2/tcp/4001"]},
            {"ID": "12D3KooWDown", "Addrs": ["/ip4/10.0.0.3/tcp/4001", "/ip6/fd00::3/tcp/4001"]},
            {"ID": "12D3KooWGone", "Addrs": ["/ip4/10.0.0.4/tcp/4001"]},
        ]
        replies: dict[str, Reply] = {
            "swarm/peers": {"Peers": [{"Peer": "12D3KooWUp", "Addr": "/ip4/10.0.0.2/tcp/4001"}]},
            "swarm/peering/ls": {"Peers": peering},
            "swarm/connect": self._dial,
            **(answers or {}),
        }
        super().__init__(transport=FakeNode(replies))
        self.dialled: list[tuple[str, ...]] = []

    def _dial(self, call: Call) -> dict[str, object]:
        self.dialled.append(call.args)
        if "Gone" in call.args[0]:
            raise IpfsTimeout("ipfs swarm connect: Kubo gave up after 5 s")
        return {}


def test_a_node_dials_the_peering_peers_it_lost_and_goes_on_if_one_stays_out_of_reach() -> None:
    node = Member()
    fetching.redial_peering(node)
    assert node.dialled == [
        ("/ip4/10.0.0.3/tcp/4001/p2p/12D3KooWDown", "/ip6/fd00::3/tcp/4001/p2p/12D3KooWDown"),
        ("/ip4/10.0.0.4/tcp/4001/p2p/12D3KooWGone",),
    ]


class Deaf(Member):
    """A node whose bitswap ignores the connected peer holding the root until a new connection to it,
    as Kubo's does with a peer it marked unresponsive; ``busy`` when it moves blocks for others meanwhile."""

    def __init__(self, busy: bool = False) -> None:
        super().__init__(
            {
                "bitswap/stat": self._bitswap_stat,
                "swarm/disconnect": self._disconnect,
                "files/stat": self._files_stat,
            }
        )
        self.busy = busy
        self.moved = 0
        self.disconnected: list[str] = []

    def _bitswap_stat(self, call: Call) -> dict[str, object]:
        if self.busy:
            self.moved += 1
        return {"BlocksReceived": self.moved, "BlocksSent": 7}

    def _disconnect(self, call: Call) -> dict[str, object]:
        self.disconnected.append(call.args[0].removeprefix("/p2p/"))
        return {}

    def _files_stat(self, call: Call) -> dict[str, object]:
        if "12D3KooWUp" not in self.disconnected:
            time.sleep(call.timeout or 0)
            raise IpfsTimeout(f"ipfs files stat {call.args[0]}: Kubo gave up after {call.timeout} s")
        return {"Hash": ROOT, "Size": MIB, "CumulativeSize": MIB, "Blocks": 2, "Type": "file"}


def stat(node: KuboClient, stall_timeout: float) -> FileStat:
    return fetching.stat_patiently(node, ROOT, stall_timeout=stall_timeout, deadline=time.monotonic() + 30)


def test_a_node_that_moved_no_block_while_the_root_went_unanswered_reconnects_its_peers_once() -> None:
    node = Deaf()

    assert stat(node, stall_timeout=5).size == MIB

    assert node.disconnected == ["12D3KooWUp"]
    lost = [("/ip4/10.0.0.3/tcp/4001/p2p/12D3KooWDown", "/ip6/fd00::3/tcp/4001/p2p/12D3KooWDown")]
    gone = [("/ip4/10.0.0.4/tcp/4001/p2p/12D3KooWGone",)]
    # Redialled the lost peers first, then closed and reopened the connected one.
    assert node.dialled == [*lost, *gone, ("/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWUp",)]


def test_a_node_moving_blocks_for_others_keeps_its_connections_while_the_root_waits() -> None:
    node = Deaf(busy=True)

    with pytest.raises(IpfsTimeout, match=r"no block of bafybeiroot arrived for 0\.3 s"):
        stat(node, stall_timeout=0.3)

    assert node.disconnected == []


class HoldingFleet:
    """Another host of the fleet holding every leaf: what this host reads from it is counted."""

    def __init__(self) -> None:
        self.read: list[str] = []

    def read_from(self, holder: str, leaf: str, timeout: float) -> bytes | None:
        self.read.append(leaf)
        return b"\0" * MIB


def test_a_warm_host_reads_from_other_hosts_only_the_leaves_its_own_node_lacks() -> None:
    leaves = [f"bafkreileaf{i}" for i in range(16)]
    held_here = set(leaves[:12])  # the blocks a new version shares with the one this host deployed

    def block_stat(call: Call) -> dict[str, object]:
        if call.params.get("offline") == "true" and call.args[0] not in held_here:
            raise ContentNotFound(f"ipfs block stat: block was not found locally (offline): {call.args[0]}")
        return {"Key": call.args[0], "Size": MIB}

    node = FakeNode({"block/stat": block_stat, "block/put": {"Key": "bafkreiput"}}).client()
    layout = FileLayout(ROOT, 16 * MIB, [Leaf(cid, MIB, (i * MIB,)) for i, cid in enumerate(leaves)], True)
    order = FetchOrder(leaves, "me", alone_at_once=2)
    order.heard("other", (1 << len(leaves)) - 1)
    fleet = HoldingFleet()
    fleet_member: Any = fleet
    fetch = fetching._LeafFetch(
        node, layout, order, fleet_member, log=lambda _: None, timeout=30, stall_timeout=5, sink=None
    )

    fetch.work()

    assert order.held() == (1 << len(leaves)) - 1
    assert fleet.read and not set(fleet.read) & held_here


class Line(KuboClient):
    """A peer that sends the blocks wanted of it one after another, ``block_seconds`` each, in the order
    the wants came; a want cancelled (its timeout ran out) while its block was on the wire still gets the
    block, which the node throws away, as Kubo does with a block it no longer wants."""

    def __init__(self, block_seconds: float) -> None:
        super().__init__(transport=FakeNode({"block/stat": self._block_stat}))
        self.block_seconds = block_seconds
        self.sent: Counter[str] = Counter()
        self.free_at = 0.0
        self.schedule = threading.Lock()

    def _block_stat(self, call: Call) -> dict[str, object]:
        asked, timeout = time.monotonic(), call.timeout or 60.0
        with self.schedule:
            start = max(asked, self.free_at)
            on_the_wire = start < asked + timeout
            if on_the_wire:
                self.free_at = start + self.block_seconds
                self.sent[call.args[0]] += 1
        arrives = start + self.block_seconds
        time.sleep(max(min(arrives, asked + timeout) - time.monotonic(), 0))
        if arrives > asked + timeout:
            raise IpfsTimeout(f"ipfs block stat {call.args[0]}: Kubo gave up after {timeout:g} s")
        return {"Key": call.args[0], "Size": MIB}


def test_a_want_waiting_behind_the_hosts_others_is_not_asked_again_so_no_block_comes_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Eight wants at once, 0.03 s a block: the eighth block comes after 0.24 s, later than one want's
    # 0.2 s, well within eight wants' wait. Asked again at 0.2 s, a want in flight gets its block twice.
    monkeypatch.setattr(fetching, "REASK_AFTER", 0.2)
    monkeypatch.setattr(fetching, "REASK_LONGEST", 0.6)
    peer = Line(block_seconds=0.03)
    leaves = [f"bafkreileaf{i}" for i in range(24)]
    layout = FileLayout(ROOT, 24 * MIB, [Leaf(cid, MIB, (i * MIB,)) for i, cid in enumerate(leaves)], True)

    scatter_fetch(peer, layout, log=lambda _: None, timeout=30, stall_timeout=5)

    assert peer.sent == Counter(leaves)


class SlowStoringNode:
    """A node whose first ``block put`` Kubo does not finish in time; what it is asked is recorded."""

    def __init__(self, held: set[str]) -> None:
        self.wanted: list[str] = []
        self.puts = 0
        self.held = held
        self.node = FakeNode({"block/stat": self._block_stat, "block/put": self._block_put})

    def _block_stat(self, call: Call) -> dict[str, object]:
        if call.params.get("offline") == "true":
            raise ContentNotFound(f"ipfs block stat: block was not found locally (offline): {call.args[0]}")
        self.wanted.append(call.args[0])
        return {"Key": call.args[0], "Size": MIB}

    def _block_put(self, call: Call) -> dict[str, object]:
        self.puts += 1
        if self.puts == 1:
            raise IpfsTimeout("ipfs block put: Kubo gave up after 15 s (its timeout ran out)")
        return {"Key": "bafkreiput"}


class HolderGateway:
    """Another host's gateway, seen through this one's: it sends every block it is asked for."""

    def __init__(self, blocks: dict[str, bytes]) -> None:
        self.blocks = blocks
        self.read: list[str] = []

    def peer_block(self, peer: str, cid: str, timeout: float) -> bytes:
        self.read.append(cid)
        return self.blocks[cid]


def raw_cid(data: bytes) -> str:
    """The CIDv1 of a raw block, as Kubo names it."""
    return "b" + base64.b32encode(
        bytes([1, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    ).decode().lower().rstrip("=")


def test_a_leaf_read_from_another_host_that_the_node_is_slow_to_store_is_put_again_not_wanted_again() -> None:
    blocks = {raw_cid(bytes([i]) * MIB): bytes([i]) * MIB for i in range(8)}
    leaves = list(blocks)
    storing = SlowStoringNode(held=set())
    node = storing.node.client()
    order = FetchOrder(leaves, "me", alone_at_once=2)
    order.heard("other", (1 << len(leaves)) - 1)
    fleet = Fleet(node, ROOT, order, timeout=30, log=lambda _: None)
    gateway = HolderGateway(blocks)
    fleet._gateway = gateway  # type: ignore[assignment]  # as if it had joined the image's topic
    arrived: Counter[str] = Counter()
    layout = FileLayout(ROOT, 8 * MIB, [Leaf(cid, MIB, (i * MIB,)) for i, cid in enumerate(leaves)], True)
    fetch = fetching._LeafFetch(
        node,
        layout,
        order,
        fleet,
        log=lambda _: None,
        timeout=30,
        stall_timeout=5,
        sink=lambda leaf, data: arrived.update([leaf.cid]),
    )

    fetch.work()

    # The node's own leaves came by bitswap, the other host's from it alone: none both ways, and the
    # holder, which sent every leaf it was asked for, is still read from.
    assert gateway.read and not set(gateway.read) & set(storing.wanted)
    assert arrived == Counter(leaves)
    assert storing.puts == len(gateway.read) + 1
    assert order.failed_count == 0


class GatewayWithoutProxy(http.server.BaseHTTPRequestHandler):
    """A Kubo gateway without ``Experimental.P2pHttpProxy``: it has no ``/p2p/`` paths."""

    def do_GET(self) -> None:
        self.send_error(http.HTTPStatus.NOT_FOUND)

    def log_message(self, format: str, *args: object) -> None:
        pass


WHY_ALONE = {
    "pubsub": "fetching without knowing of other hosts: ",
    "p2p": "blocks from other hosts come by bitswap: ",
    "http-proxy": "reading blocks from another host failed: ",
}


@pytest.mark.parametrize("off", ["pubsub", "p2p", "http-proxy"])
def test_a_fleet_host_without_one_of_kubos_experimental_features_fetches_every_leaf_by_bitswap_once(
    off: str,
) -> None:
    blocks = {raw_cid(bytes([i]) * 1024): bytes([i]) * 1024 for i in range(16)}
    leaves = list(blocks)
    report = base64.urlsafe_b64encode(fleet._encode_held((1 << len(leaves)) - 1, len(leaves))).decode()
    heard = threading.Event()

    def reports() -> Iterator[dict[str, Any]]:
        """Another host holding every leaf reports so; then the subscription ends."""
        yield {"from": "12D3KooWother", "data": "u" + report.rstrip("=")}
        heard.set()

    def subscribe(call: Call) -> Answer:
        if off == "pubsub":
            heard.set()  # of nobody
            raise CommandFailed(NOT_ENABLED[off])
        return Answer.streamed(reports())

    def listen(call: Call) -> dict[str, object]:
        if off == "p2p":
            raise CommandFailed(NOT_ENABLED[off])
        return {}

    def block_stat(call: Call) -> dict[str, object]:
        if call.params.get("offline") == "true":
            raise ContentNotFound(f"ipfs block stat: block was not found locally (offline): {call.args[0]}")
        heard.wait(5)  # every leaf is asked for once this host knows the other holds it
        return {"Key": call.args[0], "Size": 1024}

    gateway = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GatewayWithoutProxy)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    node = FakeNode(
        {
            "id": {"ID": "12D3KooWme", "AgentVersion": "kubo/0.43.0"},
            "pubsub/sub": subscribe,
            "pubsub/pub": {},
            "config": {"Key": "Addresses.Gateway", "Value": f"/ip4/127.0.0.1/tcp/{gateway.server_port}"},
            "p2p/listen": listen,
            "block/stat": block_stat,
        }
    )
    layout = FileLayout(ROOT, 16 * 1024, [Leaf(cid, 1024, (i * 1024,)) for i, cid in enumerate(leaves)], True)
    logged: list[str] = []
    arrived: Counter[str] = Counter()

    try:
        scatter_fetch(
            node.client(),
            layout,
            log=logged.append,
            timeout=30,
            stall_timeout=10,
            sink=lambda leaf, data: arrived.update([leaf.cid]),
            fleet=True,
        )
    finally:
        gateway.shutdown()

    assert arrived == Counter(leaves)
    wanted = Counter(call.args[0] for call in node.asked("block/stat") if "offline" not in call.params)
    assert wanted == Counter(leaves)
    assert not node.asked("block/put")
    assert any(line.startswith(WHY_ALONE[off]) for line in logged), logged
    assert bool(node.asked("p2p/listen")) is (off != "pubsub")
