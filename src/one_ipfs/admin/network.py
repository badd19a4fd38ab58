"""``one-ipfs network init|join``: the frontend and every host become one private IPFS network.

The swarm key is created once, on the frontend, and then only copied. The network's members are the peers
the frontend's node already has and the nodes of this call: every node configured peers with every other
member at its storage-network address; an earlier member left out of the call keeps its settings (the new
nodes peer with it, so their connections are made from their side). Kubo reads its config at start, so
every changed node needs a restart: ``restart`` does it through the daemon's systemd unit where one runs
it, and names the others; ``install_units`` first writes that unit (``--systemd-unit``) and starts or
restarts it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from one_ipfs.admin.nodes import FRONTEND, Reply, call_all, resolve_address, results
from one_ipfs.defaults import KUBO_SWARM_PORT
from one_ipfs.errors import HostError, InvalidInput
from one_ipfs.host import protocol as p
from one_ipfs.ipfs.network import NodeSettings, Peer, generate_swarm_key

Progress = Callable[[Reply[Any]], None]

CONCRETE = re.compile(r"^/ip[46]/(?!0\.0\.0\.0/|::/)[^/]+/tcp/\d+$")
_LOOPBACK = re.compile(r"^/ip4/127\.\d+\.\d+\.\d+/tcp/\d+$")


@dataclass(frozen=True)
class Member:
    name: str
    peer_id: str
    swarm_addresses: tuple[str, ...]
    api_address: str
    gateway_address: str
    storage_max: str


@dataclass(frozen=True)
class Configured:
    """What ``join`` did to a node: whether its repository changed, whether its daemon still runs older
    settings (or none runs), and, once ``restart`` or ``install_units`` ran, what happened to the daemon
    (``failed``: the unit the admin asked for could not be installed or run)."""

    changed: bool
    restart_pending: bool
    restart: str = ""
    failed: bool = False


def join(
    frontend_repo: str,
    host_repo: str,
    hosts: list[str],
    frontend_address: str | None,
    *,
    new_network: bool,
    progress: Progress | None = None,
) -> dict[str, Configured]:
    """Configure the frontend and ``hosts``, members of one network with the peers the frontend's node
    already has; return, per node, what changed.

    ``new_network`` (``init``) creates the swarm key when the frontend has none; ``join`` insists on one.
    """
    key = _swarm_key(Path(frontend_repo).expanduser(), new_network)
    repos = {FRONTEND: frontend_repo, **dict.fromkeys(hosts, host_repo)}
    created = results(call_all(repos, lambda name: p.InitRepo(repo=repos[name]), progress))
    members = [_member(name, found.repo, frontend_address) for name, found in created.items()]
    network = _network(members, created[FRONTEND].repo.peers)
    settings = {
        member.name: NodeSettings(
            swarm_addresses=member.swarm_addresses,
            api_address=member.api_address,
            gateway_address=member.gateway_address,
            peers=tuple(peer for peer in network if peer.peer_id != member.peer_id),
            storage_max=member.storage_max,
        )
        for member in members
    }
    configured = results(
        call_all(
            repos,
            lambda name: p.ConfigureRepo(repo=repos[name], swarm_key=key.decode(), node=settings[name]),
            progress,
        )
    )
    return {name: Configured(done.changed, done.restart_pending) for name, done in configured.items()}


def restart(
    configured: dict[str, Configured],
    unit: str,
    progress: Progress | None = None,
) -> dict[str, Configured]:
    """Restart the daemon of every node whose restart is pending, where a systemd ``unit`` runs it.

    A node without such a unit keeps ``restart_pending`` and says why; nothing else is touched.
    """
    pending = [name for name, state in configured.items() if state.restart_pending]
    replies = call_all(pending, lambda _: p.RestartDaemon(unit=unit), progress)
    done = dict(configured)
    for name, reply in replies.items():
        restarted = reply.result is not None and reply.result.restarted
        reason = reply.result.reason if reply.result is not None else str(reply.error)
        done[name] = Configured(configured[name].changed, not restarted, reason)
    return done


def install_units(
    configured: dict[str, Configured],
    frontend_repo: str,
    host_repo: str,
    unit: str,
    progress: Progress | None = None,
) -> dict[str, Configured]:
    """Install the systemd ``unit`` of every node's Kubo daemon and have it run the new settings.

    A node where that failed keeps its pending restart, with the reason, and counts as failed.
    """
    return daemon_units(
        configured,
        lambda name, restart: p.InstallUnit(
            unit=unit, daemon="kubo", folder=frontend_repo if name == FRONTEND else host_repo, restart=restart
        ),
        progress,
    )


def daemon_units(
    configured: dict[str, Configured],
    request: Callable[[str, bool], p.InstallUnit],
    progress: Progress | None = None,
) -> dict[str, Configured]:
    """Install a daemon's systemd unit on every configured node (``request``: the node's, given whether its
    daemon must restart); what happened to each node's daemon."""
    replies = call_all(configured, lambda name: request(name, configured[name].restart_pending), progress)
    done = {}
    for name, reply in replies.items():
        changed = configured[name].changed
        if reply.result is None:
            done[name] = Configured(changed, configured[name].restart_pending, str(reply.error), failed=True)
        else:
            unit = request(name, False).unit
            written = "installed" if reply.result.changed else "unchanged"
            done[name] = Configured(changed, False, f"systemd unit {unit} {written}, {reply.result.done}")
    return done


