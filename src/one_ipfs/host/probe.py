"""A node's facts for ``one-ipfs doctor`` and ``network status`` (``protocol.Probe``): its clock, python3,
Kubo binary, repository, host bundle and daemon, read without changing anything, never the swarm key itself.

The probe is what tells whether a host holds the frontend's host bundle, so it must run on one that holds none
or another version: the frontend sends this file's source as the ``python3 -c`` program (``hosts.calls``), the
request as one JSON line on stdin, and reads the result back as ``protocol.NodeFacts``. Hence this module
imports only the standard library at load; the daemon is asked with the drivers' own client from the host
bundle (``lib``, put first on the path), and only when that bundle is the frontend's: another version's client
may not ask the same way. Python 3.9.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from one_ipfs.ipfs.rpc import KuboClient

RESTART_MARKER = ".one-ipfs-restart"
"""Written into a repository whenever ``configure`` changed it; a daemon started before runs old settings."""
API_FILE = "api"
"""Kubo writes ``$IPFS_PATH/api`` when its daemon starts (and removes it at exit)."""
BUNDLE_STAMP = "BUNDLE"
PEER_ID = re.compile(r"^[A-Za-z0-9]{1,128}$")
"""A libp2p peer ID as Kubo's config holds one: a base58btc multihash or a base32 CID."""
MULTIADDR = re.compile(r"^/[!-~]{1,1023}$")
"""A multiaddr as text: printable ASCII, no space."""


def probe(
    repo: str,
    api: str,
    *,
    auth_file: str = "",
    auth_setting: str = "",
    lib: str | None = None,
    frontend_bundle: str | None = None,
) -> dict[str, Any]:
    """The node's facts; ``lib`` (given for hosts) is the host bundle's folder, ``frontend_bundle`` the
    digest of the frontend's."""
    bundle = None
    if lib is not None:
        sys.path.insert(0, lib)
        bundle = (read_text(os.path.join(lib, BUNDLE_STAMP)) or "").strip() or None
    daemon = (
        {"up": False, "unasked": True, "error": f"not asked: the host bundle is {bundle or 'missing'}"}
        if lib is not None and bundle != frontend_bundle
        else ask_daemon(api, auth_file, auth_setting)
    )
    return {
        "time": time.time(),
        "python": platform.python_version(),
        "ipfs_binary": shutil.which("ipfs"),
        "bundle": bundle,
        "bundle_python": _bundle_problem() if bundle else None,
        "repo": read_repository(os.path.expanduser(repo)),
        "daemon": daemon,
    }


def _bundle_problem() -> str | None:
    """Why this python3 (the one the drivers run on this host) cannot import the host bundle on its path,
    or None."""
    try:
        import one_ipfs.host.__main__  # noqa: F401
    except Exception as exc:  # whatever stops this import stops every transfer to this host
        return f"{type(exc).__name__}: {exc}"
    return None


def restart_pending(configured_at: float | None, daemon_started_at: float | None) -> bool:
    """True when a folder changed (``configure``) after its daemon started, or with none running."""
    return configured_at is not None and (daemon_started_at is None or daemon_started_at < configured_at)


def read_repository(repo: str) -> dict[str, Any]:
    """Identity, addresses, limits and the swarm key's fingerprint of a repository, from its files."""
    facts: dict[str, Any] = {
        "path": repo,
        "exists": os.path.isdir(repo),
        "configured_at": mtime(os.path.join(repo, RESTART_MARKER)),
        "daemon_started_at": mtime(os.path.join(repo, API_FILE)),
    }
    try:
        with open(os.path.join(repo, "config")) as f:
            config = json.load(f)
    except FileNotFoundError:
        facts["error"] = f"no Kubo repository at {repo}"
        return facts
    except (OSError, ValueError) as exc:
        facts["error"] = f"cannot read {repo}/config: {exc}"
        return facts
    addresses = config.get("Addresses") or {}
    facts.update(
        peer_id=(config.get("Identity") or {}).get("PeerID"),
        api_address=addresses.get("API"),
        gateway_address=addresses.get("Gateway"),
        swarm_addresses=addresses.get("Swarm") or [],
        storage_max=(config.get("Datastore") or {}).get("StorageMax"),
        peers=peering(config.get("Peering")),
    )
    try:
        with open(os.path.join(repo, "swarm.key"), "rb") as f:
            facts["swarm_key"] = fingerprint(f.read())
    except FileNotFoundError:
        pass
    except OSError as exc:
        facts["error"] = f"cannot read {repo}/swarm.key: {exc}"
    return facts


