"""Kubo nodes of the bed: one repository each, a daemon started in the node's namespaces, bounded waits."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from one_ipfs.errors import DaemonUnreachable, IpfsError, IpfsTimeout
from one_ipfs.ipfs import network
from one_ipfs.ipfs.rpc import KuboClient
from testbed.forward import Forwarder
from testbed.system import BASE_PATH, Process, spawn

KUBO = Path(__file__).resolve().parent.parent / ".cache" / "kubo" / "bin" / "ipfs"
API_PORT = 5001
GATEWAY_PORT = 8080
SWARM_PORT = 4001
EXPERIMENTAL: dict[str, tuple[str, ...]] = {
    "pubsub": ("Pubsub.Enabled", "Ipns.UsePubsub"),
    "p2p": ("Experimental.Libp2pStreamMounting",),
    "http-proxy": ("Experimental.P2pHttpProxy",),
}
"""Kubo's experimental features the fleet uses (``one_ipfs.ipfs.fleet``), by the config keys that turn each
on: a future Kubo may drop any of them (``Bed.switch_off``). ``Ipns.UsePubsub`` alone starts pubsub too."""


@dataclass
class Node:
    """One Kubo node. ``api`` and ``gateway`` are URLs as seen from inside the node's own namespace.

    ``netns`` None means the root namespace (the frontend). ``client()`` works from the root namespace
    for every node: for a host it goes through a Forwarder into the host's namespace.
    """

    name: str
    repo: Path
    api: str
    gateway: str
    peer_id: str
    swarm_address: str
    netns: str | None
    auth: str | None = None
    """The Authorization header its RPC API wants, once ``Bed.lock_apis`` has locked it."""
    _forwarder: Forwarder | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def multiaddr(self) -> str:
        """The address other nodes dial: ``/ip4/198.18.0.11/tcp/4001/p2p/12D3...``."""
        return f"{self.swarm_address}/p2p/{self.peer_id}"

    @property
    def log(self) -> Path:
        return self.repo.parent / "daemon.log"

    @property
    def api_port(self) -> int:
        return int(self.api.rsplit(":", 1)[1])

    def client(self, timeout: float = 60.0) -> KuboClient:
        """A KuboClient for this node's RPC API, usable from the root namespace."""
        if self.netns is None:
            return KuboClient(self.api, timeout=timeout, auth=self.auth)
        if self._forwarder is None:
            self._forwarder = Forwarder(self.netns, self.api_port)
        return KuboClient(self._forwarder.url, timeout=timeout, auth=self.auth)

    def close(self) -> None:
        """Stop this process's forwarder (if any); the node itself keeps running."""
        if self._forwarder is not None:
            self._forwarder.close()
            self._forwarder = None


def environment(node: Node) -> dict[str, str]:
    """What ``ipfs`` runs with for ``node``, the daemon and the CLI alike: its repository, and the swarm
    key enforced."""
    return {"PATH": BASE_PATH, **network.daemon_environment(node.repo)}


def start_daemon(node: Node, prefix: Sequence[str], marker: str) -> tuple[Process, subprocess.Popen[bytes]]:
    """Start ``ipfs daemon`` behind ``prefix`` (the nsenter that puts it into its namespaces).

    No ``--enable-gc``: the bed keeps every block until a test removes it, so that what a host holds is
    decided by pins and never by when GC happened to run.
    """
    return spawn(
        f"{node.name}/kubo",
        [*prefix, KUBO, "daemon"],
        log=node.log,
        env=environment(node),
        marker=marker,
        cwd=node.repo.parent,
    )


def wait_ready(node: Node, process: Process, deadline: float) -> None:
    """Wait until the node's RPC API answers with the expected peer ID."""
    client = node.client(timeout=5.0)
    reason = "no answer yet"
    while time.monotonic() < deadline:
        if not process.alive():
            raise DaemonUnreachable(f"test bed: the Kubo daemon of {node.name} exited; see {node.log}")
        try:
            peer_id = client.id().peer_id
        except IpfsError as exc:
            reason = str(exc)
            time.sleep(0.2)
            continue
        if peer_id != node.peer_id:
            raise DaemonUnreachable(
                f"test bed: {node.api} of {node.name} answers as {peer_id}, not {node.peer_id}; "
                "is another Kubo daemon using that port?"
            )
        return
    raise IpfsTimeout(
        f"test bed: the Kubo RPC API of {node.name} did not answer in time ({reason}); see {node.log}"
    )


def wait_connected(nodes: Sequence[Node], deadline: float) -> None:
    """Wait until every node has a connection to every other one.

    Peering.Peers would connect them by itself, after a few seconds' backoff; asking for the missing
    connections right away keeps bring-up short.
    """
    wanted = {node.peer_id for node in nodes}
    missing: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        for node in nodes:
            client = node.client(timeout=5.0)
            try:
                peers = {peer for peer, _ in client.swarm_peers()}
            except IpfsError:  # a node just restarted once broke this listing off (CI, 6.10.5): ask again
                peers = set()
            missing[node.name] = wanted - peers - {node.peer_id}
            for other in nodes:
                if other.peer_id in missing[node.name]:
                    with contextlib.suppress(IpfsError):  # not listening yet: the next round asks again
                        client.swarm_connect(other.multiaddr)
        if not any(missing.values()):
            return
        time.sleep(0.5)
    described = "; ".join(f"{name} lacks {len(peers)} peers" for name, peers in missing.items() if peers)
    raise IpfsTimeout(f"test bed: the Kubo nodes did not all connect to each other in time ({described})")
