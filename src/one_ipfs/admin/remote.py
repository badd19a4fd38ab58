"""What the admin tool runs on a node: its facts (``probe``), its repository (``init``), its private-network
settings (``configure``), a restart of its Kubo daemon (``restart``), the systemd unit that runs the daemon
(``unit``), and the same for its IPFS Cluster peer (``cluster_*``).

Hosts cannot import the frontend's one_ipfs, so this module is sent over ssh as the source of a single
``python3`` process, with its input as one JSON line on stdin; the frontend imports it. Standard library
only, python3 >= 3.9. ``init`` and ``configure`` run ``one_ipfs.ipfs.network`` itself, and every question
to a Kubo node goes through the drivers' own client (``one_ipfs.ipfs.rpc``), from the host bundle the
drivers use (``lib`` on the host's path); a host that lacks the frontend's bundle answers ``init``,
``configure`` and ``cluster_*`` with exit status 3 and gets it shipped, as the transfer driver does, while
``probe`` reports the bundle it finds and asks the daemon only with the frontend's.
"""

from __future__ import annotations

import fcntl
import grp
import hashlib
import json
import os
import platform
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from one_ipfs.ipfs.rpc import KuboClient

BOOT = (
    "import json, sys\n"
    "message = json.loads(sys.stdin.readline())\n"
    "sys.path.insert(0, message['lib'])\n"
    "scope = {'__name__': 'one_ipfs_remote'}\n"
    "exec(compile(message['script'], 'one-ipfs-remote', 'exec'), scope)\n"
    "sys.exit(scope['main'](message['command'], message['payload']))\n"
)
"""The python3 -c program that runs this module's source from stdin on a host, the host bundle importable."""

STALE_BUNDLE = 3
DOING = {
    "probe": "reading its Kubo node, repository, interpreter and clock (remote probe)",
    "init": "creating its Kubo repository if it has none (remote init)",
    "configure": "writing its private-network settings into its repository (remote configure)",
    "restart": "restarting its Kubo daemon through systemd (remote restart)",
    "unit": "installing the systemd unit of its Kubo daemon (remote unit)",
    "cluster_init": "creating its IPFS Cluster peer if it has none (remote cluster_init)",
    "cluster_configure": "writing its IPFS Cluster peer's settings (remote cluster_configure)",
    "cluster_unit": "installing the systemd unit of its IPFS Cluster peer (remote cluster_unit)",
}
"""What each command does, as ``one-ipfs --verbose`` says it."""
BUNDLED = ("init", "configure", "cluster_init", "cluster_configure", "cluster_unit")
"""The commands that import the host bundle (``one_ipfs``): a host must hold the frontend's."""
RESTART_MARKER = ".one-ipfs-restart"
"""Written into a repository whenever ``configure`` changed it; a daemon started before runs old settings."""
API_FILE = "api"
"""Kubo writes ``$IPFS_PATH/api`` when its daemon starts (and removes it at exit)."""
SYSTEMCTL_TIMEOUT = 120
"""Seconds one systemctl step may take. (Written here, not in ``one_ipfs.defaults`` with the others: this
module's ``restart`` and ``unit`` run on hosts that may not hold the host bundle.)"""
SYSTEMD_DIR = "/etc/systemd/system"
SYSTEMD_RUNTIME = "/run/systemd/system"
"""Exists only while systemd runs the machine (``sd_booted``): a systemctl binary alone proves nothing."""
UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,100}$")
"""A unit name as ``--unit`` gives it (``.service`` is added): a file name and a systemctl argument."""
UNIT_PATH = re.compile(r"^/[A-Za-z0-9._/+@:-]*$")
"""Paths written into the unit as they are: no space, quote, ``%`` specifier or backslash to escape."""
REPO_LOCK = "repo.lock"
"""Kubo holds an fcntl write lock on this file of its repository while its daemon runs."""
CLUSTER_LOCK = "cluster.lock"
"""An IPFS Cluster peer creates this file in its folder when it starts, and holds a lock on it."""


def main(command: str, payload: dict[str, Any]) -> int:
    """Run ``command`` and print its JSON result as the last line of stdout."""
    handlers = {
        "probe": probe,
        "init": init,
        "configure": configure,
        "restart": restart,
        "unit": unit,
        "cluster_init": cluster_init,
        "cluster_configure": cluster_configure,
        "cluster_unit": cluster_unit,
    }
    if command not in handlers:
        sys.stderr.write(f"one-ipfs remote: unknown command {command}\n")
        return 2
    if command in BUNDLED and not _bundle_matches(payload.get("bundle")):
        sys.stderr.write("one-ipfs host bundle is out of date\n")
        return STALE_BUNDLE
    sys.stdout.write(json.dumps(handlers[command](payload)) + "\n")
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
        "bundle_python": _bundle_problem() if bundle else None,
        "repo": read_repository(os.path.expanduser(payload["repo"])),
        "daemon": _daemon(payload, bundle),
    }


