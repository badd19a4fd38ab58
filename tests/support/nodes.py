"""What the bed's nodes, hosts and frontend hold: for tests that prove nothing was fetched, sent or left."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from one_ipfs.ipfs.gateway import PEER_PROTOCOL
from testbed.bed import Bed, Host
from testbed.kubo import KUBO, Node
from testbed.system import BASE_PATH, ONEADMIN, Process, netns_processes, processes_in_namespace


def bitswap_stat(node: Node) -> dict[str, int]:
    """Kubo's bitswap counters of a node (``ipfs bitswap stat``), read inside the node's network namespace."""
    answer = json.loads(ipfs_cli(node, "bitswap", "stat", "--enc=json"))
    return {key: value for key, value in answer.items() if isinstance(value, int)}


def bitswap_received(node: Node) -> int:
    """Bytes of blocks a node received over bitswap since it started, duplicates left out."""
    stat = bitswap_stat(node)
    return stat["DataReceived"] - stat["DupDataReceived"]


def received_from_hosts(node: Node) -> int:
    """Bytes a node received reading blocks from other hosts' gateways: ``stats/bw`` of the fleet's protocol
    (the blocks and their HTTP headers), through the RPC API, since the CLI prints it only rounded."""
    query = urllib.parse.urlencode({"proto": PEER_PROTOCOL})
    request = urllib.request.Request(f"http://{node.client().address}/api/v0/stats/bw?{query}", method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return int(json.load(answer)["TotalIn"])


def ipfs_cli(node: Node, *args: str) -> str:
    """``ipfs <args>`` against a node, inside its network namespace; its stdout."""
    return _ipfs(node, *args).decode()


def held_bytes(node: Node, cid: str) -> bytes:
    """The content of ``cid`` as the node holds it itself (``ipfs cat --offline``: nothing fetched)."""
    return _ipfs(node, "cat", "--offline", f"/ipfs/{cid}")


def _ipfs(node: Node, *args: str) -> bytes:
    inside = [] if node.netns is None else ["ip", "netns", "exec", node.netns]
    result = subprocess.run(
        [*inside, str(KUBO), *args],
        env={"PATH": BASE_PATH, "IPFS_PATH": str(node.repo)},
        capture_output=True,
        check=True,
        timeout=60,
    )
    return result.stdout


SECRET_FILE = "/var/lib/one/.ipfs-api-secret"
"""Where the tests keep the RPC secret on the frontend and on each host, as an admin would (oneadmin's)."""


@contextmanager
def locked_apis(bed: Bed, secret: str) -> Iterator[None]:
    """Every node's RPC API wants ``secret`` (Kubo's API.Authorizations), kept in SECRET_FILE (oneadmin's,
    0600) on the frontend and each host; the APIs are open again afterwards."""
    account = pwd.getpwnam(ONEADMIN)
    folders = [bed.frontend_var_lib_one, *(host.var_lib_one for host in bed.hosts)]
    files = [folder / Path(SECRET_FILE).name for folder in folders]
    for path in files:
        path.write_text(secret + "\n")
        os.chown(path, account.pw_uid, account.pw_gid)
        path.chmod(0o600)
    bed.lock_apis(secret)
    try:
        yield
    finally:
        bed.lock_apis(None)
        for path in files:
            path.unlink()


def files_under(folder: Path) -> set[str]:
    """Every file and folder below ``folder``, relative to it."""
    return {str(path.relative_to(folder)) for path in folder.rglob("*")} if folder.exists() else set()


def pins(node: Node) -> set[tuple[str, str]]:
    """(CID, name) of every recursive pin of a node."""
    return {(pin.cid, pin.name) for pin in node.client().pin_ls()}


def all_pins(bed: Bed) -> dict[str, set[tuple[str, str]]]:
    """Every bed node's pins, by node."""
    return {node.name: pins(node) for node in bed.nodes}


def processes_of(bed: Bed, host: Host | None) -> set[Process]:
    """The processes living in a host's network namespace, or in the frontend's mount namespace (None)."""
    if host is not None:
        return set(netns_processes(host.netns))
    identity = bed.frontend_command(["readlink", "/proc/self/ns/mnt"], check=True).stdout.decode().strip()
    return set(processes_in_namespace("mnt", identity))


def host_commands(host: Host) -> list[int]:
    """Pids of one-ipfs host commands running on ``host``."""
    found = []
    for process in netns_processes(host.netns):
        try:
            command = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"one-ipfs-host" in command:
            found.append(process.pid)
    return found


def settle(
    condition: Callable[[], bool], what: str, limit: float = 60.0, why: Callable[[], str] = str
) -> None:
    """Wait, within a bound, for something that follows an action asynchronously (an sshd session ending).
    ``why`` says, when it did not happen, what stood in its way."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {limit:g} s {why()}"
        time.sleep(0.2)


def command_lines(processes: Iterable[Process]) -> list[str]:
    """What each process runs, for a failure's message (those gone meanwhile are left out)."""
    lines = []
    for process in processes:
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
            lines.append(f"{process.pid}: {b' '.join(argv).decode(errors='replace').strip()}")
    return lines
