"""KuboClient against real Kubo daemons: private, loopback-only nodes started for this module."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from one_ipfs.errors import (
    CommandFailed,
    ContentNotFound,
    DaemonUnreachable,
    InvalidInput,
    IpfsTimeout,
    OneIpfsError,
    StorageError,
    StreamBroken,
)
from one_ipfs.ipfs import network
from one_ipfs.ipfs.fetching import Leaf, file_layout, reconnect_peering, scatter_fetch
from one_ipfs.ipfs.fleet import FetchOrder, Fleet
from one_ipfs.ipfs.gateway import Gateway, block_reader
from one_ipfs.ipfs.paths import RAW, SHA2_256, Cid
from one_ipfs.ipfs.rpc import ImportSettings, KuboClient, PinProgress
from testbed.kubo import KUBO, Node, wait_ready
from testbed.system import Process, spawn, stop_processes
from tests.support.nodes import settle

pytestmark = pytest.mark.bed

SETTINGS = ImportSettings()
MIB = 1 << 20
IMAGE_SIZE = 3 * MIB + 12345
"""Three full 1 MiB chunks and a short one."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalNode:
    """A private Kubo node on free loopback ports, in a folder of its own."""

    def __init__(
        self,
        folder: Path,
        swarm_key: bytes,
        *,
        offline: bool = False,
        auth: str | None = None,
        gateway: bool = True,
    ):
        repo = folder / "repo"
        repo.mkdir(parents=True)
        swarm = f"/ip4/127.0.0.1/tcp/{free_port()}"
        api_port, gateway_port = free_port(), free_port()
        peer_id = network.init_repository(KUBO, repo)
        settings = network.NodeSettings(
            swarm_addresses=(swarm,),
            api_address=f"/ip4/127.0.0.1/tcp/{api_port}",
            gateway_address=f"/ip4/127.0.0.1/tcp/{gateway_port}",
            storage_max="2GB",
        )
        network.configure_private_node(repo, swarm_key, settings)
        config = json.loads((repo / "config").read_text())
        if auth is not None:
            config["API"]["Authorizations"] = {"oneadmin": {"AuthSecret": auth, "AllowedPaths": ["/api/v0"]}}
        if not gateway:
            config["Addresses"]["Gateway"] = []
        (repo / "config").write_text(json.dumps(config))
        self.gateway_port = gateway_port if gateway else None
        self.node = Node(folder.name, repo, f"http://127.0.0.1:{api_port}", "", peer_id, swarm, None)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **network.daemon_environment(repo)}
        argv: list[str | os.PathLike[str]] = [KUBO, "daemon", *(["--offline"] if offline else [])]
        self.process: Process = spawn(
            f"{folder.name}/kubo", argv, log=self.node.log, env=env, marker=str(folder)
        )[0]

    def wait_ready(self) -> LocalNode:
        wait_ready(self.node, self.process, time.monotonic() + 30)
        return self

    def client(self, timeout: float = 30.0, auth: str | None = None) -> KuboClient:
        return KuboClient(self.node.api, timeout=timeout, auth=auth)

    def cli(self, *args: str) -> str:
        """The ``ipfs`` command line on this node, as an admin would use it."""
        env = {**os.environ, **network.daemon_environment(self.node.repo)}
        result = subprocess.run(
            [KUBO, *args], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        return result.stdout.strip()

    def stop(self) -> None:
        stop_processes([self.process])


@pytest.fixture(scope="module")
def swarm_key() -> bytes:
    return network.generate_swarm_key()


@pytest.fixture(scope="module")
def kubo_node(tmp_path_factory: pytest.TempPathFactory, swarm_key: bytes) -> Iterator[LocalNode]:
    node = LocalNode(tmp_path_factory.mktemp("frontend"), swarm_key)
    try:
        yield node.wait_ready()
    finally:
        node.stop()


@pytest.fixture(scope="module")
def kubo(kubo_node: LocalNode) -> KuboClient:
    return kubo_node.client()


@pytest.fixture(scope="module")
def peer_node(tmp_path_factory: pytest.TempPathFactory, swarm_key: bytes) -> Iterator[LocalNode]:
    """A second member of the same private network (a hypervisor host's node)."""
    node = LocalNode(tmp_path_factory.mktemp("host"), swarm_key)
    try:
        yield node.wait_ready()
    finally:
        node.stop()


@pytest.fixture
def throwaway_node(tmp_path: Path, swarm_key: bytes) -> Iterator[Callable[..., LocalNode]]:
    """Nodes a test may break (kill, run offline, lock with authorization)."""
    started: list[LocalNode] = []

    def start(*, offline: bool = False, auth: str | None = None, gateway: bool = True) -> LocalNode:
        node = LocalNode(
            tmp_path / f"node{len(started)}", swarm_key, offline=offline, auth=auth, gateway=gateway
        )
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(IMAGE_SIZE))
    return path


