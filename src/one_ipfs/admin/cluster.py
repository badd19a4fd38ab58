"""``one-ipfs cluster init|join|status``: IPFS Cluster peers beside the frontend's Kubo node and the storage
hosts', which replicate every image version of a datastore with ``IPFS_CLUSTER_API``.

As with ``one-ipfs network``, the secret is created once, on the frontend (``ipfs-cluster-service init``
makes it), and then only copied; every node's side runs ``one_ipfs.ipfs.cluster_peer`` through the host
commands of ``host/admin.py`` (hosts over the drivers' channel). CRDT consensus trusts the frontends' peers
only (this one's and those of the second frontends ``init`` names, which the others must all trust to take
their pins and answer their status calls), and only the frontends' peers serve the REST API, each on its
own loopback. A peer reads its settings at start, so changed peers need a restart (``network.restart`` or
``network.daemon_units``, as for Kubo).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from one_ipfs.admin.network import CONCRETE, Configured, Progress
from one_ipfs.admin.nodes import FRONTEND, call_all, resolve_address, results
from one_ipfs.defaults import CLUSTER_REST_LISTEN, CLUSTER_SWARM_PORT
from one_ipfs.errors import InvalidInput
from one_ipfs.host import protocol as p
from one_ipfs.ipfs import cluster_peer
from one_ipfs.ipfs.cluster import PINNED, POLL_EVERY, ClusterClient, ClusterPin, Member, Replication
from one_ipfs.ipfs.cluster_peer import PeerSettings
from one_ipfs.ipfs.rpc import parse_api

log = logging.getLogger(__name__)
EVERYWHERE = Replication(-1, -1)
"""A pin on every peer: needed by every peer that answers."""


@dataclass(frozen=True)
class Places:
    """Where each node's peer folder and Kubo repository are, and each Kubo node's RPC API."""

    folder: str
    host_folder: str
    repo: str
    host_repo: str
    api: str
    host_api: str

    def of(self, name: str) -> tuple[str, str, str]:
        """A node's peer folder, Kubo repository and Kubo RPC API."""
        if name == FRONTEND:
            return self.folder, self.repo, self.api
        return self.host_folder, self.host_repo, self.host_api


def join(
    places: Places,
    hosts: list[str],
    address: str | None,
    rest_api: str | None,
    *,
    new_cluster: bool,
    frontends: tuple[str, ...] = (),
    progress: Progress | None = None,
) -> dict[str, Configured]:
    """Make the frontend's peer and ``hosts``' peers one cluster; per node, what changed.

    ``new_cluster`` (``init``): the cluster is the frontend, ``frontends`` (second frontends, reached over ssh
    like hosts) and ``hosts``, the frontend's peer created when it has none; every peer trusts the frontends'.
    Otherwise (``join``) the frontend's peer must exist, and ``hosts`` join the peers it knows, trusting the
    peers it trusts. Every trusted peer serves the REST API (a second frontend joined again keeps it).
    """
    frontend_folder = Path(places.folder).expanduser()
    known: list[str] = []
    trusted_before: tuple[str, ...] = ()
    if not new_cluster:
        if not (frontend_folder / cluster_peer.CONFIG).exists():
            raise InvalidInput(
                f"the frontend has no IPFS Cluster peer at {frontend_folder}: "
                "run `one-ipfs cluster init` first"
            )
        current = cluster_peer.current_settings(frontend_folder)
        known, trusted_before = list(current.peers), current.trusted
    serving = [FRONTEND, *frontends]
    nodes = list(dict.fromkeys([*serving, *hosts]))
    created = results(
        call_all(nodes, lambda name: p.InitPeer(folder=places.of(name)[0], repo=places.of(name)[1]), progress)
    )
    secret = cluster_peer.read_secret(frontend_folder)
    listen = {
        name: _listen_address(name, peer.kubo, address, frontend_folder) for name, peer in created.items()
    }
    members = {name: f"{listen[name]}/p2p/{peer.peer_id}" for name, peer in created.items()}
    others = [peer for peer in known if peer.split("/p2p/")[-1] not in {c.peer_id for c in created.values()}]
    trusted = tuple(dict.fromkeys([*(created[name].peer_id for name in serving), *trusted_before]))
    rest = rest_api or cluster_peer.current_settings(frontend_folder).rest_api or CLUSTER_REST_LISTEN
    settings = {
        name: PeerSettings(
            name=name,
            listen_address=listen[name],
            peers=tuple(sorted({*others, *(members[o] for o in nodes if o != name)})),
            trusted=trusted,
            kubo_api=multiaddr(places.of(name)[2]),
            rest_api=rest if created[name].peer_id in trusted else "",
        )
        for name in nodes
    }
    configured = results(
        call_all(
            nodes,
            lambda name: p.ConfigurePeer(folder=places.of(name)[0], secret=secret, peer=settings[name]),
            progress,
        )
    )
    return {name: Configured(done.changed, done.restart_pending) for name, done in configured.items()}


def unit_request(places: Places, unit: str, kubo_unit: str) -> Callable[[str, bool], p.InstallUnit]:
    """A node's request for the systemd ``unit`` of its peer, started after Kubo's unit ``kubo_unit``."""
    return lambda name, restart: p.InstallUnit(
        unit=unit, daemon="cluster", folder=places.of(name)[0], after=kubo_unit, restart=restart
    )


