"""IPFS Cluster peers of the bed: one beside the frontend's Kubo node and one beside each chosen host's,
CRDT consensus that trusts the frontend's peer only, one shared secret, the REST API on the frontend's
loopback only.

The frontend's Kubo node lives in the root network namespace, where a cluster peer would reach for the
machine's real gateway (IPFS Cluster always enables libp2p's NAT port mapping). So the frontend's peer runs in
a network namespace of its own on the bed's bridge, with no route out: it reaches the frontend's Kubo RPC
through a relay into the root namespace's loopback, and the drivers reach its REST API on the frontend's
loopback through another. Hosts' peers run in their hosts' namespaces and serve no REST API at all.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from one_ipfs.defaults import CLUSTER_SWARM_PORT
from one_ipfs.errors import ClusterError, HostError
from one_ipfs.ipfs import cluster_peer
from one_ipfs.ipfs.cluster import ClusterClient
from one_ipfs.ipfs.cluster_peer import PeerSettings

ROOT = Path(__file__).resolve().parent.parent
SERVICE = cluster_peer.SERVICE
SWARM_PORT = CLUSTER_SWARM_PORT
REST_PORT = 9094
"""The REST API inside the frontend peer's namespace; the drivers see it at the layout's own port."""
REST_OFFSET = 4093
"""The frontend's REST API port is its Kubo RPC port plus this: 9094 for the default layout."""
FRONTEND_OFFSET = 9
"""The frontend peer's namespace gets the network's address + this (hosts start at host_offset + 1 = 11)."""


def binaries() -> Path:
    """The folder of ipfs-cluster-service and -ctl (``scripts/ensure-ipfs-cluster``: installed or built)."""
    found = subprocess.run(
        [ROOT / "scripts" / "ensure-ipfs-cluster"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        raise HostError(f"test bed: no IPFS Cluster: {found.stderr.strip().splitlines()[-1:]}")
    return Path(found.stdout.strip())


@dataclass(frozen=True)
class ClusterPeer:
    """One peer: ``folder`` is its IPFS_CLUSTER_PATH, ``address`` the bed address it listens on."""

    name: str
    folder: Path
    address: str
    peer_id: str

    @property
    def multiaddr(self) -> str:
        return f"/ip4/{self.address}/tcp/{SWARM_PORT}/p2p/{self.peer_id}"


def init_peer(service: Path, name: str, folder: Path, address: str) -> ClusterPeer:
    """A new peer identity and configuration in ``folder``, as the admin tool makes them."""
    cluster_peer.init_peer(service, folder)
    return ClusterPeer(name, folder, address, cluster_peer.read_peer_id(folder))


def configure(
    peer: ClusterPeer, secret: str, trusted: ClusterPeer, others: list[ClusterPeer], kubo_port: int
) -> None:
    """One private cluster as ``one-ipfs cluster init`` makes it (its members dialled directly, only
    ``trusted``'s pins taken, a REST API only where ``trusted`` runs: the frontend), then ``quicken``ed."""
    settings = PeerSettings(
        name=peer.name,
        listen_address=f"/ip4/{peer.address}/tcp/{SWARM_PORT}",
        peers=tuple(other.multiaddr for other in others),
        trusted=(trusted.peer_id,),
        kubo_api=f"/ip4/127.0.0.1/tcp/{kubo_port}",
        rest_api=f"/ip4/127.0.0.1/tcp/{REST_PORT}" if peer is trusted else "",
    )
    cluster_peer.configure_peer(peer.folder, secret, settings)
    quicken(peer.folder, ping=True)


def quicken(folder: Path, *, ping: bool) -> None:
    """Bed timing: a new peer becomes allocatable within seconds, and a restarted one takes the pinset's
    latest updates within seconds (its trusted peers rebroadcast them every 5 s, not every minute); with
    ``ping``, a lost one is noticed (and its pins repinned elsewhere) within seconds too, instead of IPFS
    Cluster's 30 s."""
    path = folder / cluster_peer.CONFIG
    settings: dict[str, Any] = json.loads(path.read_text())
    settings["consensus"]["crdt"]["rebroadcast_interval"] = "5s"
    if ping:
        settings["cluster"].update(monitor_ping_interval="2s", peer_watch_interval="2s")
    for informer in settings["informer"].values():
        informer["metric_ttl"] = "2s"
    path.write_text(json.dumps(settings, indent=2) + "\n")


def new_secret() -> str:
    return cluster_peer.new_secret()


def wait_formed(api: str, peers: dict[str, str], deadline: float) -> None:
    """Wait until the REST API answers, its peer reaches every peer (name: peer ID) and may allocate pins to
    it."""
    client = ClusterClient(api, timeout=5.0)
    wanted = set(peers.values())
    seen: set[str] = set()
    reason = "no answer yet"
    while time.monotonic() < deadline:
        try:
            reached = {member.peer for member in client.members() if not member.error}
            seen = reached & set(client.allocatable_peers())
        except ClusterError as exc:
            reason = str(exc)
        if wanted <= seen:
            return
        time.sleep(0.3)
    missing = ", ".join(name for name, peer_id in peers.items() if peer_id not in seen)
    raise ClusterError(f"test bed: the IPFS Cluster did not form in time (missing {missing or reason})")
