"""The nodes the admin tool looks after: the frontend (in this process) and every host (over ssh)."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from one_ipfs.config import etc_dir, remotes_dir
from one_ipfs.defaults import ADMIN_SSH_TIMEOUT
from one_ipfs.errors import HostError, HostUnreachable, OneIpfsError, OpenNebulaError, PythonMissing
from one_ipfs.host.__main__ import handle
from one_ipfs.host.protocol import R, Request, read_request, to_json
from one_ipfs.hosts.calls import call as call_host
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.location import check_host_name

FRONTEND = "frontend"
"""The frontend's own node, in every table and JSON answer."""
HOST_NAMED_FRONTEND = f"{FRONTEND} (host)"
"""A host OpenNebula calls ``frontend`` is still a host, checked over ssh: it is shown under this name."""
DOING = {
    "probe": "reading its Kubo node, repository, interpreter and clock",
    "init-repo": "creating its Kubo repository if it has none",
    "configure-repo": "writing its private-network settings into its repository",
    "restart-daemon": "restarting its Kubo daemon through systemd",
    "install-unit": "installing the systemd unit of its Kubo daemon or IPFS Cluster peer",
    "init-peer": "creating its IPFS Cluster peer if it has none",
    "configure-peer": "writing its IPFS Cluster peer's settings",
}
"""What each command the admin tool runs on nodes does, as ``one-ipfs --verbose`` says it."""
T = TypeVar("T")

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
class Reply(Generic[T]):
    """A node's answer to a host command; ``error`` set (and ``result`` None) when it gave none."""

    node: str
    result: T | None
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


def call(node: str, request: Request[R]) -> Reply[R]:
    """Run a host command on a node: in this process for the frontend, over the channel (``hosts.call``)
    on a host. Either way the request is read back from its JSON first, every field checked as a host
    checks it."""
    sent = time.time()
    doing = f"{DOING[request.command]} ({request.command})"
    try:
        if node == FRONTEND:
            log.info("%s: %s, in this process", node, doing)
            result = handle(read_request(to_json(request)))
        else:
            host = ssh_destination(node)
            log.info("%s: %s, over ssh %s python3", node, doing, host)
            result = call_host(host, request, timeout=ADMIN_SSH_TIMEOUT)
    except PythonMissing:
        return Reply(node, None, f"python3 is missing on {node}", python_missing=True, sent_at=sent)
    except HostUnreachable as exc:
        return Reply(node, None, f"ssh to {node} failed: {_reason(node, exc)}", sent_at=sent)
    except OneIpfsError as exc:
        return Reply(node, None, _reason(node, exc), sent_at=sent)
    return Reply(node, result, sent_at=sent, received_at=time.time())


def call_all(
    nodes: Iterable[str],
    request: Callable[[str], Request[R]],
    progress: Callable[[Reply[R]], None] | None = None,
) -> dict[str, Reply[R]]:
    """``call`` on every node in parallel (a few at a time), reporting each reply as it comes."""
    names = list(nodes)
    replies: dict[str, Reply[R]] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {name: pool.submit(call, name, request(name)) for name in names}
        for name in names:
            replies[name] = futures[name].result()
            if progress is not None:
                progress(replies[name])
    return replies


def results(replies: dict[str, Reply[R]]) -> dict[str, R]:
    """Every node's result, or a HostError naming every failure and its node."""
    failed = [f"{name}: {reply.error}" for name, reply in replies.items() if reply.result is None]
    if failed:
        raise HostError("; ".join(failed))
    return {name: reply.result for name, reply in replies.items() if reply.result is not None}


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


def _reason(node: str, error: OneIpfsError) -> str:
    """A host's own line, without the host name the channel puts first (tables and replies name the node)."""
    return str(error).removeprefix(f"{ssh_destination(node)}: ")
