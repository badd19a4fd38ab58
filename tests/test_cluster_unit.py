"""The IPFS Cluster client and the datastore's replication settings, against a fake REST API: what the
frontend asks of the cluster, when it counts a version as replicated, and when it gives up. The real
cluster runs the same code on the bed (tests/opennebula/test_replication.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from one_ipfs.admin import cluster as replication
from one_ipfs.admin.nodes import Reply
from one_ipfs.config import load_config
from one_ipfs.errors import ClusterError, ContentNotFound, InvalidInput
from one_ipfs.host import protocol as p
from one_ipfs.images import ContentRegistry, Replicas
from one_ipfs.ipfs import cluster, cluster_peer
from one_ipfs.ipfs.cluster import ClusterClient, Replication
from one_ipfs.ipfs.cluster_peer import PeerSettings
from one_ipfs.ipfs.rpc import KuboClient, Pin
from tests.support.kubo_wire import FakeNode

CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
TWO = Replication(2, 3)


class FakeCluster:
    """A cluster REST API whose peers report, call after call, the statuses a test scripts."""

    def __init__(
        self, rounds: list[dict[str, str]], allocations: tuple[str, ...] = ("p1", "p2", "p3")
    ) -> None:
        self.rounds = rounds
        self.allocations = allocations
        self.calls: list[tuple[str, str, dict[str, list[str]]]] = []
        self.pinset: set[str] = set()

    def __call__(self, method: str, path: str, timeout: float) -> tuple[int, bytes]:
        url = urlsplit(path)
        self.calls.append((method, url.path, parse_qs(url.query)))
        cid = url.path.rsplit("/", 1)[-1]
        if method == "POST" and cid == "recover":
            return 200, json.dumps({"cid": url.path.split("/")[2], "peer_map": {}}).encode()
        if method == "POST":
            self.pinset.add(cid)
            return 200, json.dumps({"cid": cid, "allocations": list(self.allocations)}).encode()
        if method == "DELETE":
            if cid not in self.pinset:
                return 404, b'{"code": 404, "message": "pin is not part of the pinset"}'
            self.pinset.discard(cid)
            return 200, json.dumps({"cid": cid}).encode()
        statuses = self.rounds.pop(0) if len(self.rounds) > 1 else self.rounds[0]
        peers = {
            peer: {"peername": f"peer-{peer}", "status": status, "error": ""}
            for peer, status in statuses.items()
        }
        return 200, json.dumps(
            {"cid": cid, "allocations": list(self.allocations), "peer_map": peers}
        ).encode()


def replicate(fake: FakeCluster, timeout: float = 5.0) -> cluster.ClusterPin:
    client = ClusterClient("http://127.0.0.1:9094", transport=fake)
    return client.replicate(CID, name="one-ds1-img2-v1", replication=TWO, timeout=timeout, log=lambda _: None)


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "POLL_EVERY", 0.01)


def test_a_version_counts_as_replicated_once_the_minimum_of_peers_pinned_it() -> None:
    fake = FakeCluster(
        [
            {"p1": "pinned", "p2": "pin_queued", "p3": "pinning"},
            {"p1": "pinned", "p2": "pinning", "p3": "pinning"},
            {"p1": "pinned", "p2": "pinned", "p3": "pinning"},
        ]
    )
    state = replicate(fake)
    assert state.count("pinned") == 2
    method, path, query = fake.calls[0]
    assert (method, path) == ("POST", f"/pins/{CID}")
    assert query == {
        "name": ["one-ds1-img2-v1"],
        "mode": ["recursive"],
        "replication-min": ["2"],
        "replication-max": ["3"],
    }
    assert [call[0] for call in fake.calls[1:]] == ["GET", "GET", "GET"]


def test_replication_gives_up_at_once_when_too_many_allocated_peers_failed() -> None:
    fake = FakeCluster([{"p1": "pinned", "p2": "cluster_error", "p3": "cluster_error"}])
    with pytest.raises(ClusterError, match=r"cannot hold .* on 2 peers"):
        replicate(fake)
    assert len(fake.calls) == 2


def test_a_peer_back_from_a_partition_that_lost_the_pin_is_asked_once_to_pin_it_again() -> None:
    fake = FakeCluster(
        [
            {"p1": "pinned", "p2": "unexpectedly_unpinned", "p3": "cluster_error"},
            {"p1": "pinned", "p2": "pinning", "p3": "cluster_error"},
            {"p1": "pinned", "p2": "pinned", "p3": "cluster_error"},
        ]
    )
    assert replicate(fake).holders() == ["peer-p1", "peer-p2"]
    assert [(method, path) for method, path, _ in fake.calls].count(("POST", f"/pins/{CID}/recover")) == 1


def test_a_peer_that_fails_again_once_asked_to_pin_again_counts_as_failed() -> None:
    fake = FakeCluster([{"p1": "pinned", "p2": "pin_error", "p3": "cluster_error"}])
    with pytest.raises(ClusterError, match=r"cannot hold .* on 2 peers \(peer-p2: pin_error; peer-p3"):
        replicate(fake)
    assert [method for method, _, _ in fake.calls] == ["POST", "GET", "POST", "GET"]


def test_replication_that_does_not_reach_the_minimum_in_time_is_one_error_line() -> None:
    fake = FakeCluster([{"p1": "pinned", "p2": "pinning", "p3": "remote"}])
    with pytest.raises(ClusterError, match=r"on 1 of the 2 peers needed after 0\.2 s") as caught:
        replicate(fake, timeout=0.2)
    assert "\n" not in str(caught.value)


def test_a_refusal_of_the_cluster_is_its_own_message_and_a_missing_pin_is_not_found() -> None:
    def refuse(method: str, path: str, timeout: float) -> tuple[int, bytes]:
        if method == "DELETE":
            return 404, b'{"code": 404, "message": "pin is not part of the pinset"}'
        return 500, b'{"code": 500, "message": "not enough peers to allocate CID. Needed at least: 2"}'

    client = ClusterClient("/ip4/127.0.0.1/tcp/9094", transport=refuse)
    with pytest.raises(ClusterError, match="not enough peers to allocate CID"):
        client.pin(CID, name="x", replication=TWO)
    with pytest.raises(ContentNotFound):
        client.unpin(CID)


def test_an_unreachable_cluster_is_named_with_its_address() -> None:
    client = ClusterClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(ClusterError, match=r"no IPFS Cluster REST API answers at 127\.0\.0\.1:9"):
        client.id()


@pytest.mark.parametrize("hostile", ["../../peers", "bafy?x=1", "Qm" + "x" * 300, ""])
def test_a_hostile_cid_never_reaches_the_cluster(hostile: str) -> None:
    fake = FakeCluster([{}])
    with pytest.raises(InvalidInput):
        ClusterClient("http://127.0.0.1:9094", transport=fake).status(hostile)
    assert fake.calls == []


def test_the_datastore_reads_its_replication_once_and_refuses_it_without_a_cluster() -> None:
    plain = load_config({}, defaults={})
    assert (plain.cluster_api, plain.replication) == ("", None)
    config = load_config(
        {"IPFS_CLUSTER_API": "http://127.0.0.1:9094", "IPFS_REPLICATION_MIN": "2"}, defaults={}
    )
    assert (config.cluster_api, config.replication) == ("http://127.0.0.1:9094", Replication(2, 2))
    wider = load_config(
        {"IPFS_CLUSTER_API": "/ip4/127.0.0.1/tcp/9094", "IPFS_REPLICATION_MAX": "3"}, defaults={}
    )
    assert wider.replication == Replication(2, 3)
    with pytest.raises(
        InvalidInput, match="IPFS_REPLICATION_MIN and IPFS_REPLICATION_MAX need IPFS_CLUSTER_API"
    ):
        load_config({"IPFS_REPLICATION_MIN": "2"}, defaults={})
    with pytest.raises(InvalidInput, match="IPFS_REPLICATION_MAX must be between 3 and 100"):
        load_config(
            {
                "IPFS_CLUSTER_API": "http://127.0.0.1:9094",
                "IPFS_REPLICATION_MIN": "3",
                "IPFS_REPLICATION_MAX": "2",
            },
            defaults={},
        )
    with pytest.raises(InvalidInput, match="IPFS_CLUSTER_API is not an RPC address"):
        load_config({"IPFS_CLUSTER_API": "http://x;rm -rf /"}, defaults={})


class HeldNode(KuboClient):
    """A datastore node on which every CID is already pinned and held: only the cluster acts."""

    def __init__(self) -> None:
        super().__init__(transport=FakeNode({}))  # every method used here is replaced
        self.holds: dict[str, list[str]] = {}
        self.unpinned: list[str] = []

    def pin_ls(
        self, cid: str | None = None, *, name: str | None = None, type: str = "recursive"
    ) -> list[Pin]:
        return [Pin(cid or CID, "recursive", held) for held in self.holds.get(cid or CID, [])]

    def files_rm(self, path: str, *, force: bool = False) -> None:
        _, _, _, cid, *name = path.split("/")
        names = self.holds.get(cid, [])
        if name and name[0] in names:
            names.remove(name[0])

    def files_cp(self, source: str, destination: str) -> None:
        parts = destination.split("/")
        self.holds.setdefault(parts[3], []).append(parts[4])

    def files_ls(self, path: str) -> list[str]:  # type: ignore[override]
        return list(self.holds.get(path.rsplit("/", 1)[-1], []))

    def pin_rm(self, cid: str) -> None:
        self.unpinned.append(cid)


def registry(
    tmp_path: Path, fake: Callable[[str, str, float], tuple[int, bytes]]
) -> tuple[ContentRegistry, HeldNode]:
    node = HeldNode()
    node.holds[CID] = []
    replicas = Replicas(ClusterClient("http://127.0.0.1:9094", transport=fake), TWO)
    return ContentRegistry(node, tmp_path, replicas), node


def test_a_version_the_cluster_cannot_replicate_leaves_no_pin_anywhere(tmp_path: Path) -> None:
    fake = FakeCluster([{"p1": "pinned", "p2": "pin_error", "p3": "pin_error"}])
    held, node = registry(tmp_path, fake)
    node.holds[CID] = ["one-ds1-img2-v1"]  # an import pins as it adds
    with pytest.raises(ClusterError):
        held.hold(CID, "one-ds1-img2-v1", log=lambda _: None, timeout=5, stall_timeout=5)
    assert fake.pinset == set()
    assert node.unpinned == [CID]


def test_a_cid_two_images_share_leaves_the_cluster_with_the_last_of_them(tmp_path: Path) -> None:
    fake = FakeCluster([{"p1": "pinned", "p2": "pinned", "p3": "remote"}])
    held, node = registry(tmp_path, fake)
    for name in ("one-ds1-img2-v1", "one-ds1-img3-v1"):
        node.holds[CID].append(name)
        held.hold(CID, name, log=lambda _: None, timeout=5, stall_timeout=5)
    assert fake.pinset == {CID}
    held.release(CID, "one-ds1-img2-v1")
    assert fake.pinset == {CID}
    held.release(CID, "one-ds1-img3-v1")
    assert fake.pinset == set()
    assert node.unpinned == [CID]


class FakePinset:
    """A cluster REST API with a pinset and a lost peer; ``recover`` makes its peers hold what they should."""

    def __init__(self, statuses: dict[str, dict[str, str]], allocations: dict[str, list[str]]) -> None:
        self.statuses = statuses
        self.allocations = allocations
        self.calls: list[tuple[str, str]] = []
        self.heals = True
        self.unlisted: set[str] = set()
        """Pins the peers report but the answering peer's own pinset lacks."""

    def __call__(self, method: str, path: str, timeout: float) -> tuple[int, bytes]:
        url = urlsplit(path)
        self.calls.append((method, url.path))
        if url.path == "/allocations":
            pins = [
                {"cid": cid, "replication_factor_min": 2, "replication_factor_max": 2}
                for cid in self.statuses
                if cid not in self.unlisted
            ]
            return 200, "\n".join(json.dumps(pin) for pin in pins).encode()
        if url.path == "/peers":
            peers = [{"id": "p1", "peername": "frontend"}, {"id": "p2", "error": "context deadline exceeded"}]
            return 200, "\n".join(json.dumps(peer) for peer in peers).encode()
        if url.path == "/pins":
            return 200, "\n".join(json.dumps(self._status(cid)) for cid in self.statuses).encode()
        cid = url.path.split("/")[2]
        if method == "POST" and self.heals:
            holding = list(dict.fromkeys([*(peer for peer in self.allocations[cid] if peer != "p2"), "p3"]))
            self.allocations[cid] = holding
            self.statuses[cid] = dict.fromkeys(holding, "pinned")
        return 200, json.dumps(self._status(cid)).encode()

    def _status(self, cid: str) -> dict[str, object]:
        names = {"p1": "frontend", "p2": "h2", "p3": "h3"}
        peers = {peer: {"peername": names[peer], "status": s} for peer, s in self.statuses[cid].items()}
        return {
            "cid": cid,
            "name": f"one-{cid[-4:]}",
            "allocations": self.allocations[cid],
            "peer_map": peers,
        }