def _daemon(payload: dict[str, Any], bundle: str | None) -> dict[str, Any]:
    """The daemon's answer to ``ask_daemon``, asked with the drivers' client from the host bundle only when
    that bundle is the frontend's (``payload['frontend_bundle']``, given for hosts): another version's
    client may not ask the same way."""
    if "frontend_bundle" in payload and bundle != payload["frontend_bundle"]:
        return {"up": False, "unasked": True, "error": f"not asked: the host bundle is {bundle or 'missing'}"}
    return ask_daemon(payload["api"], payload["auth_file"], payload["auth_setting"])


def _bundle_problem() -> str | None:
    """Why this python3 (the one the drivers run on this host) cannot import the host bundle on its path,
    or None."""
    try:
        import one_ipfs.host.__main__  # noqa: F401
    except Exception as exc:  # whatever stops this import stops every transfer to this host
        return f"{type(exc).__name__}: {exc}"
    return None


def init(payload: dict[str, Any]) -> dict[str, Any]:
    """Create the repository when there is none (offline, never naming a public endpoint); report it."""
    from pathlib import Path

    from one_ipfs.errors import OneIpfsError
    from one_ipfs.ipfs.network import init_repository

    repo = os.path.expanduser(payload["repo"])
    created = False
    if not os.path.exists(os.path.join(repo, "config")):
        ipfs = shutil.which("ipfs")
        if ipfs is None:
            return {"error": f"no Kubo repository at {repo} and no ipfs command to create one"}
        try:
            init_repository(Path(ipfs), Path(repo))
        except OneIpfsError as exc:
            return {"error": str(exc)}
        created = True
    facts = read_repository(repo)
    facts["created"] = created
    return facts


