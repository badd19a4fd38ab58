"""Images that survive losing the frontend's IPFS repository or a storage peer, under genuine oned: a
datastore created with ``onedatastore create`` carrying ``IPFS_CLUSTER_API`` and ``IPFS_REPLICATION_MIN=2``
beside an IPFS Cluster of the frontend's node and two hosts' (h1, h2), set up as an admin does (``one-ipfs
cluster init``; the bed runs the peers it configured, the frontend's in a network namespace of its own). Every
image and every saved persistent version is held by two peers before oned hears it is saved; a lost storage
peer's versions are repinned on the third; the frontend's repository is then lost for good, and every image
still deploys on hosts that never held it, and a persistent disk is still saved back, held by two peers. With
h2's node as a second frontend's, that frontend's drivers deploy and save every version once the first
frontend's node is lost for good. These tests lose the frontend's repository, so they run after every other
test of their bed (``wipes_frontend``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from one_ipfs.errors import ClusterError
from one_ipfs.ipfs import cluster_peer
from one_ipfs.ipfs.cluster import ClusterClient
from testbed import cluster
from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.genuine.cloud import driver_line
from testbed.one import Datastore, OneFailure, VirtualMachine
from tests.opennebula.test_admin_images import one_ipfs
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import held_bytes, pins, settle
from tests.support.vms import SETTINGS, deploy_checked, disk_path, guest_change, write_into

pytestmark = [pytest.mark.bed, pytest.mark.opennebula, pytest.mark.wipes_frontend]
STORAGE_HOSTS = ("h1", "h2")


CLUSTER_FOLDER = ".ipfs-cluster"
"""Where ``one-ipfs cluster init`` puts each peer by default: oneadmin's home (/var/lib/one) on every node."""


def cluster_init(bed: Bed, one: GenuineOne, *options: str) -> tuple[int, str, str]:
    hosts = ",".join(STORAGE_HOSTS)
    return one_ipfs(
        one,
        "cluster",
        "init",
        "--hosts",
        hosts,
        "--address",
        bed.cluster_address,
        "--api",
        bed.frontend.api,
        *options,
    )


@pytest.fixture(scope="module")
def cluster_api(bed: Bed, one: GenuineOne) -> str:
    code, _, err = cluster_init(bed, one)
    assert code == 0, err
    folders = {name: bed.host(name).var_lib_one / CLUSTER_FOLDER for name in STORAGE_HOSTS}
    frontend = bed.frontend_var_lib_one / CLUSTER_FOLDER
    for folder in (frontend, *folders.values()):
        cluster.quicken(folder, ping=True)
    return bed.run_cluster(frontend, folders)


@pytest.fixture(scope="module")
def replicated_ds(bed: Bed, one: GenuineOne, cluster_api: str) -> Datastore:
    template = ipfs_datastore_template(
        bed, "replicated", IPFS_CLUSTER_API=cluster_api, IPFS_REPLICATION_MIN="2", IPFS_TRANSFER_TIMEOUT="120"
    )
    return one.datastore_create(template)


def replicas(cluster_api: str, cid: str) -> int:
    return ClusterClient(cluster_api).status(cid).count("pinned")


def holders(cluster_api: str, cid: str) -> set[str]:
    return set(ClusterClient(cluster_api).status(cid).holders())


def test_an_image_the_cluster_cannot_replicate_as_asked_fails_with_one_line_and_leaves_no_pin(
    bed: Bed, one: GenuineOne, cluster_api: str, local_dir: Path
) -> None:
    greedy = one.datastore_create(
        ipfs_datastore_template(bed, "greedy", IPFS_CLUSTER_API=cluster_api, IPFS_REPLICATION_MIN="4")
    )
    (local_dir / "greedy.img").write_bytes(disk_bytes(1 << 20, seed=70))
    (local_dir / "greedy.img").chmod(0o644)
    cid = (
        bed.frontend.client().add(local_dir / "greedy.img", settings=SETTINGS, pin=False, only_hash=True).cid
    )
    before = pins(bed.frontend)

    with pytest.raises(OneFailure) as failure:
        one.image_create(greedy, name="four-copies", path=str(local_dir / "greedy.img"))

    assert "not enough peers to allocate" in driver_line(str(failure.value))
    assert pins(bed.frontend) == before
    assert replicas(cluster_api, cid) == 0