OTHER = "bafkreie7ohywtosou76tasm7j63yigtzxe7d5zqus4zu3j6oltvgtibeom"
HELD = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


def test_recover_reallocates_what_a_lost_peer_held_recovers_what_a_wiped_node_lost_and_leaves_the_rest() -> (
    None
):
    fake = FakePinset(
        {
            CID: {"p1": "pinned", "p2": "cluster_error"},
            OTHER: {"p1": "unexpectedly_unpinned", "p3": "pinned"},
            HELD: {"p1": "pinned", "p3": "pinned"},
        },
        {CID: ["p1", "p2"], OTHER: ["p1", "p3"], HELD: ["p1", "p3"]},
    )
    client = ClusterClient("http://127.0.0.1:9094", transport=fake)

    assert "peer h2: context deadline exceeded" in replication.health(client).problems()
    assert replication.restore(client, timeout=5.0) == (sorted([CID, OTHER]), [])

    assert ("POST", f"/pins/{CID}") in fake.calls  # allocated again, away from the lost peer
    assert ("POST", f"/pins/{OTHER}") not in fake.calls  # its peers are members: recovered only
    assert {call for call in fake.calls if call[1].endswith("/recover")} == {
        ("POST", f"/pins/{CID}/recover"),
        ("POST", f"/pins/{OTHER}/recover"),
    }