def configure(payload: dict[str, Any]) -> dict[str, Any]:
    """Make the repository a member of the private network; say whether anything changed (and when)."""
    from pathlib import Path

    from one_ipfs.errors import OneIpfsError
    from one_ipfs.ipfs.network import NodeSettings, Peer, configure_private_node

    repo = os.path.expanduser(payload["repo"])
    node = payload["node"]
    settings = NodeSettings(
        swarm_addresses=tuple(node["swarm_addresses"]),
        api_address=node["api_address"],
        gateway_address=node["gateway_address"],
        peers=tuple(Peer(peer["peer_id"], tuple(peer["addresses"])) for peer in node["peers"]),
        storage_max=node["storage_max"],
    )
    try:
        changed = configure_private_node(Path(repo), payload["swarm_key"].encode(), settings)
        if changed:
            with open(os.path.join(repo, RESTART_MARKER), "w") as marker:
                marker.write(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    except (OneIpfsError, OSError) as exc:
        return {"error": str(exc)}
    return {"changed": changed, "restart_pending": restart_pending(read_repository(repo))}


def restart(payload: dict[str, Any]) -> dict[str, Any]:
    """Restart the daemon through its systemd unit when one runs it; otherwise say that nothing did."""
    unit = payload["unit"]
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return {"restarted": False, "reason": "no systemd here"}
    if not _active(systemctl, unit):
        return {"restarted": False, "reason": f"no active systemd unit {unit}"}
    failure = _as_root([systemctl, "restart", "--", unit])
    if failure is not None:
        return {"restarted": False, "reason": failure}
    return {"restarted": True, "reason": f"systemctl restart {unit}"}


class Daemon(NamedTuple):
    """A daemon of the network a systemd unit runs: how errors name it, its command, its folder, the lock
    file it holds there while it runs, and the unit's text for (command path, folder, user, group). (Not a
    dataclass: this module runs exec'd on hosts, outside ``sys.modules``.)"""

    name: str
    command: str
    folder: str
    lock: str
    text: Callable[[str, str, str, str], str]


def unit(payload: dict[str, Any]) -> dict[str, Any]:
    """Install (or update) the systemd unit ``payload['unit']`` that runs this node's Kubo daemon, then have
    it run the current settings: ``enable --now`` when it is stopped, a restart when it runs an older unit or
    older settings (``payload['restart']``). A daemon that the unit does not run is left alone, and said so.
    """
    kubo = Daemon("Kubo", "ipfs", "Kubo repository", REPO_LOCK, unit_text)
    return _install_unit(payload, kubo, shutil.which("ipfs"), payload["repo"])


def _install_unit(  # noqa: PLR0911 - one per way to fail
    payload: dict[str, Any], daemon: Daemon, command: str | None, folder: str
) -> dict[str, Any]:
    name = payload["unit"]
    systemctl = shutil.which("systemctl")
    folder = os.path.realpath(os.path.expanduser(folder))
    if not UNIT_NAME.match(name):
        return {"error": f"{name[:80]!r} is not a systemd unit name"}
    if systemctl is None or not os.path.isdir(SYSTEMD_RUNTIME):
        return {
            "error": f"systemd does not run here: start {daemon.name} with this node's own service manager"
        }
    if command is None:
        return {"error": f"no {daemon.command} command on the PATH for the systemd unit to run"}
    try:
        owner = os.stat(folder)
        user, group = pwd.getpwuid(owner.st_uid).pw_name, grp.getgrgid(owner.st_gid).gr_name
    except (OSError, KeyError) as exc:
        return {"error": f"cannot tell who owns the {daemon.folder} {folder}: {exc}"}
    command = os.path.realpath(command)
    for path in (command, folder):
        if not UNIT_PATH.match(path):
            return {"error": f"{path!r} cannot be named in a systemd unit as it is: use a plain path"}
    text = daemon.text(command, folder, user, group)
    active = _active(systemctl, name)
    if not active and _repo_locked(folder, daemon.lock):
        return {
            "error": f"a {daemon.name} daemon that {name} does not run holds {folder}: "
            "stop it, then run again"
        }
    path = os.path.join(payload.get("unit_dir") or SYSTEMD_DIR, f"{name}.service")
    changed = _read(path) != text
    if changed:
        failure = _install_file(path, text) or _as_root([systemctl, "daemon-reload"])
        if failure is not None:
            return {"error": failure}
    outcome = _run_unit(systemctl, name, active=active, changed=changed, restart=bool(payload.get("restart")))
    return {"path": path, "changed": changed, **outcome}


def _active(systemctl: str, name: str) -> bool:
    result = subprocess.run([systemctl, "is-active", "--quiet", "--", name], capture_output=True, check=False)
    return result.returncode == 0


def _run_unit(systemctl: str, name: str, *, active: bool, changed: bool, restart: bool) -> dict[str, Any]:
    """Start (and enable) a stopped unit; restart a running one that runs older settings or an older unit."""
    if not active:
        steps, done = [["enable", "--now"]], "enabled and started"
    elif changed or restart:
        steps, done = ([["enable"]] if changed else []) + [["restart"]], "restarted"
    else:
        steps, done = [], "running"
    for step in steps:
        failure = _as_root([systemctl, *step, "--", name])
        if failure is not None:
            return {"error": failure}
    return {"done": done}


def unit_text(ipfs: str, repo: str, user: str, group: str) -> str:
    """The unit: private network forced, no telemetry, restarted on failure, and confined to what Kubo
    needs (its repository writable; no privilege, device or capability; the network families it uses)."""
    service = [
        "Type=notify",
        f"User={user}",
        f"Group={group}",
        f"Environment=IPFS_PATH={repo}",
        "Environment=LIBP2P_FORCE_PNET=1",
        "Environment=IPFS_TELEMETRY=off",
        # --migrate: a Kubo upgrade that needs a repository migration runs it at start, instead of the
        # daemon refusing to start and leaving the node down.
        f"ExecStart={ipfs} daemon --migrate",
    ]
    return _confined_unit("network", "Kubo IPFS daemon of the one-ipfs private network", [], service, repo)


def _confined_unit(
    command: str, description: str, after: list[str], service: list[str], writable: str
) -> str:
    """A unit written by ``one-ipfs COMMAND``, restarted on failure and confined to what a daemon of the
    network needs: ``writable`` its only writable folder; no privilege, device or capability."""
    lines = [
        f"# Written by `one-ipfs {command} init|join --systemd-unit`; the next run replaces it.",
        "[Unit]",
        f"Description={description}",
        "After=" + " ".join(["network-online.target", *after]),
        "Wants=" + " ".join(["network-online.target", *after]),
        "",
        "[Service]",
        *service,
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGINT",
        "TimeoutStartSec=infinity",
        "LimitNOFILE=65536",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        f"ReadWritePaths={writable}",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def cluster_init(payload: dict[str, Any]) -> dict[str, Any]:
    """Create the IPFS Cluster peer in ``payload['folder']`` when there is none; its ID, and the Kubo
    repository it will sit beside (its addresses: where the peer listens)."""
    from pathlib import Path

    from one_ipfs.errors import OneIpfsError
    from one_ipfs.ipfs.cluster_peer import find_service, init_peer, read_peer_id

    folder = Path(os.path.expanduser(payload["folder"]))
    try:
        created = init_peer(find_service(), folder)
        peer_id = read_peer_id(folder)
    except OneIpfsError as exc:
        return {"error": str(exc)}
    return {
        "created": created,
        "peer_id": peer_id,
        "kubo": read_repository(os.path.expanduser(payload["repo"])),
    }


def cluster_configure(payload: dict[str, Any]) -> dict[str, Any]:
    """Make the peer a member of the cluster; say whether anything changed, and whether its daemon still
    runs older settings (or none runs)."""
    from pathlib import Path

    from one_ipfs.errors import OneIpfsError
    from one_ipfs.ipfs.cluster_peer import PeerSettings, configure_peer

    folder = os.path.expanduser(payload["folder"])
    peer = payload["peer"]
    settings = PeerSettings(
        name=peer["name"],
        listen_address=peer["listen_address"],
        peers=tuple(peer["peers"]),
        trusted=tuple(peer["trusted"]),
        kubo_api=peer["kubo_api"],
        rest_api=peer["rest_api"],
    )
    try:
        changed = configure_peer(Path(folder), payload["secret"], settings)
        if changed:
            with open(os.path.join(folder, RESTART_MARKER), "w") as marker:
                marker.write(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    except (OneIpfsError, OSError) as exc:
        return {"error": str(exc)}
    facts = {
        "configured_at": _mtime(os.path.join(folder, RESTART_MARKER)),
        "daemon_started_at": _mtime(os.path.join(folder, CLUSTER_LOCK)),
    }
    return {"changed": changed, "restart_pending": restart_pending(facts)}


def cluster_unit(payload: dict[str, Any]) -> dict[str, Any]:
    """Install (or update) the systemd unit ``payload['unit']`` that runs this node's IPFS Cluster peer,
    started after its Kubo daemon's unit ``payload['kubo_unit']``; then as ``unit`` does."""
    from one_ipfs.ipfs.cluster_peer import SERVICE, find_service

    kubo = payload["kubo_unit"]
    if not UNIT_NAME.match(kubo):
        return {"error": f"{kubo[:80]!r} is not a systemd unit name"}
    service = find_service()
    daemon = Daemon(
        "IPFS Cluster",
        SERVICE,
        "IPFS Cluster folder",
        CLUSTER_LOCK,
        lambda *args: cluster_unit_text(*args, kubo_unit=kubo),
    )
    return _install_unit(payload, daemon, None if service is None else str(service), payload["folder"])


def cluster_unit_text(service: str, folder: str, user: str, group: str, *, kubo_unit: str) -> str:
    """The peer's unit: after its Kubo daemon, confined as Kubo's is (its folder writable)."""
    lines = [
        "Type=simple",
        f"User={user}",
        f"Group={group}",
        f"Environment=IPFS_CLUSTER_PATH={folder}",
        f"ExecStart={service} daemon",
    ]
    description = "IPFS Cluster peer of the one-ipfs cluster"
    return _confined_unit("cluster", description, [f"{kubo_unit}.service"], lines, folder)


def restart_pending(repo_facts: dict[str, Any]) -> bool:
    """True when the repository changed (``configure``) after its daemon started, or with none running."""
    configured, started = repo_facts.get("configured_at"), repo_facts.get("daemon_started_at")
    return configured is not None and (started is None or started < configured)


def read_repository(repo: str) -> dict[str, Any]:
    """Identity, addresses, limits and the swarm key's fingerprint of a repository, from its files."""
    facts: dict[str, Any] = {
        "path": repo,
        "exists": os.path.isdir(repo),
        "configured_at": _mtime(os.path.join(repo, RESTART_MARKER)),
        "daemon_started_at": _mtime(os.path.join(repo, API_FILE)),
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


def _as_root(argv: list[str]) -> str | None:
    """Run a command that needs root (``sudo -n`` for any other user); the reason it failed, or None."""
    if os.geteuid() != 0:
        argv = ["sudo", "-n", *argv]
    what = " ".join(os.path.basename(word) if index == 0 else word for index, word in enumerate(argv))
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{what} failed: {exc}"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return f"{what} failed: {lines[-1] if lines else f'exit status {result.returncode}'}"
    return None


def _install_file(path: str, text: str) -> str | None:
    """Put ``text`` at ``path`` (a root-owned folder) with mode 0644; the reason it could not, or None."""
    with tempfile.NamedTemporaryFile("w", prefix="one-ipfs-unit-", delete=False) as staged:
        staged.write(text)
    try:
        return _as_root(["install", "-m", "0644", "--", staged.name, path])
    finally:
        os.unlink(staged.name)


def _repo_locked(repo: str, lock: str = REPO_LOCK) -> bool:
    """True while a daemon holds its folder (Kubo: its fcntl lock on ``repo.lock``; a cluster peer's on
    ``cluster.lock``)."""
    try:
        fd = os.open(os.path.join(repo, lock), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _bundle_matches(digest: str | None) -> bool:
    """The host bundle on ``sys.path`` is the frontend's (on the frontend itself none is asked for)."""
    if digest is None:
        return True
    try:
        with open(os.path.join(sys.path[0], "BUNDLE")) as stamp:
            return stamp.read().strip() == digest
    except OSError:
        return False
