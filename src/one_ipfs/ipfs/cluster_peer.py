"""Make a node an IPFS Cluster peer of the one-ipfs cluster: its identity and its ``service.json``.

A peer's folder (``IPFS_CLUSTER_PATH``) is created by ``ipfs-cluster-service init`` itself, then only the
settings that make it a member are written: the cluster's one secret, CRDT consensus trusting the frontends'
peers only, its members dialled directly (no mDNS, no relay), repinning on, its Kubo node's RPC API on
loopback, and a REST API only where one is asked for (the frontend). The admin tool (``one-ipfs cluster``)
runs this very code on every node (it is standard library only and part of the host bundle).
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from one_ipfs.errors import CommandFailed, InvalidInput, StorageError
from one_ipfs.ipfs.network import _write_private, run_init

SERVICE = "ipfs-cluster-service"
CACHE = "/var/cache/one-ipfs/ipfs-cluster"
"""Where ``scripts/ensure-ipfs-cluster`` puts the binaries it builds (``ONE_IPFS_CACHE`` moves it)."""
CONFIG = "service.json"
IDENTITY = "identity.json"
SECRET_LENGTH = 64


@dataclass(frozen=True)
class PeerSettings:
    """What makes a peer a member: its name, where it listens, whom it dials and trusts, its Kubo node's RPC
    API (a multiaddr), and its REST API (empty: none)."""

    name: str
    listen_address: str
    peers: tuple[str, ...]
    trusted: tuple[str, ...]
    kubo_api: str
    rest_api: str = ""


def find_service() -> Path | None:
    """``ipfs-cluster-service`` on PATH, else the newest ``scripts/ensure-ipfs-cluster`` built."""
    on_path = shutil.which(SERVICE)
    if on_path is not None:
        return Path(on_path)
    cache = os.path.join(os.environ.get("ONE_IPFS_CACHE", os.path.dirname(CACHE)), "ipfs-cluster")
    built = sorted(glob.glob(os.path.join(cache, "*", SERVICE)), key=os.path.getmtime)
    return Path(built[-1]) if built else None


def new_secret() -> str:
    return secrets.token_hex(SECRET_LENGTH // 2)


def init_peer(service: Path | None, folder: Path) -> bool:
    """Create the peer's identity and default configuration (CRDT) unless it has them; whether it did."""
    if (folder / CONFIG).exists() and (folder / IDENTITY).exists():
        return False
    if (folder / CONFIG).exists() or (folder / IDENTITY).exists():
        raise StorageError(
            f"{folder} holds only one of {CONFIG} and {IDENTITY}: move it away, then run again"
        )
    if service is None:
        raise CommandFailed(
            f"no IPFS Cluster peer at {folder} and no {SERVICE} to create one: install IPFS Cluster 1.1 "
            "(or run scripts/ensure-ipfs-cluster)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    argv = [str(service), "--config", str(folder), "init", "--consensus", "crdt"]
    run_init(argv, None, str(service), f"{SERVICE} init of {folder}")
    return True


def read_peer_id(folder: Path) -> str:
    identity = _read_json(folder / IDENTITY)
    peer_id = identity.get("id")
    if not isinstance(peer_id, str) or not peer_id:
        raise StorageError(f"{folder / IDENTITY} holds no peer ID")
    return peer_id


def read_secret(folder: Path) -> str:
    """The cluster's secret as the peer in ``folder`` holds it (``ipfs-cluster-service init`` made one)."""
    secret = _read_json(folder / CONFIG).get("cluster", {}).get("secret")
    if not isinstance(secret, str) or len(secret) != SECRET_LENGTH:
        raise StorageError(f"{folder / CONFIG} holds no cluster secret")
    return secret


def current_settings(folder: Path) -> PeerSettings:
    """The member settings ``service.json`` holds now (as ``ipfs-cluster-service init`` left them, or as the
    last ``configure_peer`` wrote them)."""
    config = _read_json(folder / CONFIG)
    cluster = config.get("cluster") or {}
    listen = cluster.get("listen_multiaddress") or []
    listen = [listen] if isinstance(listen, str) else listen
    trusted = ((config.get("consensus") or {}).get("crdt") or {}).get("trusted_peers") or []
    kubo = ((config.get("ipfs_connector") or {}).get("ipfshttp") or {}).get("node_multiaddress") or ""
    rest = ((config.get("api") or {}).get("restapi") or {}).get("http_listen_multiaddress") or ""
    return PeerSettings(
        name=str(cluster.get("peername") or ""),
        listen_address=str(listen[0]) if listen else "",
        peers=tuple(str(peer) for peer in cluster.get("peer_addresses") or []),
        trusted=tuple(str(peer) for peer in trusted),
        kubo_api=str(kubo),
        rest_api=str(rest[0] if isinstance(rest, list) and rest else rest),
    )


def configure_peer(folder: Path, secret: str, settings: PeerSettings) -> bool:
    """Write the member settings into the peer's ``service.json``; whether anything changed.

    The peer reads them at start: a running one keeps its old settings until it is restarted.
    """
    if len(secret) != SECRET_LENGTH or any(c not in "0123456789abcdef" for c in secret):
        raise InvalidInput("the cluster secret is not 32 bytes in hex")
    path = folder / CONFIG
    config = _read_json(path)
    before = json.dumps(config, sort_keys=True)
    cluster = config.setdefault("cluster", {})
    cluster.update(
        peername=settings.name,
        secret=secret,
        listen_multiaddress=[settings.listen_address],
        peer_addresses=list(settings.peers),
        mdns_interval="0s",
        enable_relay_hop=False,
        disable_repinning=False,
    )
    config.setdefault("consensus", {}).setdefault("crdt", {})["trusted_peers"] = list(settings.trusted)
    config.setdefault("ipfs_connector", {}).setdefault("ipfshttp", {})["node_multiaddress"] = (
        settings.kubo_api
    )
    rest = (config.get("api") or {}).get("restapi") or {}
    config["api"] = (
        {"restapi": {**rest, "http_listen_multiaddress": settings.rest_api}} if settings.rest_api else {}
    )
    if json.dumps(config, sort_keys=True) == before:
        return False
    _write_private(path, (json.dumps(config, indent=2) + "\n").encode())
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise StorageError(f"no IPFS Cluster peer at {path.parent}: it has no {path.name}") from exc
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    if not isinstance(value, dict):
        raise StorageError(f"{path} is not a JSON object")
    return value