def test_recover_names_each_pin_still_short_once_its_time_is_up() -> None:
    fake = FakePinset({OTHER: {"p1": "unexpectedly_unpinned", "p3": "pinned"}}, {OTHER: ["p1", "p3"]})
    fake.heals = False

    asked, left = replication.restore(ClusterClient("http://127.0.0.1:9094", transport=fake), timeout=0.1)

    assert (asked, left) == ([OTHER], [f"{OTHER} (one-{OTHER[-4:]}) is held by 1 of the 2 peers it needs"])


def test_recover_names_at_once_a_pin_other_peers_hold_that_the_frontend_peers_pinset_lacks() -> None:
    fake = FakePinset(
        {OTHER: {"p1": "unexpectedly_unpinned", "p3": "pinned"}, HELD: {"p2": "pinned", "p3": "pinned"}},
        {OTHER: ["p1", "p3"], HELD: ["p2", "p3"]},
    )
    fake.unlisted = {HELD}  # pinned by a second frontend while this peer was stopped, then distrusted
    client = ClusterClient("http://127.0.0.1:9094", transport=fake)
    unlisted = (
        f"{HELD} (one-{HELD[-4:]}) is held by h2, h3 but is not in this peer's pinset: another frontend's "
        "peer pinned it, an update this one has not taken (keep that frontend at `cluster init --frontends`, "
        "its peer running, until this one lists it; if that peer is gone, `ipfs-cluster-ctl pin add` it here)"
    )

    assert unlisted in replication.health(client).problems()
    assert replication.restore(client, timeout=60.0) == ([OTHER], [unlisted])
    assert not [call for call in fake.calls if HELD in call[1]]