def _swarm_key(repo: Path, create: bool) -> bytes:
    path = repo / "swarm.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise InvalidInput(
                f"the frontend has no swarm key at {path}: run `one-ipfs network init` first"
            ) from None
        return generate_swarm_key()
    except OSError as exc:
        raise HostError(f"cannot read {path}: {exc.strerror}") from exc


def _network(members: list[Member], known: tuple[Peer, ...]) -> list[Peer]:
    """Every member of the network: the frontend, the peers its node has (``known``: earlier hosts, in its
    order), then the other nodes of this call. A node of this call is a member at the addresses it has
    now, also in place of a known peer at exactly those addresses (its identity before a rebuild)."""
    now = {member.peer_id: Peer(member.peer_id, member.swarm_addresses) for member in members}
    claimed = {address for member in members for address in member.swarm_addresses}
    network = {member.peer_id: now[member.peer_id] for member in members if member.name == FRONTEND}
    for peer in known:
        if peer.peer_id in now or not (peer.addresses and set(peer.addresses) <= claimed):
            network.setdefault(peer.peer_id, now.get(peer.peer_id, peer))
    for peer_id, peer in now.items():
        network.setdefault(peer_id, peer)
    return list(network.values())


def _member(name: str, facts: p.Repository, frontend_address: str | None) -> Member:
    """A node's identity and the addresses it keeps: its concrete swarm addresses, or one made from the
    address ssh reaches it at (the frontend: ``--address``); loopback API and gateway, else the defaults."""
    swarm = tuple(a for a in facts.swarm_addresses if CONCRETE.match(a))
    if name == FRONTEND and frontend_address:
        swarm = (f"/ip4/{frontend_address}/tcp/{KUBO_SWARM_PORT}",)
    if not swarm:
        if name == FRONTEND:
            raise InvalidInput("the frontend listens on no storage-network address: give it with --address")
        swarm = (f"/ip4/{resolve_address(name)}/tcp/{KUBO_SWARM_PORT}",)
    if not facts.peer_id:
        raise HostError(f"{name}: its Kubo repository at {facts.path} names no peer identity")
    defaults = NodeSettings(swarm_addresses=swarm)
    api = facts.api_address
    gateway = facts.gateway_address
    return Member(
        name=name,
        peer_id=facts.peer_id,
        swarm_addresses=swarm,
        api_address=api if isinstance(api, str) and _LOOPBACK.match(api) else defaults.api_address,
        gateway_address=gateway
        if isinstance(gateway, str) and _LOOPBACK.match(gateway)
        else defaults.gateway_address,
        storage_max=facts.storage_max or defaults.storage_max,
    )