@pytest.mark.current_version  # IPFS Cluster does not depend on OpenNebula's version
def test_cluster_admin_status_doctor_and_images_follow_a_lost_storage_peer_until_it_is_repinned_elsewhere(
    bed: Bed, one: GenuineOne, replicated_ds: Datastore, cluster_api: str, local_dir: Path
) -> None:
    service = (bed.frontend_var_lib_one / CLUSTER_FOLDER / "service.json").read_bytes()
    for bad in (
        ("--hosts", "h1;reboot"),
        ("--frontends", "h2;reboot"),
        ("--rest-api", "/ip4/0.0.0.0/tcp/9094"),
        ("--unit", "../x"),
    ):
        code, out, err = one_ipfs(one, "cluster", "init", "--hosts", "h1", *bad)
        assert (code, out, len(err.strip().splitlines())) == (1, "", 1), err
    code, out, err = cluster_init(bed, one)
    assert code == 0, err
    assert "changed" not in out.replace("unchanged", "")
    code, out, err = one_ipfs(one, "cluster", "join", "h2", "--api", bed.frontend.api)
    assert code == 0, err
    assert "changed" not in out.replace("unchanged", "")
    assert (bed.frontend_var_lib_one / CLUSTER_FOLDER / "service.json").read_bytes() == service
    code, out, err = one_ipfs(one, "cluster", "status", "--cluster-api", cluster_api, "--json")
    assert code == 0, err
    assert sorted((peer["name"], peer["error"]) for peer in json.loads(out)["peers"]) == [
        ("frontend", ""),
        ("h1", ""),
        ("h2", ""),
    ]
    data = disk_bytes(4 << 20, seed=73)
    (local_dir / "spread.img").write_bytes(data)
    (local_dir / "spread.img").chmod(0o644)
    image = one.image_create(replicated_ds, name="replicated-spread", path=str(local_dir / "spread.img"))
    cid = one.image(image).template["IPFS_CID"]
    everywhere_ds = one.datastore_create(
        ipfs_datastore_template(bed, "everywhere", IPFS_CLUSTER_API=cluster_api, IPFS_REPLICATION_MIN="3")
    )
    everywhere = one.image_create(everywhere_ds, name="replicated-everywhere", type="DATABLOCK", size_mb=1)
    everywhere_cid = one.image(everywhere).template["IPFS_CID"]
    before = holders(cluster_api, cid)
    code, out, err = one_ipfs(one, "images", "--hosts", "h3", "--json")
    assert code == 0, err
    row = next(row for row in json.loads(out)["images"] if row["id"] == image.id)
    assert (row["replication_min"], set(row["versions"][0]["replicas"])) == (2, before)
    lost = sorted(before - {"frontend"})[0]
    (spare,) = {"frontend", *STORAGE_HOSTS} - before

    bed.stop_cluster_peer(lost)
    bed.stop_node(bed.host(lost).node)
    try:
        # The version on every peer has no peer to go to: it stays under-replicated while the peer is lost.
        code, out, err = one_ipfs(one, "doctor", "--hosts", "h3", "--api", bed.frontend.api, "--json")
        named = [p["what"] for p in json.loads(out)["problems"] if p["check"] == "replication"]
        assert code == 1
        held = f"image {everywhere.id} (replicated-everywhere) version 1 ({everywhere_cid}) is held by 2 of"
        assert any(what.startswith(f"{held} the 3") for what in named), named
        code, out, err = one_ipfs(one, "cluster", "status", "--cluster-api", cluster_api, "--json")
        assert code == 1
        assert any(everywhere_cid in problem for problem in json.loads(out)["problems"])

        settle(lambda: holders(cluster_api, cid) >= {spare}, f"the repin of {cid} on {spare}", limit=120)
        node = bed.frontend if spare == "frontend" else bed.host(spare).node
        assert sha256(held_bytes(node, cid)) == sha256(data)
        assert len(holders(cluster_api, cid)) >= 2
    finally:
        bed.start_node(bed.host(lost).node)
        bed.start_cluster_peer(lost)
    # `oneimage delete` unpins through the cluster too: no peer is asked to keep the version any more.
    one.image_delete(everywhere)
    assert everywhere_cid not in ClusterClient(cluster_api).pinset()
    assert everywhere_cid not in {cid for cid, _ in pins(bed.frontend)}