PEER_IDS = {name: f"12D3KooW{name}" for name in ("frontend", "h1", "h2", "h3", "fe2")}
KUBO = "http://127.0.0.1:5001"
PLACES = replication.Places("", "/var/lib/one/.ipfs-cluster", "", "/var/lib/one/.ipfs", KUBO, KUBO)


def a_joined_cluster(tmp_path: Path) -> replication.Places:
    """The frontend's peer of a cluster ``init`` made of h1, h2 and the second frontend fe2."""
    folder = tmp_path / "frontend-peer"
    folder.mkdir()
    config = {
        "cluster": {
            "secret": "ab" * 32,
            "listen_multiaddress": ["/ip4/10.0.0.1/tcp/9096"],
            "peer_addresses": [f"/ip4/10.0.0.{n}/tcp/9096/p2p/{PEER_IDS[f'h{n}']}" for n in (1, 2)]
            + [f"/ip4/10.0.0.9/tcp/9096/p2p/{PEER_IDS['fe2']}"],
        },
        "consensus": {"crdt": {"trusted_peers": [PEER_IDS["frontend"], PEER_IDS["fe2"]]}},
        "api": {"restapi": {"http_listen_multiaddress": "/ip4/127.0.0.1/tcp/9094"}},
    }
    (folder / cluster_peer.CONFIG).write_text(json.dumps(config))
    return replace(PLACES, folder=str(folder), repo=str(tmp_path / "ipfs"))