def unknown_cid(client: KuboClient) -> str:
    """A CID no node has: random bytes, hashed but never stored."""
    return client.add(io.BytesIO(os.urandom(4096)), settings=SETTINGS, only_hash=True).cid


def image_with_a_missing_block(client: KuboClient, node: LocalNode) -> tuple[str, str]:
    """An image whose first block is local but whose second one is gone: reading it stalls mid-way.

    Returns the image's CID and the missing block's.
    """
    cid = client.add(io.BytesIO(os.urandom(IMAGE_SIZE)), settings=SETTINGS, pin=False).cid
    missing = node.cli("refs", cid).split()[1]
    node.cli("block", "rm", missing)
    return cid, missing


# Importing ---------------------------------------------------------------------------------------------


def test_add_from_a_path_gives_the_cid_ipfs_add_computes_with_the_same_settings(
    kubo: KuboClient, kubo_node: LocalNode, image: Path
) -> None:
    expected = kubo_node.cli(
        "add", "--cid-version=1", "--raw-leaves", "--chunker=size-1048576", "-Q", "--only-hash", str(image)
    )
    added = kubo.add(image, settings=SETTINGS)
    assert added.cid == expected
    assert added.size == IMAGE_SIZE


def test_add_from_a_file_object_gives_the_same_cid_as_from_its_path(kubo: KuboClient, image: Path) -> None:
    with image.open("rb") as stream:
        from_stream = kubo.add(stream, settings=SETTINGS, pin=False)
    assert from_stream == kubo.add(image, settings=SETTINGS, only_hash=True)


