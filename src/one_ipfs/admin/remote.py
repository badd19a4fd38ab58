"""What the admin tool runs on a node: its facts (``probe``) and its private-network settings (``configure``).

Hosts cannot import one_ipfs (only the drivers' host bundle is synced there), so this module is sent over
ssh as the source of a single ``python3`` process, with its input as one JSON line on stdin; the frontend
imports it. Standard library only, python3 >= 3.9. ``configure`` does for a host what
``one_ipfs.ipfs.network.configure_private_node`` does for a local repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

BOOT = (
    "import json, sys\n"
    "message = json.loads(sys.stdin.readline())\n"
    "scope = {'__name__': 'one_ipfs_remote'}\n"
    "exec(compile(message['script'], 'one-ipfs-remote', 'exec'), scope)\n"
    "sys.exit(scope['main'](message['command'], message['payload']))\n"
)
"""The python3 -c program that runs this module's source from stdin on a host."""

INIT_PROFILES = "autoconf-off,unixfs-v1-2025"


def main(command: str, payload: dict[str, Any]) -> int:
    """Run ``command`` and print its JSON result as the last line of stdout."""
    if command == "probe":
        result = probe(payload)
    elif command == "init":
        result = init(payload)
    elif command == "configure":
        result = configure(payload)
    else:
        sys.stderr.write(f"one-ipfs remote: unknown command {command}\n")
        return 2
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def probe(payload: dict[str, Any]) -> dict[str, Any]:
    """Everything doctor judges about a node, read without changing anything. Never the swarm key itself."""
    bundle = None
    if payload.get("bundle"):
        try:
            with open(payload["bundle"]) as stamp:
                bundle = stamp.read().strip()
        except OSError:
            bundle = None
    return {
        "time": time.time(),
        "python": platform.python_version(),
        "ipfs_binary": shutil.which("ipfs"),
        "bundle": bundle,
        "repo": read_repository(os.path.expanduser(payload["repo"])),
        "daemon": ask_daemon(payload["api"]),
    }


def init(payload: dict[str, Any]) -> dict[str, Any]:
    """Create the repository when there is none (offline, never naming a public endpoint); report it."""
    repo = os.path.expanduser(payload["repo"])
    created = False
    if not os.path.exists(os.path.join(repo, "config")):
        ipfs = shutil.which("ipfs")
        if ipfs is None:
            return {"error": f"no Kubo repository at {repo} and no ipfs command to create one"}
        env = dict(os.environ, IPFS_PATH=repo, IPFS_TELEMETRY="off")
        env.pop("LIBP2P_FORCE_PNET", None)
        result = subprocess.run(
            [ipfs, "init", "--empty-repo", "--profile", INIT_PROFILES],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
            return {"error": f"ipfs init of {repo} failed: {lines[-1] if lines else 'no output'}"}
        created = True
    facts = read_repository(repo)
    facts["created"] = created
    return facts


def configure(payload: dict[str, Any]) -> dict[str, Any]:
    """Write ``swarm.key``, set the dotted config keys of ``payload['settings']``; say if anything changed."""
    repo = os.path.expanduser(payload["repo"])
    config_path = os.path.join(repo, "config")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        return {"error": f"cannot read the Kubo config {config_path}: {exc}"}
    before = json.dumps(config, sort_keys=True)
    for dotted, value in payload["settings"].items():
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value
    key = payload["swarm_key"].encode()
    key_path = os.path.join(repo, "swarm.key")
    try:
        with open(key_path, "rb") as f:
            same_key = f.read() == key
    except OSError:
        same_key = False
    changed = not same_key or json.dumps(config, sort_keys=True) != before
    try:
        if not same_key:
            _write_private(key_path, key)
        if changed:
            _write_private(config_path, (json.dumps(config, indent=2) + "\n").encode())
    except OSError as exc:
        return {"error": f"cannot write the Kubo repository {repo}: {exc}"}
    return {"changed": changed}


def read_repository(repo: str) -> dict[str, Any]:
    """Identity, addresses, limits and the swarm key's fingerprint of a repository, from its files."""
    facts: dict[str, Any] = {"path": repo, "exists": os.path.isdir(repo)}
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
        swarm_key=None,
    )
    try:
        with open(os.path.join(repo, "swarm.key"), "rb") as f:
            facts["swarm_key"] = fingerprint(f.read())
    except FileNotFoundError:
        pass
    except OSError as exc:
        facts["error"] = f"cannot read {repo}/swarm.key: {exc}"
    return facts


def fingerprint(swarm_key: bytes) -> str:
    """A short digest that tells two swarm keys apart without revealing either."""
    lines = swarm_key.decode(errors="replace").split()
    material = lines[-1].lower() if lines else ""
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def ask_daemon(api: str) -> dict[str, Any]:
    """What the running daemon says about itself over its RPC API; ``up`` False with the reason otherwise."""
    base = api_url(api)
    try:
        version = _call(base, "version")
        identity = _call(base, "id")
        peers = _call(base, "swarm/peers").get("Peers") or []
        stat = _call(base, "repo/stat?size-only=true")
        api_address = _call(base, "config?arg=Addresses.API").get("Value")
    except (OSError, ValueError) as exc:
        return {"up": False, "error": f"no Kubo RPC API answers at {base}: {getattr(exc, 'reason', exc)}"}
    return {
        "up": True,
        "version": version.get("Version"),
        "peer_id": identity.get("ID"),
        "peers": sorted({peer.get("Peer") for peer in peers if peer.get("Peer")}),
        "repo_size": stat.get("RepoSize"),
        "storage_max": stat.get("StorageMax"),
        "api_address": api_address,
    }


def api_url(api: str) -> str:
    """``http://host:port`` from a URL or a ``/ip4|ip6|dns/<host>/tcp/<port>`` multiaddr."""
    if api.startswith("/"):
        parts = api.split("/")
        host = f"[{parts[2]}]" if parts[1] == "ip6" else parts[2]
        return f"http://{host}:{parts[4]}"
    return api.rstrip("/")


def _call(base: str, path: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    # base is an http URL made by api_url from the configured API address.
    request = urllib.request.Request(f"{base}/api/v0/{path}", data=b"", method="POST")  # noqa: S310
    with opener.open(request, timeout=10) as response:
        result = json.loads(response.read().decode())
    return result if isinstance(result, dict) else {}


def _write_private(path: str, data: bytes) -> None:
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