def held_everywhere(bed: Bed, cluster_api: str, cid: str, content: bytes, minimum: int = 2) -> None:
    """``cid`` is held by at least ``minimum`` peers, each with every byte of ``content``."""
    names = holders(cluster_api, cid)
    assert len(names) >= minimum, (cid, names)
    for name in names:
        node = bed.frontend if name == "frontend" else bed.host(name).node
        assert sha256(held_bytes(node, cid)) == sha256(content), (cid, name)


def whole(cluster_api: str) -> bool:
    """Every peer reached and allocatable again (a healed link: IPFS Cluster redials within 30 s)."""
    client = ClusterClient(cluster_api)
    members = client.members()
    return not any(m.error for m in members) and {m.peer for m in members} <= set(client.allocatable_peers())


def saved_on_retry(one: GenuineOne, vm: VirtualMachine) -> bool:
    try:
        one.vm_recover_retry(vm)
    except OneFailure as failure:
        assert "not enough peers to allocate" in driver_line(str(failure)), failure
        return False
    return True


@pytest.mark.current_version  # IPFS Cluster does not depend on OpenNebula's version
def test_a_storage_peer_partitioned_during_an_import_and_a_save_back_leaves_no_version_below_the_minimum(
    bed: Bed, one: GenuineOne, replicated_ds: Datastore, cluster_api: str, local_dir: Path
) -> None:
    data, kept = disk_bytes(2 << 20, seed=74), disk_bytes(2 << 20, seed=75)
    for name, content in (("cut.img", data), ("cut-kept.img", kept)):
        (local_dir / name).write_bytes(content)
        (local_dir / name).chmod(0o644)
    settle(lambda: whole(cluster_api), "every peer in the cluster", limit=120)
    cut = next(member.peer for member in ClusterClient(cluster_api).members() if member.name == "h2")
    # Three copies of three peers: with one cut off, a save-back cannot reach its minimum.
    every_peer = one.datastore_create(
        ipfs_datastore_template(
            bed,
            "every-peer",
            IPFS_CLUSTER_API=cluster_api,
            IPFS_REPLICATION_MIN="3",
            IPFS_TRANSFER_TIMEOUT="30",
        )
    )
    persistent = one.image_create(
        every_peer, name="partition-kept", path=str(local_dir / "cut-kept.img"), persistent=True
    )
    vm = one.vm_deploy([persistent], "h3")
    write_into(disk_path(bed, one, vm), 1 << 20, b"saved across a partition" * 100)
    changed = disk_path(bed, one, vm).read_bytes()
    pinset = set(ClusterClient(cluster_api).pinset())

    bed.partition("h2")
    try:
        # At once: the cluster either still allocates to the cut peer (the save-back then waits for it in vain
        # until IPFS_TRANSFER_TIMEOUT) or already refuses; either way nothing is saved below the minimum.
        with pytest.raises(OneFailure) as refused:
            one.vm_terminate(vm)
        assert len(driver_line(str(refused.value)).splitlines()) == 1
        assert len(one.image(persistent).template["IPFS_VERSIONS"].split()) == 1
        assert set(ClusterClient(cluster_api).pinset()) == pinset
        # Once its metrics expire, the cluster allocates around the cut peer: held by the two others.
        settle(lambda: cut not in ClusterClient(cluster_api).allocatable_peers(), "the cut noticed", limit=60)
        image = one.image_create(replicated_ds, name="partition-import", path=str(local_dir / "cut.img"))
        cid = one.image(image).template["IPFS_CID"]
        held_everywhere(bed, cluster_api, cid, data)
        assert "h2" not in holders(cluster_api, cid)
    finally:
        bed.heal("h2")
    # The changed disk stayed on the host: retried once the cluster takes the peer back (its metrics come
    # and go for a while as pubsub meshes again: a retry too early is refused the same way), it is saved.
    settle(lambda: saved_on_retry(one, vm), "a save-back retried with the cut peer back", limit=180)
    saved = one.image(persistent).template
    assert len(saved["IPFS_VERSIONS"].split()) == 2
    held_everywhere(bed, cluster_api, saved["IPFS_CID"], changed, minimum=3)


