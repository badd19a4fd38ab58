"""``one-ipfs network init|join``: the frontend and every host become one private IPFS network.

The swarm key is created once, on the frontend, and then only copied; every node peers with every other
at its storage-network address. Kubo reads its config at start, so every changed node needs a restart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from one_ipfs.admin.nodes import FRONTEND, Reply, call_all, resolve_address
from one_ipfs.errors import HostError, InvalidInput
from one_ipfs.ipfs.network import NodeSettings, Peer, generate_swarm_key, private_network_config

SWARM_PORT = 4001
_CONCRETE = re.compile(r"^/ip[46]/(?!0\.0\.0\.0/|::/)[^/]+/tcp/\d+$")
_LOOPBACK = re.compile(r"^/ip4/127\.\d+\.\d+\.\d+/tcp/\d+$")


@dataclass(frozen=True)
class Member:
    name: str
    peer_id: str
    swarm_addresses: tuple[str, ...]
    api_address: str
    gateway_address: str
    storage_max: str


def join(
    frontend_repo: str,
    host_repo: str,
    hosts: list[str],
    frontend_address: str | None,
    *,
    new_network: bool,
    progress: Callable[[Reply], None] | None = None,
) -> dict[str, bool]:
    """Configure the frontend and ``hosts``; return, per node, whether its configuration changed.

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
            "settings": private_network_config(settings[name]),
        },
        progress,
    )
    failed = [reply.error for reply in results.values() if reply.error]
    if failed:
        raise HostError("; ".join(str(error) for error in failed))
    return {name: bool(reply.result.get("changed")) for name, reply in results.items()}


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
    swarm = tuple(a for a in facts.get("swarm_addresses") or [] if _CONCRETE.match(a))
    if name == FRONTEND and frontend_address:
        swarm = (f"/ip4/{frontend_address}/tcp/{SWARM_PORT}",)
    if not swarm:
        if name == FRONTEND:
            raise InvalidInput("the frontend listens on no storage-network address: give it with --address")
        swarm = (f"/ip4/{resolve_address(name)}/tcp/{SWARM_PORT}",)
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