def fake_nodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, PeerSettings]:
    """Every node answers ``InitPeer`` with its peer ID and records the settings it is configured with."""
    configured: dict[str, PeerSettings] = {}

    def call_all(
        nodes: list[str], request: Callable[[str], p.Request[Any]], progress: object = None
    ) -> dict[str, Reply[Any]]:
        replies: dict[str, Reply[Any]] = {}
        for name in nodes:
            sent = request(name)
            if isinstance(sent, p.InitPeer):
                kubo = p.Repository(
                    path=sent.repo, exists=True, swarm_addresses=(f"/ip4/10.0.1.{len(replies)}/tcp/4001",)
                )
                replies[name] = Reply(name, p.PeerCreated(created=False, peer_id=PEER_IDS[name], kubo=kubo))
            elif isinstance(sent, p.ConfigurePeer):
                configured[name] = sent.peer
                replies[name] = Reply(name, p.Reconfigured(changed=True, restart_pending=True))
        return replies

    monkeypatch.setattr(replication, "call_all", call_all)
    return configured


def test_cluster_join_adds_a_storage_host_keeping_the_peers_and_the_trust_the_frontends_peer_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    places = a_joined_cluster(tmp_path)
    configured = fake_nodes(monkeypatch)

    assert set(replication.join(places, ["h3"], None, None, new_cluster=False)) == {"frontend", "h3"}

    new, frontend = configured["h3"], configured["frontend"]
    known = {*cluster_peer.current_settings(Path(places.folder)).peers}
    assert set(new.peers) == {*known, f"/ip4/10.0.0.1/tcp/9096/p2p/{PEER_IDS['frontend']}"}
    assert set(frontend.peers) == {*known, f"/ip4/10.0.1.1/tcp/9096/p2p/{PEER_IDS['h3']}"}
    assert new.trusted == frontend.trusted == (PEER_IDS["frontend"], PEER_IDS["fe2"])
    assert (new.rest_api, frontend.rest_api) == ("", "/ip4/127.0.0.1/tcp/9094")
    # A second frontend joined again keeps serving its drivers.
    replication.join(places, ["fe2"], None, None, new_cluster=False)
    assert configured["fe2"].rest_api == "/ip4/127.0.0.1/tcp/9094"


def test_cluster_join_without_the_frontends_peer_is_one_line_and_touches_no_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = fake_nodes(monkeypatch)
    places = replace(PLACES, folder=str(tmp_path / "none"))

    with pytest.raises(InvalidInput, match="run `one-ipfs cluster init` first"):
        replication.join(places, ["h3"], None, None, new_cluster=False)
    assert configured == {}
