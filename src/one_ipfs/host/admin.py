"""What ``one-ipfs network`` and ``one-ipfs cluster`` do on a node (the frontend in process, a host over
the channel): its Kubo repository (``init_repo``, ``configure_repo``), a restart of its daemon
(``restart_daemon``), the systemd unit that runs the daemon (``install_unit``), and the same for its IPFS
Cluster peer. Each takes its ``protocol`` request and answers its result; a failure is one error line.
Standard library only.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from one_ipfs.errors import HostError
from one_ipfs.host import protocol as p
from one_ipfs.host.probe import RESTART_MARKER, mtime, read_repository, read_text, restart_pending
from one_ipfs.ipfs import cluster_peer
from one_ipfs.ipfs.network import configure_private_node, init_repository

SYSTEMCTL_TIMEOUT = 120
"""Seconds one systemctl step may take."""
SYSTEMD_DIR = "/etc/systemd/system"
SYSTEMD_RUNTIME = "/run/systemd/system"
"""Exists only while systemd runs the machine (``sd_booted``): a systemctl binary alone proves nothing."""
UNIT_PATH = re.compile(r"^/[A-Za-z0-9._/+@:-]*$")
"""Paths written into the unit as they are: no space, quote, ``%`` specifier or backslash to escape."""
REPO_LOCK = "repo.lock"
"""Kubo holds an fcntl write lock on this file of its repository while its daemon runs."""
CLUSTER_LOCK = "cluster.lock"
"""An IPFS Cluster peer creates this file in its folder when it starts, and holds a lock on it."""


def init_repo(request: p.InitRepo) -> p.RepoCreated:
    """Create the repository when there is none (offline, never naming a public endpoint); report it."""
    repo = os.path.expanduser(request.repo)
    created = False
    if not os.path.exists(os.path.join(repo, "config")):
        ipfs = shutil.which("ipfs")
        if ipfs is None:
            raise HostError(f"no Kubo repository at {repo} and no ipfs command to create one")
        init_repository(Path(ipfs), Path(repo))
        created = True
    facts = _repository(repo)
    if facts.error is not None:
        raise HostError(facts.error)
    return p.RepoCreated(created, facts)


def configure_repo(request: p.ConfigureRepo) -> p.Reconfigured:
    """Make the repository a member of the private network; say whether anything changed (and when)."""
    repo = os.path.expanduser(request.repo)
    try:
        changed = configure_private_node(Path(repo), request.swarm_key.encode(), request.node)
        if changed:
            _mark_changed(repo)
    except OSError as exc:
        raise HostError(str(exc)) from exc
    return p.Reconfigured(changed, _repository(repo).restart_pending)


def restart_daemon(request: p.RestartDaemon) -> p.Restarted:
    """Restart the daemon through its systemd unit when one runs it; otherwise say that nothing did."""
    unit = request.unit
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return p.Restarted(False, "no systemd here")
    if not _active(systemctl, unit):
        return p.Restarted(False, f"no active systemd unit {unit}")
    failure = _as_root([systemctl, "restart", "--", unit])
    if failure is not None:
        return p.Restarted(False, failure)
    return p.Restarted(True, f"systemctl restart {unit}")


@dataclass(frozen=True)
class Daemon:
    """A daemon of the network a systemd unit runs: how errors name it, its command, its folder, the lock
    file it holds there while it runs, and the unit's text for (command path, folder, user, group)."""

    name: str
    command: str
    folder: str
    lock: str
    text: Callable[[str, str, str, str], str]


def install_unit(request: p.InstallUnit) -> p.UnitInstalled:
    """Install (or update) the systemd unit that runs this node's daemon, then have it run the current
    settings: ``enable --now`` when it is stopped, a restart when it runs an older unit or older settings
    (``request.restart``). A daemon that the unit does not run is left alone, and said so."""
    if request.daemon == "kubo":
        kubo = Daemon("Kubo", "ipfs", "Kubo repository", REPO_LOCK, unit_text)
        return _install_unit(request, kubo, shutil.which("ipfs"))
    after = [] if request.after is None else [f"{request.after}.service"]
    peer = Daemon(
        "IPFS Cluster",
        cluster_peer.SERVICE,
        "IPFS Cluster folder",
        CLUSTER_LOCK,
        lambda *args: cluster_unit_text(*args, after=after),
    )
    service = cluster_peer.find_service()
    return _install_unit(request, peer, None if service is None else str(service))