def test_add_reports_progress_up_to_the_image_size(kubo: KuboClient, image: Path) -> None:
    seen: list[int] = []
    kubo.add(image, settings=SETTINGS, pin=False, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == IMAGE_SIZE


def test_add_with_only_hash_stores_nothing(kubo: KuboClient, kubo_node: LocalNode) -> None:
    cid = unknown_cid(kubo)
    with pytest.raises(subprocess.CalledProcessError):
        kubo_node.cli("block", "stat", "--offline", cid)


def test_add_pins_the_image_under_its_name(kubo: KuboClient, image: Path) -> None:
    added = kubo.add(image, settings=SETTINGS, pin_name="one-ds100-img7-v1")
    assert [(pin.cid, pin.name) for pin in kubo.pin_ls(name="one-ds100-img7-v1")] == [
        (added.cid, "one-ds100-img7-v1")
    ]


def test_add_of_a_missing_file_is_a_storage_error(kubo: KuboClient, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"disk\.raw"):
        kubo.add(tmp_path / "disk.raw", settings=SETTINGS)


def test_add_reports_a_source_that_fails_mid_way(kubo: KuboClient) -> None:
    class FailingSource(io.RawIOBase):
        served = 0

        def read(self, size: int = -1) -> bytes:
            self.served += 1
            if self.served > 2:
                raise OSError(5, "Input/output error")
            return os.urandom(MIB)

    with pytest.raises(StorageError, match="Input/output error"):
        kubo.add(FailingSource(), settings=SETTINGS)  # type: ignore[arg-type]


def test_add_from_a_source_that_stalls_ends_after_the_client_timeout(kubo_node: LocalNode) -> None:
    released = threading.Event()

    class StallingSource(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            released.wait(30)
            return b""

    try:
        with pytest.raises(IpfsTimeout, match="made no progress for 1 s"):
            kubo_node.client(timeout=1).add(StallingSource(), settings=SETTINGS)  # type: ignore[arg-type]
    finally:
        released.set()


# Reading -----------------------------------------------------------------------------------------------


def test_cat_returns_the_whole_image(kubo: KuboClient, image: Path) -> None:
    cid = kubo.add(image, settings=SETTINGS).cid
    assert b"".join(kubo.cat(f"/ipfs/{cid}")) == image.read_bytes()


def test_cat_reads_a_range(kubo: KuboClient, image: Path) -> None:
    cid = kubo.add(image, settings=SETTINGS).cid
    data = image.read_bytes()
    assert (
        b"".join(kubo.cat(f"/ipfs/{cid}", offset=MIB - 10, length=MIB + 20)) == data[MIB - 10 : 2 * MIB + 10]
    )
    assert b"".join(kubo.cat(f"/ipfs/{cid}", offset=3 * MIB)) == data[3 * MIB :]


def test_cat_yields_pieces_of_the_chunk_size(kubo: KuboClient, image: Path) -> None:
    cid = kubo.add(image, settings=SETTINGS).cid
    sizes = [len(piece) for piece in kubo.cat(f"/ipfs/{cid}", chunk_size=MIB)]
    assert sizes == [MIB, MIB, MIB, 12345]


def test_closing_cat_early_cancels_the_read_in_kubo(kubo: KuboClient, kubo_node: LocalNode) -> None:
    cid, missing = image_with_a_missing_block(kubo, kubo_node)
    reader = kubo.cat(f"/ipfs/{cid}", chunk_size=64 * 1024)
    assert len(next(reader)) == 64 * 1024
    settle(lambda: missing in kubo_node.cli("bitswap", "wantlist"), "Kubo asking its peers for the block")
    reader.close()
    settle(lambda: missing not in kubo_node.cli("bitswap", "wantlist"), "Kubo cancelling the want")


# Pins --------------------------------------------------------------------------------------------------


def test_pin_add_fetches_an_image_from_a_peer_under_its_name(
    kubo: KuboClient, peer_node: LocalNode, image: Path
) -> None:
    host = peer_node.client()
    host.swarm_connect(kubo.id().addresses[0])
    cid = kubo.add(image, settings=SETTINGS).cid
    host.pin_add(cid, name="one-vm42-disk0", timeout=30)
    assert [(pin.cid, pin.type, pin.name) for pin in host.pin_ls(cid)] == [
        (cid, "recursive", "one-vm42-disk0")
    ]
    assert b"".join(host.cat(f"/ipfs/{cid}", timeout=10)) == image.read_bytes()


def image_on_a_peer(kubo: KuboClient, peer_node: LocalNode, image: Path) -> tuple[KuboClient, str, int]:
    """A host connected to ``kubo``, which alone holds ``image``: the host's client, the CID, the size."""
    host = peer_node.client()
    host.swarm_connect(kubo.id().addresses[0])
    return host, kubo.add(image, settings=SETTINGS).cid, image.stat().st_size


def test_scatter_fetch_brings_every_block_of_an_image_from_a_peer(
    kubo: KuboClient, peer_node: LocalNode, image: Path
) -> None:
    host, cid, size = image_on_a_peer(kubo, peer_node, image)
    leaves = kubo.dag_links(cid)
    assert [leaf.size for leaf in leaves] == [MIB] * (size // MIB) + ([size % MIB] if size % MIB else [])
    assert kubo.block_stat(leaves[0].cid) == MIB

    layout = file_layout(host, cid, size, stall_timeout=10, deadline=time.monotonic() + 30)
    scatter_fetch(host, layout, log=lambda _: None, timeout=30, stall_timeout=10)

    local = host.files_stat(f"/ipfs/{cid}", with_local=True)
    assert local.local is True
    assert (local.size_local or 0) >= size


def test_an_image_assembled_from_its_leaves_as_they_arrive_is_byte_identical(
    kubo: KuboClient, peer_node: LocalNode, image: Path
) -> None:
    host, cid, size = image_on_a_peer(kubo, peer_node, image)
    assembled = bytearray(size)
    read = block_reader(host)

    def place(leaf: Leaf, data: bytes | None) -> None:
        assert data is None  # a fetch alone reads every block by bitswap
        data = read(leaf.cid, 10)
        for offset in leaf.offsets:
            assembled[offset : offset + len(data)] = data

    layout = file_layout(host, cid, size, stall_timeout=10, deadline=time.monotonic() + 30)
    scatter_fetch(host, layout, log=lambda _: None, timeout=30, stall_timeout=10, sink=place)

    assert layout.assemblable
    assert bytes(assembled) == image.read_bytes()


def test_blocks_are_read_through_the_nodes_gateway_or_without_one_through_its_api(
    kubo: KuboClient, kubo_node: LocalNode, throwaway_node: Callable[..., LocalNode]
) -> None:
    block = os.urandom(5000)
    cid = kubo.add(io.BytesIO(block), settings=SETTINGS).cid
    without = throwaway_node(offline=True, gateway=False).wait_ready().client()
    without.add(io.BytesIO(block), settings=SETTINGS)

    assert kubo.gateway_address() == ("127.0.0.1", kubo_node.gateway_port)
    assert without.gateway_address() is None
    assert block_reader(kubo)(cid, 10) == block_reader(without)(cid, 10) == block


def test_a_gateway_that_lacks_the_block_answers_with_one_line(
    throwaway_node: Callable[..., LocalNode],
) -> None:
    node = throwaway_node(offline=True).wait_ready().client()
    missing = unknown_cid(node)

    with pytest.raises(OneIpfsError) as failure:
        block_reader(node)(missing, 5)

    assert missing in str(failure.value)
    assert "\n" not in str(failure.value)


def raw_cid(data: bytes) -> str:
    return Cid(1, RAW, SHA2_256, hashlib.sha256(data).digest()).v1_base32()


def test_a_block_another_host_sends_is_refused_unless_it_matches_its_cid() -> None:
    block, paths = os.urandom(5000), []

    class LyingGateway(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(block)))
            self.end_headers()
            self.wfile.write(block)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LyingGateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gateway, peer = Gateway("127.0.0.1", server.server_address[1]), "12D3KooWHolder"
    try:
        assert gateway.peer_block(peer, raw_cid(block), 5) == block
        with pytest.raises(StreamBroken, match=f"^peer {peer} sent other bytes than block "):
            gateway.peer_block(peer, raw_cid(b"another block"), 5)
        with pytest.raises(InvalidInput, match="is no peer ID"):
            gateway.peer_block("../ipfs", raw_cid(block), 5)
    finally:
        server.shutdown()
    assert paths[0] == f"/p2p/{peer}/x/one-ipfs-blocks/http/ipfs/{raw_cid(block)}?format=raw"
    assert len(paths) == 2


def test_pin_add_reports_progress_in_nodes_and_bytes(kubo: KuboClient, kubo_node: LocalNode) -> None:
    cid, _ = image_with_a_missing_block(kubo, kubo_node)
    seen: list[PinProgress] = []
    with pytest.raises(IpfsTimeout):
        kubo.pin_add(cid, progress=seen.append, timeout=2)
    assert seen[-1].nodes >= 2
    assert seen[-1].bytes >= MIB


def test_an_exception_from_pin_progress_cancels_the_pin(kubo: KuboClient, kubo_node: LocalNode) -> None:
    cid, missing = image_with_a_missing_block(kubo, kubo_node)

    def give_up(progress: PinProgress) -> None:
        if missing in kubo_node.cli("bitswap", "wantlist"):
            raise IpfsTimeout("no block arrived")

    with pytest.raises(IpfsTimeout, match="no block arrived"):
        kubo.pin_add(cid, progress=give_up, timeout=30)
    settle(lambda: missing not in kubo_node.cli("bitswap", "wantlist"), "Kubo cancelling the pin")
    assert kubo.pin_ls(cid) == []


def test_pin_ls_lists_pins_with_their_names(kubo: KuboClient, image: Path) -> None:
    cid = kubo.add(image, settings=SETTINGS, pin=False).cid
    kubo.pin_add(cid, name="one-ds100-img8-v1")
    assert (cid, "recursive", "one-ds100-img8-v1") in [(p.cid, p.type, p.name) for p in kubo.pin_ls()]


def test_pin_ls_of_a_cid_that_is_not_pinned_is_empty(kubo: KuboClient) -> None:
    assert kubo.pin_ls(unknown_cid(kubo)) == []


def test_pin_rm_unpins(kubo: KuboClient, image: Path) -> None:
    cid = kubo.add(image, settings=SETTINGS).cid
    kubo.pin_rm(cid)
    assert kubo.pin_ls(cid) == []


def test_pin_rm_of_a_cid_that_is_not_pinned_is_content_not_found(kubo: KuboClient) -> None:
    with pytest.raises(ContentNotFound, match="not pinned"):
        kubo.pin_rm(unknown_cid(kubo))


# Metadata ----------------------------------------------------------------------------------------------


def test_files_stat_gives_the_image_size(kubo: KuboClient, image: Path) -> None:
    cid = kubo.add(image, settings=SETTINGS).cid
    stat = kubo.files_stat(f"/ipfs/{cid}")
    assert (stat.cid, stat.size, stat.type, stat.blocks) == (cid, IMAGE_SIZE, "file", 4)
    assert stat.cumulative_size > IMAGE_SIZE
    assert (stat.local, stat.size_local) == (None, None)


def test_files_stat_with_local_tells_how_much_a_host_holds(
    kubo: KuboClient, peer_node: LocalNode, image: Path
) -> None:
    host = peer_node.client()
    host.swarm_connect(kubo.id().addresses[0])
    cid = kubo.add(image, settings=SETTINGS).cid
    before = host.files_stat(f"/ipfs/{cid}", with_local=True, timeout=10)
    assert before.local is False
    assert before.size_local is not None and before.size_local < before.cumulative_size
    host.pin_add(cid, timeout=30)
    after = host.files_stat(f"/ipfs/{cid}", with_local=True)
    assert (after.local, after.size_local) == (True, after.cumulative_size)


def test_mfs_entries_can_be_made_listed_and_removed(kubo: KuboClient, image: Path) -> None:
    cid = kubo.add(image, settings=SETTINGS, pin=False).cid
    kubo.files_cp(f"/ipfs/{cid}", f"/one-ipfs/refs/{cid}/ds100-img7-v1")
    assert kubo.files_ls(f"/one-ipfs/refs/{cid}") == [("ds100-img7-v1", cid)]
    kubo.files_rm(f"/one-ipfs/refs/{cid}", force=True)
    kubo.files_rm(f"/one-ipfs/refs/{cid}", force=True)
    with pytest.raises(ContentNotFound):
        kubo.files_ls(f"/one-ipfs/refs/{cid}")


def test_repo_stat_reports_the_repository_size_and_limit(kubo: KuboClient, image: Path) -> None:
    kubo.add(image, settings=SETTINGS)
    stat = kubo.repo_stat()
    assert stat.repo_size > IMAGE_SIZE
    assert stat.storage_max == 2_000_000_000


def test_repo_gc_removes_unpinned_blocks(kubo: KuboClient, kubo_node: LocalNode, image: Path) -> None:
    cid = kubo.add(image, settings=SETTINGS, pin=False).cid
    kubo_node.cli("block", "stat", "--offline", cid)
    kubo.repo_gc()
    with pytest.raises(subprocess.CalledProcessError):
        kubo_node.cli("block", "stat", "--offline", cid)


def test_name_publish_then_resolve_gives_the_published_path(kubo: KuboClient, image: Path) -> None:
    cid = kubo.add(image, settings=SETTINGS).cid
    name = kubo.name_publish(f"/ipfs/{cid}")
    assert kubo.name_resolve(f"/ipns/{name}", timeout=10) == f"/ipfs/{cid}"


def test_id_and_version_describe_the_node(kubo: KuboClient, kubo_node: LocalNode) -> None:
    node = kubo.id()
    assert node.peer_id == kubo_node.node.peer_id
    assert f"{kubo_node.node.swarm_address}/p2p/{node.peer_id}" in node.addresses
    assert node.agent_version.startswith("kubo/")
    assert kubo.version() == kubo_node.cli("version", "--number")


def test_an_api_given_as_multiaddr_reaches_the_same_node(kubo: KuboClient, kubo_node: LocalNode) -> None:
    port = kubo_node.node.api_port
    assert KuboClient(f"/ip4/127.0.0.1/tcp/{port}").id() == kubo.id()


# Peers -------------------------------------------------------------------------------------------------


def test_swarm_connect_makes_each_node_list_the_other_in_swarm_peers(
    kubo: KuboClient, peer_node: LocalNode
) -> None:
    kubo.swarm_connect(peer_node.node.multiaddr)
    assert (peer_node.node.peer_id, peer_node.node.swarm_address) in kubo.swarm_peers()
    assert kubo.id().peer_id in [peer for peer, _ in peer_node.client().swarm_peers()]


def connections_to(node: LocalNode) -> set[str]:
    """Kernel inodes of the established TCP connections to or from a node's swarm port (a new
    connection has a new inode, even between the same two ports)."""
    port = node.node.swarm_address.rsplit("/", 1)[1]
    table = subprocess.run(
        ["ss", "-tnHe", "state", "established", f"( sport = :{port} or dport = :{port} )"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return set(re.findall(r"ino:(\d+)", table))


def test_a_peering_peer_gets_a_new_connection_and_bitswap_counts_the_blocks_it_then_sends(
    kubo: KuboClient, kubo_node: LocalNode, peer_node: LocalNode, image: Path
) -> None:
    host = peer_node.client()
    peer_node.cli("swarm", "peering", "add", kubo_node.node.multiaddr)
    try:
        settle(lambda: kubo_node.node.peer_id in dict(host.swarm_peers()), "the peering connection")
        before = connections_to(kubo_node)

        reconnect_peering(host)

        assert kubo_node.node.peer_id in dict(host.swarm_peers())
        assert connections_to(kubo_node) - before
        assert not connections_to(kubo_node) & before
        received, sent = host.bitswap_blocks_moved()
        cid = kubo.add(image, settings=SETTINGS).cid
        assert b"".join(host.cat(f"/ipfs/{cid}", timeout=30)) == image.read_bytes()
        assert host.bitswap_blocks_moved() == (received + 5, sent)  # four leaves and the root
        assert kubo.bitswap_blocks_moved()[1] >= 5
    finally:
        peer_node.cli("swarm", "peering", "rm", kubo_node.node.peer_id)


def test_routing_findprovs_finds_the_node_that_holds_an_image(
    kubo: KuboClient, peer_node: LocalNode, image: Path
) -> None:
    host = peer_node.client()
    host.swarm_connect(kubo.id().addresses[0])
    cid = kubo.add(image, settings=SETTINGS).cid
    providers: list[str] = []

    def found() -> bool:
        providers[:] = host.routing_findprovs(cid, num_providers=1, timeout=2)
        return bool(providers)

    settle(found, "the frontend's node showing up as a provider")
    assert providers == [kubo.id().peer_id]


def test_a_pubsub_message_reaches_a_subscriber_with_its_senders_peer_id(
    kubo: KuboClient, peer_node: LocalNode
) -> None:
    host = peer_node.client()
    host.swarm_connect(kubo.id().addresses[0])
    subscription = host.pubsub_subscribe("one-ipfs/test/greeting", timeout=30)
    received: list[tuple[str, bytes]] = []
    listener = threading.Thread(target=lambda: received.extend(subscription.messages()), daemon=True)
    listener.start()

    def arrived() -> bool:  # a subscription takes a moment to reach the publisher
        kubo.pubsub_publish("one-ipfs/test/greeting", b"3")
        return bool(received)

    try:
        settle(arrived, "the message reaching the subscriber")
    finally:
        subscription.close()
        listener.join(10)
    assert not listener.is_alive()
    assert received[0] == (kubo.id().peer_id, b"3")


def test_hosts_fetching_one_image_at_once_hear_of_each_other(
    kubo: KuboClient, peer_node: LocalNode, throwaway_node: Callable[..., LocalNode]
) -> None:
    first, second = peer_node.client(), throwaway_node().wait_ready().client()
    second.swarm_connect(peer_node.node.multiaddr)
    leaves = [f"bafkleaf{i}" for i in range(16)]
    orders = []
    with ExitStack() as fleets:
        for host in (first, second):
            order = FetchOrder(leaves, host.id().peer_id, alone_at_once=8)
            fleets.enter_context(Fleet(host, "bafyimage", order, timeout=30, log=lambda _: None))
            orders.append(order)
        settle(lambda: all(len(order.members) == 2 for order in orders), "each host hearing of the other")
    assert orders[0].members == orders[1].members == sorted([first.id().peer_id, second.id().peer_id])


def test_two_hosts_fetching_one_image_at_once_both_hold_all_of_it(
    kubo: KuboClient, peer_node: LocalNode, throwaway_node: Callable[..., LocalNode], image: Path
) -> None:
    first, cid, size = image_on_a_peer(kubo, peer_node, image)
    second = throwaway_node().wait_ready().client()
    for address in (kubo.id().addresses[0], peer_node.node.multiaddr):
        second.swarm_connect(address)

    def fetch(host: KuboClient) -> None:
        layout = file_layout(host, cid, size, stall_timeout=10, deadline=time.monotonic() + 30)
        scatter_fetch(host, layout, log=lambda _: None, timeout=30, stall_timeout=10, fleet=True)

    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(fetch, host) for host in (first, second)]:
            done.result()

    for host in (first, second):
        assert host.files_stat(f"/ipfs/{cid}", with_local=True).local is True


def test_a_leaf_is_read_from_its_holder_which_never_fetches_for_others_nor_is_asked_again_once_failed(
    kubo: KuboClient, peer_node: LocalNode, throwaway_node: Callable[..., LocalNode], image: Path
) -> None:
    holder, cid, size = image_on_a_peer(kubo, peer_node, image)
    layout = file_layout(holder, cid, size, stall_timeout=10, deadline=time.monotonic() + 30)
    held, lacking = layout.leaves[0].cid, layout.leaves[1].cid
    holder.block_stat(held, timeout=10)  # the frontend alone holds the other leaves
    reader = throwaway_node().wait_ready().client()
    for address in (kubo.id().addresses[0], peer_node.node.multiaddr):
        reader.swarm_connect(address)

    logged: list[str] = []
    with ExitStack() as fleets:
        for host in (holder, reader):
            order = FetchOrder([leaf.cid for leaf in layout.leaves], host.id().peer_id, alone_at_once=8)
            fleet = fleets.enter_context(Fleet(host, cid, order, timeout=30, log=logged.append))
        brought = fleet.read_from(holder.id().peer_id, held, 10)
        not_brought = fleet.read_from(holder.id().peer_id, lacking, 10)
        not_asked_again = fleet.read_from(holder.id().peer_id, held, 10)

    summary = "1 block(s) came from the other hosts that held them; 1 host(s) failed to send theirs"
    assert any(line.startswith(summary) for line in logged), logged
    assert brought == kubo.block_get(held)  # stored by the fetch it is for (test_fetching_unit.py)
    assert not_brought is None
    assert not_asked_again is None
    with pytest.raises(subprocess.CalledProcessError):
        peer_node.cli("block", "stat", "--offline", lacking)


# Errors ------------------------------------------------------------------------------------------------


def test_a_closed_port_is_daemon_unreachable() -> None:
    port = free_port()
    with pytest.raises(DaemonUnreachable, match=f"127.0.0.1:{port}.*may be down"):
        KuboClient(f"http://127.0.0.1:{port}").version()


def test_a_name_that_resolves_nowhere_is_content_not_found(kubo: KuboClient) -> None:
    name = "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8"
    with pytest.raises(ContentNotFound, match="could not resolve name"):
        kubo.name_resolve(f"/ipns/{name}", timeout=2)


def test_pinning_content_nobody_has_times_out_in_kubo(kubo: KuboClient) -> None:
    with pytest.raises(IpfsTimeout, match="gave up after 2 s"):
        kubo.pin_add(unknown_cid(kubo), timeout=2)


def test_a_call_without_its_own_timeout_ends_at_the_client_deadline(kubo_node: LocalNode) -> None:
    client = kubo_node.client(timeout=1)
    with pytest.raises(IpfsTimeout, match=r"did not answer within 1 s"):
        client.pin_add(unknown_cid(client))


def test_a_rejected_command_is_command_failed_with_kubos_message(kubo: KuboClient) -> None:
    with pytest.raises(CommandFailed, match=r"^ipfs add: unrecognized chunker option: rabbit$"):
        kubo.add(io.BytesIO(os.urandom(3 * MIB)), settings=ImportSettings(chunker="rabbit"))


def test_a_stream_that_kubo_cannot_finish_is_stream_broken(
    throwaway_node: Callable[..., LocalNode],
) -> None:
    node = throwaway_node(offline=True).wait_ready()
    client = node.client()
    cid, _ = image_with_a_missing_block(client, node)
    received: list[bytes] = []
    with pytest.raises(StreamBroken, match=f"ipfs cat /ipfs/{cid}: the stream broke after"):
        received.extend(client.cat(f"/ipfs/{cid}", chunk_size=64 * 1024))
    assert len(b"".join(received)) >= 64 * 1024


def test_a_daemon_killed_mid_stream_is_stream_broken(throwaway_node: Callable[..., LocalNode]) -> None:
    node = throwaway_node().wait_ready()
    client = node.client()
    cid = client.add(io.BytesIO(bytes(64 * MIB)), settings=SETTINGS).cid
    reader = client.cat(f"/ipfs/{cid}", chunk_size=64 * 1024)
    next(reader)
    os.kill(node.process.pid, signal.SIGKILL)
    with pytest.raises(StreamBroken, match="stream broke"):
        for _ in reader:
            pass


def test_kubo_with_api_authorizations_accepts_the_authorization_header(
    throwaway_node: Callable[..., LocalNode],
) -> None:
    node = throwaway_node(auth="bearer:s3cret")
    client = node.client(auth="Bearer s3cret")
    settle(lambda: _answers(client), "the daemon answering")
    assert client.id().peer_id == node.node.peer_id
    with pytest.raises(CommandFailed, match="refused access"):
        node.client().id()


def _answers(client: KuboClient) -> bool:
    try:
        client.version()
    except DaemonUnreachable:
        return False
    return True