@dataclass(frozen=True)
class Health:
    """The cluster as its frontend peer sees it: its peers, each pin of its pinset with its
    ``replication-min``, and the pins other peers hold that its pinset lacks (``unlisted``)."""

    members: list[Member]
    pins: list[tuple[ClusterPin, int]]
    unlisted: list[ClusterPin]

    def problems(self) -> list[str]:
        """One line per peer in error, per pin held by fewer peers than its minimum and per unlisted pin."""
        lines = [
            f"peer {member.name or member.peer}: {member.error}" for member in self.members if member.error
        ]
        return [
            *lines,
            *(line for pin, minimum in self.pins for line in _short(pin, minimum)),
            *self.unlisted_problems(),
        ]

    def unlisted_problems(self) -> list[str]:
        return [
            f"{pin.cid} ({pin.name}) is held by {', '.join(pin.holders())} but is not in this peer's pinset: "
            "another frontend's peer pinned it, an update this one has not taken (keep that frontend at "
            "`cluster init --frontends`, its peer running, until this one lists it; if that peer is gone, "
            "`ipfs-cluster-ctl pin add` it here)"
            for pin in self.unlisted
        ]


def health(client: ClusterClient) -> Health:
    """Ask the frontend's peer (``client``: its REST API); a pin the cluster puts on every peer (minimum -1)
    counts as needing all of them. A peer the frontend's no longer reaches is named as the pins' statuses
    last named it (``/peers`` knows only its ID).

    Each peer reports the pins of its own copy of the pinset. A pin that other peers hold but the frontend
    peer's copy lacks was written by another frontend's peer whose update this one has not taken: one that
    pinned it while this peer was stopped (taken once that peer rebroadcasts, if this one still trusts it).
    """
    pinset = client.pinset()
    members = client.members()
    statuses = client.statuses()
    names = {peer.peer: peer.name for pin in statuses for peer in pin.peers if peer.name}
    members = [replace(member, name=member.name or names.get(member.peer, "")) for member in members]
    pins = [(pin, pinset[pin.cid].minimum) for pin in statuses if pin.cid in pinset]
    unlisted = [pin for pin in statuses if pin.cid not in pinset and pin.count(PINNED)]
    return Health(
        members, [(pin, len(members) if minimum < 1 else minimum) for pin, minimum in pins], unlisted
    )


def restore(client: ClusterClient, timeout: float) -> tuple[list[str], list[str]]:
    """Bring every pin held by fewer peers than its minimum back to it, which IPFS Cluster does not do by
    itself while the peers it chose are members: the CIDs it asked for, and the problems left after
    waiting at most ``timeout`` seconds.

    A pin allocated to a peer in error is pinned again with its own replication, so that the cluster
    allocates live peers in place of the lost ones (by itself it does so only as the peer's metrics expire,
    and only when another peer is free then). Every such pin is also recovered, so that an allocated peer
    whose Kubo node lost it (a wiped or new repository) pins it again (by itself: every 12 minutes). A pin
    the frontend peer's pinset lacks is none of its own to recover: it is named at once, not waited for.
    """
    found = health(client)
    pinset = client.pinset()
    lost = {member.peer for member in found.members if member.error}
    short = [(pin, minimum) for pin, minimum in found.pins if pin.count(PINNED) < minimum]
    for pin, minimum in short:
        replication = pinset.get(pin.cid)
        if replication is not None and replication.minimum > 0 and lost & set(pin.allocations):
            log.info(f"allocating {pin.cid} ({pin.name}) again, away from the peers in error")
            client.pin(pin.cid, name=pin.name, replication=replication)
        log.info(
            f"recovering {pin.cid} ({pin.name}), held by {pin.count(PINNED)} of the {minimum} peers it needs"
        )
        client.recover(pin.cid)
    asked = {pin.cid for pin, _ in short}
    deadline = time.monotonic() + timeout
    while True:
        found = health(client)
        live = sum(not member.error for member in found.members)
        left = [
            line
            for pin, minimum in found.pins
            if pin.cid in asked
            for line in _short(pin, minimum if pinset.get(pin.cid, EVERYWHERE).minimum > 0 else live)
        ]
        if not left or time.monotonic() >= deadline:
            return sorted(asked), left + found.unlisted_problems()
        time.sleep(POLL_EVERY)


def _short(pin: ClusterPin, minimum: int) -> list[str]:
    """The line naming ``pin`` when fewer than ``minimum`` peers hold it."""
    held = pin.count(PINNED)
    if held >= minimum:
        return []
    return [f"{pin.cid} ({pin.name}) is held by {held} of the {minimum} peers it needs"]


def _listen_address(name: str, kubo: p.Repository, address: str | None, frontend_folder: Path) -> str:
    """Where a peer listens: the frontend at ``--address`` or where it listened before; any node on the
    storage-network address its Kubo node listens on, else (a host) the one ssh reaches it at."""
    if name == FRONTEND:
        if address:
            return f"/ip4/{address}/tcp/{CLUSTER_SWARM_PORT}"
        before = cluster_peer.current_settings(frontend_folder).listen_address
        if CONCRETE.match(before):
            return before
    swarm = [a for a in kubo.swarm_addresses if CONCRETE.match(a)]
    ipv4 = [a.split("/")[2] for a in swarm if a.startswith("/ip4/")]
    if ipv4:
        return f"/ip4/{ipv4[0]}/tcp/{CLUSTER_SWARM_PORT}"
    if name == FRONTEND:
        raise InvalidInput(
            "the frontend's Kubo node listens on no storage-network address: give it with --address"
        )
    return f"/ip4/{resolve_address(name)}/tcp/{CLUSTER_SWARM_PORT}"


def multiaddr(api: str) -> str:
    """An API's address (a URL or a multiaddr) as IPFS Cluster's configuration takes it."""
    host, port = parse_api(api)
    try:
        protocol = f"ip{ipaddress.ip_address(host).version}"
    except ValueError:
        protocol = "dns"
    return f"/{protocol}/{host}/tcp/{port}"
