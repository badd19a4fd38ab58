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
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from one_ipfs.errors import ClusterError, HostError
from one_ipfs.ipfs.cluster import ClusterClient
from testbed import kubo

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "ipfs-cluster-service"
REST_PORT = 9094
"""The REST API inside the frontend peer's namespace; the drivers see it at the layout's own port."""
SWARM_PORT = 9096
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

    @property
    def log(self) -> Path:
        return self.folder.parent / "cluster.log"


def init_peer(service: Path, name: str, folder: Path, address: str) -> ClusterPeer:
    """A new peer identity and configuration in ``folder`` (replacing what was there)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [service, "--config", folder, "init", "--consensus", "crdt", "--force"],
        capture_output=True,
        check=True,
    )
    identity = json.loads((folder / "identity.json").read_text())
    return ClusterPeer(name, folder, address, str(identity["id"]))


def configure(peer: ClusterPeer, secret: str, trusted: ClusterPeer, others: list[ClusterPeer]) -> None:
    """One private cluster: its secret, its members dialled directly (no mDNS), only ``trusted``'s pins taken,
    the peer's Kubo RPC at its namespace's loopback, a REST API only where ``trusted`` runs (the frontend)."""
    path = peer.folder / "service.json"
    settings: dict[str, Any] = json.loads(path.read_text())
    settings["cluster"].update(
        peername=peer.name,
        secret=secret,
        listen_multiaddress=[f"/ip4/{peer.address}/tcp/{SWARM_PORT}"],
        peer_addresses=[other.multiaddr for other in others],
        mdns_interval="0s",
        enable_relay_hop=False,
        disable_repinning=False,
        monitor_ping_interval="2s",
        peer_watch_interval="2s",
    )
    for informer in settings["informer"].values():
        informer["metric_ttl"] = "2s"  # a new peer becomes allocatable within seconds
    settings["consensus"]["crdt"]["trusted_peers"] = [trusted.peer_id]
    settings["ipfs_connector"]["ipfshttp"]["node_multiaddress"] = f"/ip4/127.0.0.1/tcp/{kubo.API_PORT}"
    rest = settings["api"]["restapi"]
    rest["http_listen_multiaddress"] = f"/ip4/127.0.0.1/tcp/{REST_PORT}"
    settings["api"] = {"restapi": rest} if peer is trusted else {}
    path.write_text(json.dumps(settings, indent=2) + "\n")


def new_secret() -> str:
    return secrets.token_hex(32)


def wait_formed(api: str, peers: list[ClusterPeer], deadline: float) -> None:
    """Wait until the REST API answers and its peer may allocate pins to every peer."""
    client = ClusterClient(api, timeout=5.0)
    wanted = {peer.peer_id for peer in peers}
    seen: set[str] = set()
    reason = "no answer yet"
    while time.monotonic() < deadline:
        try:
            seen = set(client.peers()) & set(client.allocatable_peers())
        except ClusterError as exc:
            reason = str(exc)
        if wanted <= seen:
            return
        time.sleep(0.3)
    missing = ", ".join(peer.name for peer in peers if peer.peer_id not in seen)
    raise ClusterError(f"test bed: the IPFS Cluster did not form in time (missing {missing or reason})")
