"""``one-ipfs network init|join``: the frontend and every host become one private IPFS network.

The swarm key is created once, on the frontend, and then only copied; every node peers with every other
at its storage-network address. Kubo reads its config at start, so every changed node needs a restart:
``restart`` does it through the daemon's systemd unit where one runs it, and names the others;
``install_units`` first writes that unit (``--systemd-unit``) and starts or restarts it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from one_ipfs.admin.nodes import FRONTEND, Reply, call_all, resolve_address
from one_ipfs.defaults import KUBO_SWARM_PORT
from one_ipfs.errors import HostError, InvalidInput
from one_ipfs.ipfs.network import NodeSettings, Peer, generate_swarm_key

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
    progress: Callable[[Reply], None] | None = None,
) -> dict[str, Configured]:
    """Configure the frontend and ``hosts``; return, per node, what changed.

    ``new_network`` (``init``) creates the swarm key when the frontend has none; ``join`` insists on one.
    """
    key = _swarm_key(Path(frontend_repo).expanduser(), new_network)
    repos = {FRONTEND: frontend_repo, **dict.fromkeys(hosts, host_repo)}
    replies = call_all(repos, "init", lambda name: {"repo": repos[name]}, progress)
    failed = [reply.error for reply in replies.values() if reply.error]
    if failed:
        raise HostError("; ".join(str(error) for error in failed))
    members = [_member(name, reply, frontend_address) for name, reply in replies.items()]
    settings = {
        member.name: NodeSettings(
            swarm_addresses=member.swarm_addresses,
            api_address=member.api_address,
            gateway_address=member.gateway_address,
            peers=tuple(Peer(o.peer_id, o.swarm_addresses) for o in members if o is not member),
            storage_max=member.storage_max,
        )
        for member in members
    }
    results = call_all(
        repos,
        "configure",
        lambda name: {
            "repo": repos[name],
            "swarm_key": key.decode(),
            "node": asdict(settings[name]),
        },
        progress,
    )
    failed = [reply.error for reply in results.values() if reply.error]
    if failed:
        raise HostError("; ".join(str(error) for error in failed))
    return {
        name: Configured(bool(reply.result.get("changed")), bool(reply.result.get("restart_pending")))
        for name, reply in results.items()
    }


def restart(
    configured: dict[str, Configured],
    unit: str,
    progress: Callable[[Reply], None] | None = None,
) -> dict[str, Configured]:
    """Restart the daemon of every node whose restart is pending, where a systemd ``unit`` runs it.

    A node without such a unit keeps ``restart_pending`` and says why; nothing else is touched.
    """
    pending = [name for name, state in configured.items() if state.restart_pending]
    replies = call_all(pending, "restart", lambda _: {"unit": unit}, progress)
    done = dict(configured)
    for name, reply in replies.items():
        restarted = bool(reply.result.get("restarted"))
        reason = reply.error or str(reply.result.get("reason") or "")
        done[name] = Configured(configured[name].changed, not restarted, reason)
    return done


def install_units(
    configured: dict[str, Configured],
    frontend_repo: str,
    host_repo: str,
    unit: str,
    progress: Callable[[Reply], None] | None = None,
) -> dict[str, Configured]:
    """Install the systemd ``unit`` of every node's Kubo daemon and have it run the new settings.

    A node where that failed keeps its pending restart, with the reason, and counts as failed.
    """
    return daemon_units(
        configured,
        "unit",
        lambda name: {"repo": frontend_repo if name == FRONTEND else host_repo},
        unit,
        progress,
    )


def daemon_units(
    configured: dict[str, Configured],
    command: str,
    payload: Callable[[str], dict[str, Any]],
    unit: str,
    progress: Callable[[Reply], None] | None = None,
) -> dict[str, Configured]:
    """Run the remote ``command`` that installs a daemon's systemd ``unit`` on every configured node
    (``payload``: where the daemon's folder is); what happened to each node's daemon."""
    replies = call_all(
        configured,
        command,
        lambda name: {"unit": unit, "restart": configured[name].restart_pending, **payload(name)},
        progress,
    )
    done = {}
    for name, reply in replies.items():
        changed = configured[name].changed
        if reply.error:
            done[name] = Configured(changed, configured[name].restart_pending, reply.error, failed=True)
        else:
            written = "installed" if reply.result.get("changed") else "unchanged"
            summary = f"systemd unit {unit} {written}, {reply.result.get('done')}"
            done[name] = Configured(changed, False, summary)
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


def _member(name: str, reply: Reply, frontend_address: str | None) -> Member:
    """A node's identity and the addresses it keeps: its concrete swarm addresses, or one made from the
    address ssh reaches it at (the frontend: ``--address``); loopback API and gateway, else the defaults."""
    facts = reply.result
    swarm = tuple(a for a in facts.get("swarm_addresses") or [] if CONCRETE.match(a))
    if name == FRONTEND and frontend_address:
        swarm = (f"/ip4/{frontend_address}/tcp/{KUBO_SWARM_PORT}",)
    if not swarm:
        if name == FRONTEND:
            raise InvalidInput("the frontend listens on no storage-network address: give it with --address")
        swarm = (f"/ip4/{resolve_address(name)}/tcp/{KUBO_SWARM_PORT}",)
    defaults = NodeSettings(swarm_addresses=swarm)
    api = facts.get("api_address")
    gateway = facts.get("gateway_address")
    return Member(
        name=name,
        peer_id=facts["peer_id"],
        swarm_addresses=swarm,
        api_address=api if isinstance(api, str) and _LOOPBACK.match(api) else defaults.api_address,
        gateway_address=gateway
        if isinstance(gateway, str) and _LOOPBACK.match(gateway)
        else defaults.gateway_address,
        storage_max=facts.get("storage_max") or defaults.storage_max,
    )