def _install_unit(request: p.InstallUnit, daemon: Daemon, command: str | None) -> p.UnitInstalled:
    name = request.unit
    systemctl = shutil.which("systemctl")
    folder = os.path.realpath(os.path.expanduser(request.folder))
    if systemctl is None or not os.path.isdir(SYSTEMD_RUNTIME):
        raise HostError(
            f"systemd does not run here: start {daemon.name} with this node's own service manager"
        )
    if command is None:
        raise HostError(f"no {daemon.command} command on the PATH for the systemd unit to run")
    try:
        owner = os.stat(folder)
        user, group = pwd.getpwuid(owner.st_uid).pw_name, grp.getgrgid(owner.st_gid).gr_name
    except (OSError, KeyError) as exc:
        raise HostError(f"cannot tell who owns the {daemon.folder} {folder}: {exc}") from exc
    command = os.path.realpath(command)
    for path in (command, folder):
        if not UNIT_PATH.match(path):
            raise HostError(f"{path!r} cannot be named in a systemd unit as it is: use a plain path")
    text = daemon.text(command, folder, user, group)
    active = _active(systemctl, name)
    if not active and _locked(folder, daemon.lock):
        raise HostError(
            f"a {daemon.name} daemon that {name} does not run holds {folder}: stop it, then run again"
        )
    path = os.path.join(SYSTEMD_DIR, f"{name}.service")
    changed = read_text(path) != text
    if changed:
        _check(_install_file(path, text) or _as_root([systemctl, "daemon-reload"]))
    done = _run_unit(systemctl, name, active=active, changed=changed, restart=request.restart)
    return p.UnitInstalled(path, changed, done)


def _active(systemctl: str, name: str) -> bool:
    result = subprocess.run([systemctl, "is-active", "--quiet", "--", name], capture_output=True, check=False)
    return result.returncode == 0


def _run_unit(systemctl: str, name: str, *, active: bool, changed: bool, restart: bool) -> str:
    """Start (and enable) a stopped unit; restart a running one that runs older settings or an older unit."""
    if not active:
        steps, done = [["enable", "--now"]], "enabled and started"
    elif changed or restart:
        steps, done = ([["enable"]] if changed else []) + [["restart"]], "restarted"
    else:
        steps, done = [], "running"
    for step in steps:
        _check(_as_root([systemctl, *step, "--", name]))
    return done


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


def init_peer(request: p.InitPeer) -> p.PeerCreated:
    """Create the IPFS Cluster peer when there is none; its ID, and the Kubo repository it will sit beside."""
    folder = Path(os.path.expanduser(request.folder))
    created = cluster_peer.init_peer(cluster_peer.find_service(), folder)
    peer_id = cluster_peer.read_peer_id(folder)
    return p.PeerCreated(created, peer_id, _repository(os.path.expanduser(request.repo)))


def configure_peer(request: p.ConfigurePeer) -> p.Reconfigured:
    """Make the peer a member of the cluster; say whether anything changed, and whether its daemon still
    runs older settings (or none runs)."""
    folder = os.path.expanduser(request.folder)
    try:
        changed = cluster_peer.configure_peer(Path(folder), request.secret, request.peer)
        if changed:
            _mark_changed(folder)
    except OSError as exc:
        raise HostError(str(exc)) from exc
    pending = restart_pending(
        mtime(os.path.join(folder, RESTART_MARKER)), mtime(os.path.join(folder, CLUSTER_LOCK))
    )
    return p.Reconfigured(changed, pending)


def cluster_unit_text(service: str, folder: str, user: str, group: str, *, after: list[str]) -> str:
    """The peer's unit: after its Kubo daemon's (``after``), confined as Kubo's is (its folder writable)."""
    lines = [
        "Type=simple",
        f"User={user}",
        f"Group={group}",
        f"Environment=IPFS_CLUSTER_PATH={folder}",
        f"ExecStart={service} daemon",
    ]
    description = "IPFS Cluster peer of the one-ipfs cluster"
    return _confined_unit("cluster", description, after, lines, folder)


def _repository(repo: str) -> p.Repository:
    return p.from_fields(p.Repository, read_repository(repo), "the repository")


def _mark_changed(folder: str) -> None:
    """A daemon started before this moment runs older settings (``restart_pending``)."""
    with open(os.path.join(folder, RESTART_MARKER), "w") as marker:
        marker.write(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")


def _check(failure: str | None) -> None:
    if failure is not None:
        raise HostError(failure)


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


def _locked(folder: str, lock: str) -> bool:
    """True while a daemon holds its folder (Kubo: its fcntl lock on ``repo.lock``; a cluster peer's on
    ``cluster.lock``)."""
    try:
        fd = os.open(os.path.join(folder, lock), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
