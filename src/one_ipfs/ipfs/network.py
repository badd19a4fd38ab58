"""Make a Kubo repository a member of a private IPFS network (one swarm key, explicit peering).

A datacenter image network must never reach the public IPFS network: no bootstrap, no mDNS, no AutoConf, no
telemetry, no relays, NAT traversal or HTTP retrieval, and nodes dial only the peers they are told about.
Every key written here exists in Kubo's config (checked against Kubo 0.43 by ``tests/test_network.py``).
The test bed and the admin tool (``one-ipfs network``) use it; it is standard library only and part of the
host bundle, so that the admin tool runs this very code on every host.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from one_ipfs.errors import CommandFailed, InvalidInput, StorageError

SWARM_KEY_HEADER = b"/key/swarm/psk/1.0.0/\n/base16/\n"
_SWARM_KEY = re.compile(rb"/key/swarm/psk/1\.0\.0/\n/base16/\n[0-9a-fA-F]{64}\n?")

INIT_PROFILES = ("autoconf-off", "unixfs-v1-2025")
"""``autoconf-off`` so the repository is born without any ``"auto"`` placeholder (nothing is ever fetched from
the AutoConf service); ``unixfs-v1-2025`` so that adds without explicit parameters (CLI, MFS) produce the same
CIDs as the drivers' ImportSettings."""


@dataclass(frozen=True)
class Peer:
    """Another member of the private network, dialled directly and kept connected (Kubo ``Peering.Peers``)."""

    peer_id: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class NodeSettings:
    """Where a node listens and whom it peers with.

    ``storage_max`` raises Kubo's 10GB default, which is too small for VM images; it only steers GC
    (``ipfs daemon --enable-gc``), it is not a quota.
    """

    swarm_addresses: tuple[str, ...]
    api_address: str = "/ip4/127.0.0.1/tcp/5001"
    gateway_address: str = "/ip4/127.0.0.1/tcp/8080"
    peers: tuple[Peer, ...] = ()
    storage_max: str = "50GB"


def generate_swarm_key() -> bytes:
    """A new 32-byte pre-shared key in the file format ``ipfs-swarm-key-gen`` writes."""
    return SWARM_KEY_HEADER + secrets.token_bytes(32).hex().encode() + b"\n"


def init_repository(ipfs: Path, repo: Path) -> str:
    """Create a Kubo repository with an ed25519 identity and return its peer ID.

    ``ipfs init`` runs offline; the profiles in INIT_PROFILES keep it from ever naming a public endpoint.
    """
    env = {**os.environ, **daemon_environment(repo)}
    env.pop("LIBP2P_FORCE_PNET")  # the swarm key is written afterwards by configure_private_node
    argv = [str(ipfs), "init", "--empty-repo", "--profile", ",".join(INIT_PROFILES)]
    run_init(argv, env, f"Kubo at {ipfs}", f"ipfs init of {repo}")
    return read_peer_id(repo)


def run_init(argv: list[str], env: dict[str, str] | None, program: str, what: str) -> None:
    """Run a daemon's ``init`` (offline, quick); CommandFailed with its last line of output if it fails."""
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CommandFailed(f"cannot run {program}: {exc.strerror}") from exc
    if result.returncode != 0:
        reason = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise CommandFailed(f"{what} failed: {reason[-1] if reason else 'no output'}")


def configure_private_node(repo: Path, swarm_key: bytes, settings: NodeSettings) -> bool:
    """Write ``swarm.key`` (mode 0600) and the private-network settings into the repository's config;
    return whether anything changed (nothing is rewritten that already holds the same content).

    Kubo reads both only at start: a running daemon keeps its old settings until it is restarted.
    """
    if not _SWARM_KEY.fullmatch(swarm_key):
        raise InvalidInput("the swarm key is not in the /key/swarm/psk/1.0.0/ base16 format")
    if not settings.swarm_addresses:
        raise InvalidInput("a private node needs at least one swarm address to listen on")
    config_path = repo / "config"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError as exc:
        raise StorageError(f"{repo} is not a Kubo repository: it has no config file") from exc
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read the Kubo config {config_path}: {exc}") from exc
    before = json.dumps(config, sort_keys=True)
    for path, value in private_network_config(settings).items():
        _set(config, path, value)
    key_path = repo / "swarm.key"
    try:
        same_key = key_path.read_bytes() == swarm_key
    except FileNotFoundError:
        same_key = False
    except OSError as exc:
        raise StorageError(f"cannot read {key_path}: {exc.strerror}") from exc
    same_config = json.dumps(config, sort_keys=True) == before
    if not same_key:
        _write_private(key_path, swarm_key)
    if not same_config:
        _write_private(config_path, (json.dumps(config, indent=2) + "\n").encode())
    return not (same_key and same_config)


