"""Replication: what IPFS Cluster costs an import and a save-back, and how soon it repairs a lost peer.

The same image is imported (``cp``) and a persistent disk saved back (``mvds``) into a datastore without a
cluster and into ones with ``IPFS_REPLICATION_MIN`` 2 and 3, whose actions return only once that many cluster
peers hold every block: the ratio is the price of the copies made before oned hears the version is saved.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.common import Bench, Figure, Params, stopwatch, write_image
from one_ipfs.ipfs.cluster import PINNED, ClusterClient
from testbed.one import Datastore, Image

CLUSTER_HOSTS = 3
"""Cluster peers beside the frontend's node and h1..h3: a lost replica has a spare peer to be repaired on."""
HOSTS = CLUSTER_HOSTS + 1
SAVE_HOST = "h4"
"""Where the persistent disk runs: no cluster peer, so every replica is a transfer."""
CHANGED_MIB = 4
LOSS_LIMIT = 300.0


def run(bench: Bench, params: Params) -> Figure:
    figure = Figure(
        "replication",
        f"Replication: import and save-back of a {params.image_mib} MiB image with IPFS Cluster",
        "Run time of the datastore's `cp` (`oneimage create --path`) and of `mvds` (a persistent disk, "
        f"{CHANGED_MIB} MiB of it rewritten on {SAVE_HOST}, saved back at `onevm terminate`), into a "
        "datastore without a cluster and into ones with IPFS_REPLICATION_MIN=MAX=2 and 3 over IPFS "
        f"Cluster peers beside the frontend's node and {CLUSTER_HOSTS} hosts' (`Bed.start_cluster`), in "
        "turn in each repetition (the order reversed every other one). Repair: a peer holding a fresh "
        "replication-2 version stopped (its cluster peer and Kubo node), then the time until the "
        "cluster reports 2 peers holding it again, with the bed's cluster timing (ping every 2 s, "
        "metrics valid 2 s; IPFS Cluster's default ping is 30 s).",
    )
    cluster = ClusterClient(bench.bed.start_cluster(bench.bed.hosts[:CLUSTER_HOSTS]))
    stores = {copies: _datastore(bench, cluster, copies) for copies in (2, 3)}
    for repetition in range(params.repetitions):
        path = write_image(bench.workdir / "replicated.img", params.image_mib, bench.next_seed())
        seconds: dict[tuple[str, int], float] = {}
        try:
            for copies in [1, 2, 3] if repetition % 2 == 0 else [3, 2, 1]:
                ds = bench.copy_ds if copies == 1 else stores[copies]
                seconds["cp", copies], seconds["mvds", copies] = _import_and_save_back(
                    bench, cluster, ds, path
                )
        finally:
            path.unlink()
        for (action, copies), value in sorted(seconds.items()):
            label = f"replication {copies}" if copies > 1 else "no cluster"
            figure.measure(f"{action}, {label}", "s").samples.append(value)
            if copies > 1:
                ratio = value / seconds[action, 1]
                figure.measure(f"{action} replication {copies} / none", "x").samples.append(ratio)
        repair = _repair(bench, cluster, stores[2], params)
        figure.measure("repair to 2 peers after a loss", "s").samples.append(repair)
    return figure


def _datastore(bench: Bench, cluster: ClusterClient, copies: int) -> Datastore:
    return bench.one.datastore_create(
        {
            "NAME": f"bench-replication-{copies}",
            "DS_MAD": "ipfs",
            "TM_MAD": "ipfs",
            "IPFS_API": bench.bed.frontend.api,
            "IPFS_CLUSTER_API": f"http://{cluster.address}",
            "IPFS_REPLICATION_MIN": str(copies),
            "IPFS_REPLICATION_MAX": str(copies),
        }
    )


def _import_and_save_back(
    bench: Bench, cluster: ClusterClient, ds: Datastore, path: Path
) -> tuple[float, float]:
    """The ``cp`` of ``path`` as a persistent image, and the ``mvds`` of its disk once changed."""
    with bench.runner.recording("cp") as imported:
        image = bench.one.image_create(
            ds, name=f"bench-replicated-{bench.next_seed()}", path=str(path), persistent=True
        )
    vm = bench.deploy(image, SAVE_HOST)
    with open(bench.disk(vm, SAVE_HOST), "r+b") as disk:
        disk.write(os.urandom(CHANGED_MIB << 20))
    with bench.runner.recording("mvds") as saved:
        bench.one.vm_terminate(vm)
    _drop_everywhere(bench, cluster, image)
    return imported[0], saved[0]


def _repair(bench: Bench, cluster: ClusterClient, ds: Datastore, params: Params) -> float:
    """Seconds from stopping a host holding a fresh version to the cluster holding it on 2 peers again."""
    image = bench.image(params.image_mib, datastore=ds)
    cid = bench.cid(image)
    lost = next(name for name in cluster.status(cid).holders() if name != "frontend")
    host = bench.bed.host(lost)
    bench.bed.stop_cluster_peer(lost)
    bench.bed.stop_node(host.node)
    elapsed = stopwatch()
    try:
        while cluster.status(cid).count(PINNED) < 2:
            if elapsed() > LOSS_LIMIT:
                raise TimeoutError(f"the cluster did not repair {cid} within {LOSS_LIMIT:g} s")
            time.sleep(0.2)
        return elapsed()
    finally:
        bench.bed.start_node(host.node)
        bench.bed.start_cluster_peer(lost)
        _wait_formed(cluster)
        _drop_everywhere(bench, cluster, image)


def _wait_formed(cluster: ClusterClient) -> None:
    """Every peer back and allocatable, so that the next version may go to any of them."""
    deadline = time.monotonic() + LOSS_LIMIT
    while time.monotonic() < deadline:
        members = cluster.members()
        if not any(m.error for m in members) and len(cluster.allocatable_peers()) == len(members):
            return
        time.sleep(0.5)
    raise TimeoutError("the cluster did not take its stopped peer back in time")


def _drop_everywhere(bench: Bench, cluster: ClusterClient, image: Image) -> None:
    """Delete the image, wait until no cluster peer pins any of its versions, collect every node's blocks:
    the next import starts with its blocks on no node."""
    cids = [entry.split(":")[1] for entry in bench.one.image(image).template["IPFS_VERSIONS"].split()]
    bench.drop(image)
    deadline = time.monotonic() + LOSS_LIMIT
    for host in bench.bed.hosts[:CLUSTER_HOSTS]:
        client = host.node.client(timeout=600)
        while any(client.pin_ls(cid) for cid in cids) and time.monotonic() < deadline:
            time.sleep(0.2)
        client.repo_gc(timeout=600)