def peering(section: Any) -> list[dict[str, Any]]:
    """The peers a repository's node keeps connected (Kubo ``Peering.Peers``), leaving out every entry that
    is not one (no peer ID, or addresses that are no multiaddrs: Kubo would not even start with it)."""
    entries = section.get("Peers") if isinstance(section, dict) else None
    peers = []
    for entry in entries if isinstance(entries, list) else ():
        peer_id = entry.get("ID") if isinstance(entry, dict) else None
        addresses = (entry.get("Addrs") or []) if isinstance(entry, dict) else None
        if (
            isinstance(peer_id, str)
            and PEER_ID.match(peer_id)
            and isinstance(addresses, list)
            and all(isinstance(a, str) and MULTIADDR.match(a) for a in addresses)
        ):
            peers.append({"peer_id": peer_id, "addresses": addresses})
    return peers


def fingerprint(swarm_key: bytes) -> str:
    """A short digest that tells two swarm keys apart without revealing either."""
    lines = swarm_key.decode(errors="replace").split()
    material = lines[-1].lower() if lines else ""
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def ask_daemon(api: str, auth_file: str = "", auth_setting: str = "") -> dict[str, Any]:
    """What the running daemon says about itself over its RPC API; ``up`` False with the reason otherwise
    (``auth`` True when the reason is its secret: unreadable, or refused; ``unasked`` True when this python3
    cannot load the drivers' client to ask it)."""
    try:
        from one_ipfs.errors import AccessRefused, OneIpfsError
        from one_ipfs.ipfs import rpc  # noqa: F401 - loaded first, so that a host that cannot is told apart
    except Exception as exc:  # whatever stops this import: doctor's bundle checks say why and what to do
        return {"up": False, "unasked": True, "error": f"the host bundle cannot be loaded: {exc}"}
    try:
        auth = _secret(auth_file, auth_setting)
    except OneIpfsError as exc:
        return {"up": False, "auth": True, "error": str(exc)}
    try:
        kubo = _kubo(api, auth)
        version = kubo.version()
        peer_id = kubo.id().peer_id
        peers = kubo.swarm_peers()
        stat = kubo.repo_stat()
        api_address = kubo.config_value("Addresses.API")
    except AccessRefused:
        reason = "a wrong secret" if auth else "no secret"
        return {"up": False, "auth": True, "error": f"the Kubo RPC API at {api} refused {reason}"}
    except OneIpfsError as exc:
        return {"up": False, "error": str(exc)}
    return {
        "up": True,
        "version": version,
        "peer_id": peer_id,
        "peers": sorted({peer for peer, _ in peers}),
        "repo_size": stat.repo_size,
        "storage_max": stat.storage_max,
        "api_address": api_address,
    }


def _secret(auth_file: str, setting: str) -> str | None:
    """The ``Authorization`` header for the secret kept in ``auth_file``; None without a file."""
    from one_ipfs.ipfs.rpc import authorization_from_file

    return authorization_from_file(auth_file, setting) if auth_file else None


def _kubo(api: str, auth: str | None) -> KuboClient:
    """The drivers' own client (from the host bundle, on a host) for the node at ``api``."""
    from one_ipfs.defaults import ADMIN_RPC_TIMEOUT
    from one_ipfs.ipfs.rpc import KuboClient

    return KuboClient(api, timeout=ADMIN_RPC_TIMEOUT, auth=auth)


def mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def main() -> int:
    """As ``python3 -c``: the request (``protocol.Probe`` as JSON) on stdin, the facts as one JSON line."""
    request = json.loads(sys.stdin.readline())
    request.pop("command", None)
    sys.stdout.write(json.dumps(probe(**request)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
