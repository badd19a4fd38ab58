"""The nodes the admin tool looks after: the frontend (in this process) and every host (over ssh)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from one_ipfs.admin import remote
from one_ipfs.config import etc_dir, remotes_dir
from one_ipfs.defaults import ADMIN_SSH_TIMEOUT
from one_ipfs.errors import HostError, OpenNebulaError
from one_ipfs.hosts.bundle import installed_digest, remote_lib, ship_bundle
from one_ipfs.hosts.ssh import SSH_FAILED, ssh_argv
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.location import check_host_name

FRONTEND = "frontend"
"""The frontend's own node, in every table and JSON answer."""
HOST_NAMED_FRONTEND = f"{FRONTEND} (host)"
"""A host OpenNebula calls ``frontend`` is still a host, checked over ssh: it is shown under this name."""
PYTHON_MISSING = 127

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Site:
    """Where OpenNebula keeps its files here: system-wide, or self-contained under ONE_LOCATION."""

    remotes: Path
    oned_conf: Path

    @property
    def vmm_execrc(self) -> Path:
        """The exec VMM's settings, which live in the same etc folder as oned.conf."""
        return self.oned_conf.parent / "vmm_exec" / "vmm_execrc"

    @classmethod
    def find(cls) -> Site:
        """This frontend's, following ``$ONE_LOCATION`` (which ``--one-location`` sets) as the drivers do."""
        return cls(remotes_dir(), etc_dir() / "oned.conf")


@dataclass(frozen=True)
class Reply:
    """A node's answer to a remote command; ``error`` set (and ``result`` empty) when it gave none."""

    node: str
    result: dict[str, Any]
    error: str | None = None
    python_missing: bool = False
    sent_at: float = 0.0
    received_at: float = 0.0


def host_label(name: str) -> str:
    """How a host is named in results: its own name, unless that is the frontend's label."""
    return HOST_NAMED_FRONTEND if name == FRONTEND else check_host_name(name)


def ssh_destination(node: str) -> str:
    """The host name ssh is given for a host's label."""
    return FRONTEND if node == HOST_NAMED_FRONTEND else node


def host_names(given: str | None) -> list[str]:
    """``--hosts h1,h2`` or, without it, every host OpenNebula knows (``one.hostpool.info``, what
    ``onehost list`` lists), as labelled in results (see ``host_label``)."""
    if given:
        return [host_label(name.strip()) for name in given.split(",") if name.strip()]
    log.info("asking oned for its hosts: one.hostpool.info")
    try:
        return [host_label(name) for name in oned.list_host_names()]
    except OpenNebulaError as exc:
        raise OpenNebulaError(f"cannot list OpenNebula's hosts ({exc}): name the hosts with --hosts") from exc


def call(node: str, command: str, payload: dict[str, Any]) -> Reply:  # noqa: PLR0911 - one per way to fail
    """Run a ``remote`` command: in this process for the frontend, one python3 over ssh on a host."""
    sent = time.time()
    if node == FRONTEND:
        log.info("%s: %s, in this process", node, remote.DOING[command])
        result = _local(command, payload)
        return Reply(node, result, result.get("error"), sent_at=sent, received_at=time.time())
    host = ssh_destination(node)
    log.info("%s: %s, over ssh %s python3", node, remote.DOING[command], host)
    try:
        bundle = {"bundle": installed_digest()} if command in remote.BUNDLED else {}
        message = {
            "script": Path(remote.__file__).read_text(encoding="utf-8"),
            "lib": remote_lib(),
            "command": command,
            "payload": {**payload, **bundle},
        }
        done = _ssh(host, message)
        if done.returncode == remote.STALE_BUNDLE:
            ship_bundle(host, timeout=ADMIN_SSH_TIMEOUT)
            done = _ssh(host, message)
    except subprocess.TimeoutExpired:
        return Reply(node, {}, f"{node} did not answer within {ADMIN_SSH_TIMEOUT:g} s", sent_at=sent)
    except HostError as exc:
        return Reply(node, {}, str(exc), sent_at=sent)
    received = time.time()
    reason = _last_line(done.stderr)
    if done.returncode == PYTHON_MISSING:
        return Reply(node, {}, f"python3 is missing on {node}", python_missing=True, sent_at=sent)
    if done.returncode == SSH_FAILED:
        return Reply(node, {}, f"ssh to {node} failed: {reason or 'no message'}", sent_at=sent)
    if done.returncode != 0:
        return Reply(node, {}, f"{node}: {reason or f'exit status {done.returncode}'}", sent_at=sent)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return Reply(node, {}, f"{node} printed no JSON result", sent_at=sent)
    return Reply(node, result, result.get("error"), sent_at=sent, received_at=received)


def _ssh(host: str, message: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ssh_argv(host, ["python3", "-c", remote.BOOT]),
        input=json.dumps(message) + "\n",
        capture_output=True,
        text=True,
        timeout=ADMIN_SSH_TIMEOUT,
        check=False,
    )


def call_all(
    nodes: Iterable[str],
    command: str,
    payload: Callable[[str], dict[str, Any]],
    progress: Callable[[Reply], None] | None = None,
) -> dict[str, Reply]:
    """``call`` on every node in parallel (a few at a time), reporting each reply as it comes."""
    names = list(nodes)
    replies: dict[str, Reply] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {name: pool.submit(call, name, command, payload(name)) for name in names}
        for name in names:
            replies[name] = futures[name].result()
            if progress is not None:
                progress(replies[name])
    return replies


def resolve_address(node: str) -> str:
    """The address ssh reaches host ``node`` at: ssh's own config first, where oneadmin's ``Host`` entries
    are."""
    host = ssh_destination(node)
    result = subprocess.run(["ssh", "-G", "--", host], capture_output=True, text=True, check=False)
    name = host
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "hostname" and value:
            name = value.strip()
    try:
        return socket.gethostbyname(name)
    except OSError as exc:
        raise HostError(f"cannot resolve {host} ({name}): {exc}") from exc


def _local(command: str, payload: dict[str, Any]) -> dict[str, Any]:
    handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "probe": remote.probe,
        "init": remote.init,
        "configure": remote.configure,
        "restart": remote.restart,
        "unit": remote.unit,
        "cluster_init": remote.cluster_init,
        "cluster_configure": remote.cluster_configure,
        "cluster_unit": remote.cluster_unit,
    }
    return handlers[command](payload)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