def private_network_config(settings: NodeSettings) -> dict[str, Any]:
    """Config values by dotted key, each with the reason it is set.

    Kept as data so that the admin tool can show them and the tests can check every key against Kubo.
    ``Addresses.NoAnnounce`` and ``Swarm.AddrFilters`` stay empty: ``Addresses.Announce`` already replaces
    every inferred address, AddrFilters is a deny list that cannot say "only the storage network", and
    nothing here gives a node any address to dial but its peers'.
    """
    swarm = list(settings.swarm_addresses)
    return {
        # Nothing public: no bootstrap list, no AutoConf (it would fetch the mainnet list and errors on a
        # private network), no DNS-over-HTTPS resolvers, no delegated HTTP routers or IPNS publishers.
        "Bootstrap": [],
        "AutoConf.Enabled": False,
        "DNS.Resolvers": {},
        "Routing.DelegatedRouters": [],
        "Ipns.DelegatedPublishers": [],
        # Members find each other by configuration, not by multicast on whatever LAN the host sits on.
        "Discovery.MDNS.Enabled": False,
        # Telemetry is opt-in since Kubo 0.43 but was opt-out in 0.37-0.42.
        "Plugins.Plugins.telemetry.Config.Mode": "off",
        # The RPC API grants full control of the node: loopback only, like the gateway.
        "Addresses.API": settings.api_address,
        "Addresses.Gateway": settings.gateway_address,
        # Listen and announce exactly the storage-network addresses, never inferred or observed ones.
        "Addresses.Swarm": swarm,
        "Addresses.Announce": swarm,
        "Addresses.AppendAnnounce": [],
        "Peering.Peers": [{"ID": peer.peer_id, "Addrs": list(peer.addresses)} for peer in settings.peers],
        # Members reach each other directly: no relays, hole punching, UPnP/NAT-PMP, AutoNAT probes, AutoTLS
        # certificates (Let's Encrypt + libp2p.direct) or HTTP retrieval from providers outside the swarm.
        "Swarm.RelayClient.Enabled": False,
        "Swarm.RelayService.Enabled": False,
        "Swarm.Transports.Network.Relay": False,
        "Swarm.EnableHolePunching": False,
        "Swarm.DisableNatPortMap": True,
        "AutoNAT.ServiceMode": "disabled",
        "AutoTLS.Enabled": False,
        "HTTPRetrieval.Enabled": False,
        # A PSK network is TCP only; a WebSocket listener would share the TCP port, which libp2p refuses
        # (and logs an error for) on a private network.
        "Swarm.Transports.Network.Websocket": False,
        # Every member serves the DHT to the others (with AutoNAT off, "dht" would never decide to serve).
        # libp2p's LAN DHT admits peers with private addresses (10/8, 172.16/12, 192.168/16, ...); peers in
        # 198.18.0.0/15 (the test bed) count as neither public nor private and never enter a routing table.
        # Content still flows between peered nodes (bitswap asks every connected peer), and IPNS records
        # travel over pubsub between connected peers, which works for any address; hosts fetching one image
        # at once also tell each other their progress over pubsub (one_ipfs.ipfs.fleet).
        "Routing.Type": "dhtserver",
        # Kubo's broadcast control sends a node's want-haves only to peers in its own Peering.Peers, on
        # private or loopback addresses, or that gave it blocks before. A member whose identity another
        # member's Peering does not name yet (a rebuilt frontend's node before every host is restarted
        # with `network init`'s settings; any member outside 10/8, 172.16/12, 192.168/16) would never be
        # asked: a replica of what only it holds never arrived. Every connected member is in the network.
        "Internal.Bitswap.BroadcastControl.Enable": False,
        # Such hosts read each other's blocks through their gateways over libp2p streams, so that a block
        # one of them holds is not sent by the frontend as well; a gateway serves only what its node holds
        # (it never fetches for a peer), and one-ipfs reads no other content through it.
        "Gateway.NoFetch": True,
        "Experimental.Libp2pStreamMounting": True,
        "Experimental.P2pHttpProxy": True,
        "Pubsub.Enabled": True,
        "Ipns.UsePubsub": True,
        "Datastore.StorageMax": settings.storage_max,
        # Members find blocks by asking their peers (every member peers with every other), so announcing
        # every block of every image to the DHT is work and traffic for nothing; the roots are enough for
        # a node that is not peered yet.
        "Provide.Strategy": "roots",
    }


def daemon_environment(repo: Path) -> dict[str, str]:
    """Variables to add to ``os.environ`` for any ``ipfs`` command on this repository.

    ``LIBP2P_FORCE_PNET=1`` makes the daemon refuse to start without ``swarm.key`` instead of silently joining
    the public network; ``IPFS_TELEMETRY=off`` wins over any config.
    """
    return {"IPFS_PATH": str(repo), "LIBP2P_FORCE_PNET": "1", "IPFS_TELEMETRY": "off"}


def read_peer_id(repo: Path) -> str:
    """The node's peer ID, from the config ``ipfs init`` wrote (no daemon needed)."""
    config_path = repo / "config"
    try:
        peer_id = json.loads(config_path.read_text())["Identity"]["PeerID"]
    except FileNotFoundError as exc:
        raise StorageError(f"{repo} is not a Kubo repository: it has no config file") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"cannot read the peer ID from {config_path}: {exc}") from exc
    if not isinstance(peer_id, str) or not peer_id:
        raise StorageError(f"{config_path} holds no peer ID")
    return peer_id


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a 0600 file: the swarm key and the identity key are secrets."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