SECOND_FRONTEND = "h2"
"""The bed has no spare machine: h2's node doubles as a second frontend's node (and stays a storage peer)."""


def lists_all_of(api: str, other: ClusterClient) -> bool:
    """The peer at ``api`` (just started) lists in its pinset every pin ``other``'s pinset lists."""
    try:
        return set(other.pinset()) <= set(ClusterClient(api).pinset())
    except ClusterError:
        return False


@pytest.mark.current_version  # IPFS Cluster does not depend on OpenNebula's version
def test_with_two_frontends_the_second_deploys_every_version_and_saves_new_ones_once_the_firsts_node_is_lost(
    bed: Bed, one: GenuineOne, cluster_api: str, local_dir: Path
) -> None:
    data, kept = disk_bytes(4 << 20, seed=76), disk_bytes(4 << 20, seed=77)
    for name, content in (("ha-os.img", data), ("ha-kept.img", kept)):
        (local_dir / name).write_bytes(content)
        (local_dir / name).chmod(0o644)
    code, _, err = cluster_init(bed, one, "--frontends", SECOND_FRONTEND)
    assert code == 0, err
    bed.restart_cluster()  # peers read whom they trust only at start
    second_api, second_cluster_api = bed.second_frontend_apis(SECOND_FRONTEND)
    ds = one.datastore_create(
        ipfs_datastore_template(
            bed,
            "two-frontends",
            IPFS_CLUSTER_API=cluster_api,
            IPFS_REPLICATION_MIN="2",
            IPFS_TRANSFER_TIMEOUT="60",
        )
    )
    image = one.image_create(ds, name="ha-os", path=str(local_dir / "ha-os.img"))
    persistent = one.image_create(ds, name="ha-kept", path=str(local_dir / "ha-kept.img"), persistent=True)
    first_peer = cluster_peer.read_peer_id(bed.frontend_var_lib_one / CLUSTER_FOLDER)
    second = ClusterClient(second_cluster_api)

    bed.stop_cluster_peer("frontend")
    bed.stop_node(bed.frontend)
    try:
        # The second frontend's drivers: the same datastore, its own node and its own cluster peer.
        one.datastore_update(ds, {"IPFS_API": second_api, "IPFS_CLUSTER_API": second_cluster_api})
        settle(lambda: first_peer not in second.allocatable_peers(), "the first frontend's loss noticed")
        vm = deploy_checked(bed, one, [(image, data), (persistent, kept)], "h3")
        changed = guest_change(bed, one, vm, 1, 2 << 20, b"saved through the second frontend" * 100)
        copied = guest_change(bed, one, vm, 0, 1 << 20, b"copied through the second frontend" * 100)
        saved_as = one.image(one.disk_saveas(vm, 0, "ha-saved-as")).template["IPFS_CID"]
        held_everywhere(bed, second_cluster_api, saved_as, copied)
        one.vm_terminate(vm)

        saved = one.image(persistent).template
        versions = [v.split(":")[1] for v in saved["IPFS_VERSIONS"].split()]
        assert len(versions) == 2
        held_everywhere(bed, second_cluster_api, saved["IPFS_CID"], changed)
        # Every version, the one before the loss too, reaches a host that never held it, byte-identical.
        fetcher = bed.host("h4").node.client()
        cids = [one.image(image).template["IPFS_CID"], *versions, saved_as]
        for cid, content in zip(cids, [data, kept, changed, copied], strict=True):
            assert sha256(b"".join(fetcher.cat(f"/ipfs/{cid}"))) == sha256(content), cid
    finally:
        bed.start_node(bed.frontend)
        bed.start_cluster_peer("frontend")
        # The first frontend's peer takes what the second pinned while it was stopped before the second is
        # distrusted (docs/install.md): afterwards it would no longer take the second's updates, and its
        # pinset would lack that version for good (`cluster status` and `recover` name it).
        settle(lambda: lists_all_of(cluster_api, second), "the second frontend's pins on the first's peer")
        # The cluster the module's other tests know again: the first frontend's peer in it, h2 a storage peer
        # (checked by the next `cluster init`, which must then change nothing).
        cluster_init(bed, one)
        bed.restart_cluster()


def test_with_replication_2_losing_the_frontends_repository_loses_no_image_and_no_persistent_version(
    bed: Bed, one: GenuineOne, replicated_ds: Datastore, cluster_api: str, local_dir: Path
) -> None:
    data, kept = disk_bytes(4 << 20, seed=71), disk_bytes(4 << 20, seed=72)
    for name, content in (("os.img", data), ("kept.img", kept)):
        (local_dir / name).write_bytes(content)
        (local_dir / name).chmod(0o644)
    image = one.image_create(replicated_ds, name="replicated-os", path=str(local_dir / "os.img"))
    clone = one.image_clone(image, "replicated-os-clone")
    blank = one.image_create(replicated_ds, name="replicated-blank", type="DATABLOCK", size_mb=8)
    persistent = one.image_create(
        replicated_ds, name="replicated-kept", path=str(local_dir / "kept.img"), persistent=True
    )
    # On every peer, so that the frontend's node surely held something the cluster must then recover.
    three = one.datastore_create(
        ipfs_datastore_template(bed, "three-copies", IPFS_CLUSTER_API=cluster_api, IPFS_REPLICATION_MIN="3")
    )
    on_every_peer = one.image_create(three, name="replicated-on-every-peer", type="DATABLOCK", size_mb=1)
    on_every_peer_cid = one.image(on_every_peer).template["IPFS_CID"]
    vm = one.vm_deploy([persistent], "h1")
    write_into(disk_path(bed, one, vm), 1 << 20, b"saved before the loss" * 100)
    changed = disk_path(bed, one, vm).read_bytes()
    one.vm_terminate(vm)
    recorded = [one.image(i).template["IPFS_CID"] for i in (image, clone, blank, persistent)]
    assert len(one.image(persistent).template["IPFS_VERSIONS"].split()) == 2
    assert all(replicas(cluster_api, cid) >= 2 for cid in recorded)

    bed.replace_repository(bed.frontend)
    assert not {cid for cid, _ in pins(bed.frontend)} & set(recorded)

    # Hosts that never held these images fetch them from the cluster's storage peers.
    first = deploy_checked(bed, one, [(image, data), (blank, bytes(8 << 20))], "h3")
    second = deploy_checked(bed, one, [(clone, data), (persistent, changed)], "h4")
    changed_again = guest_change(bed, one, second, 1, 2 << 20, b"saved after the loss" * 100)
    one.vm_terminate(second)
    one.vm_terminate(first)

    saved = one.image(persistent).template
    assert len(saved["IPFS_VERSIONS"].split()) == 3
    assert replicas(cluster_api, saved["IPFS_CID"]) >= 2
    fetched = b"".join(bed.host("h3").node.client().cat(f"/ipfs/{saved['IPFS_CID']}"))
    assert sha256(fetched) == sha256(changed_again)

    # The new frontend node's cluster peer joins again as the admin tool makes it; its Kubo node holds
    # nothing of what the cluster allocated to it until the admin asks the cluster to recover.
    code, out, err = cluster_init(bed, one)
    assert code == 0, err
    assert "changed" not in out.replace("unchanged", "")
    code, out, err = one_ipfs(one, "cluster", "recover", "--cluster-api", cluster_api, "--json")
    assert code == 0, (out, err)
    assert on_every_peer_cid in json.loads(out)["recovered"]
    held_everywhere(bed, cluster_api, on_every_peer_cid, bytes(1 << 20), minimum=3)
    versions = [v.split(":")[1] for v in saved["IPFS_VERSIONS"].split()]
    contents = [data, data, bytes(8 << 20), kept, changed, changed_again]
    for cid, content in zip([*recorded[:3], *versions], contents, strict=True):
        held_everywhere(bed, cluster_api, cid, content)
    code, out, err = one_ipfs(one, "cluster", "status", "--cluster-api", cluster_api, "--json")
    assert (code, json.loads(out)["problems"]) == (0, []), err
