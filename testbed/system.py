"""Linux plumbing for the test bed: commands, processes, namespaces, links, rate limits, the oneadmin user.

Everything here runs as root and names only what the bed owns: namespaces and links carry the bed's prefix,
processes carry the bed's marker in their environment, so a later run can find and remove what a killed run
left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from one_ipfs.errors import HostError

MARKER = "ONE_IPFS_BED"
"""Set (to the bed's root) in the environment of every process the bed starts, to find them after a crash."""

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ONEADMIN = "oneadmin"
ONEADMIN_HOME = Path("/var/lib/one")
NETNS_DIR = Path("/run/netns")


def run(argv: Sequence[str | os.PathLike[str]], *, check: bool = True) -> str:
    """Run a plumbing command (``ip``, ``tc``, ``mount`` ...) and return its stdout."""
    result = subprocess.run([os.fspath(a) for a in argv], capture_output=True, check=False)
    if check and result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip() or f"exit status {result.returncode}"
        raise HostError(f"test bed: `{' '.join(map(str, argv))}` failed: {reason}")
    return result.stdout.decode(errors="replace")


# Processes -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """A process the bed started; ``start`` (ticks since boot) tells it apart from a later use of the pid."""

    name: str
    pid: int
    start: int

    def alive(self) -> bool:
        return process_start(self.pid) == self.start


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` from /proc, or None when no such process runs (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[19])


def spawn(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: Path,
    env: Mapping[str, str],
    marker: str,
    cwd: Path | None = None,
) -> tuple[Process, subprocess.Popen[bytes]]:
    """Start a long-lived process in its own session (Ctrl-C reaches only us; teardown stops it)."""
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, MARKER: marker},
            cwd=cwd,
            start_new_session=True,
        )
    start = process_start(popen.pid)
    if start is None:
        popen.wait()
        raise HostError(f"test bed: {name} exited at once (exit status {popen.returncode}); see {log}")
    return Process(name, popen.pid, start), popen


def stop_processes(processes: Iterable[Process], grace: float = 10.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL whatever is left (Kubo flushes on SIGTERM).

    A process counts as gone once it is a zombie, so this works for processes another process started;
    the bed reaps its own children itself (never ``waitpid(-1)``, which would steal other threads' children).
    """
    pending = [p for p in processes if p.alive()]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for process in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
        deadline = time.monotonic() + wait
        while pending and time.monotonic() < deadline:
            time.sleep(0.05)
            pending = [p for p in pending if p.alive()]
    if pending:
        raise HostError(f"test bed: {', '.join(p.name for p in pending)} would not stop, even on SIGKILL")


def all_processes() -> list[Process]:
    processes = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            start = process_start(int(entry.name))
            if start is not None:
                processes.append(Process(entry.name, int(entry.name), start))
    return processes


def marked_processes(marker: str) -> list[Process]:
    """Processes started by the bed whose root is ``marker``, whoever started them."""
    wanted = f"{MARKER}={marker}".encode()
    found = []
    for process in all_processes():
        try:
            environ = Path(f"/proc/{process.pid}/environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(process)
    return found


def namespace_id(pid: int, kind: str) -> str | None:
    """``net:[4026531840]``-style identity of a process's namespace, or None when the process is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def processes_in_namespace(kind: str, identity: str) -> list[Process]:
    return [p for p in all_processes() if namespace_id(p.pid, kind) == identity]


# Network namespaces and links ------------------------------------------------------------------------------


def netns_list(prefix: str) -> list[str]:
    names = run(["ip", "netns", "list"]).split()
    return [n for n in names if n.startswith(f"{prefix}-")]


def netns_processes(netns: str) -> list[Process]:
    identity = namespace_id_of_file(NETNS_DIR / netns)
    return [] if identity is None else processes_in_namespace("net", identity)


def namespace_id_of_file(path: Path) -> str | None:
    """Identity of a namespace bind-mounted at ``path`` (as ``ip netns add`` does)."""
    try:
        inode = path.stat().st_ino
    except OSError:
        return None
    return f"net:[{inode}]"


def links(prefix: str) -> list[str]:
    """Links in the root namespace whose name starts with ``prefix`` (``oibr0``, ``oi-h1a`` ...)."""
    found = []
    for line in run(["ip", "-o", "link", "show"]).splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        if name.startswith(prefix):
            found.append(name)
    return found


def add_bridge(name: str) -> None:
    """The bed's switch. Bridged frames skip the machine's firewall (br_netfilter may be loaded, e.g. by
    docker, with a FORWARD policy that would drop them)."""
    run(["ip", "link", "add", name, "type", "bridge"])
    for table in ("iptables", "ip6tables", "arptables"):
        run(["ip", "link", "set", name, "type", "bridge", f"nf_call_{table}", "0"])
    run(["ip", "link", "set", name, "up"])


def add_veth(outer: str, inner: str, bridge: str, netns: str | None, address: str) -> None:
    """A link from the bridge to a node: ``outer`` is the bridge port, ``inner`` holds the node's address.

    With ``netns`` None the inner end stays in the root namespace (the frontend's link).
    """
    run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])
    run(["ip", "link", "set", outer, "master", bridge, "up"])
    inside: list[str] = []
    if netns is not None:
        run(["ip", "link", "set", inner, "netns", netns])
        inside = ["ip", "netns", "exec", netns]
        run([*inside, "ip", "link", "set", "lo", "up"])
    run([*inside, "ip", "addr", "add", address, "dev", inner])
    run([*inside, "ip", "link", "set", inner, "up"])


def set_rate(device: str, netns: str | None, mbit: float | None) -> None:
    """Limit what ``device`` sends to ``mbit`` Mbit/s with a token bucket, or remove the limit (None).

    The bucket holds 10 ms of traffic (at least 16 KiB, so GSO segments pass) and packets wait at most
    100 ms, enough to keep a single TCP stream at the full rate.
    """
    inside = [] if netns is None else ["ip", "netns", "exec", netns]
    if mbit is None:
        run([*inside, "tc", "qdisc", "del", "dev", device, "root"], check=False)
        return
    if mbit <= 0:
        raise HostError(f"test bed: a rate limit must be positive, not {mbit} Mbit/s")
    rate_bits = int(mbit * 1_000_000)
    burst = max(16384, rate_bits // 8 // 100)
    tbf = ["tbf", "rate", f"{rate_bits}bit", "burst", str(burst), "latency", "100ms"]
    run([*inside, "tc", "qdisc", "replace", "dev", device, "root", *tbf])


def network_clash(ours: ipaddress.IPv4Network, addresses: Sequence[str]) -> str | None:
    """Why a bed on the network ``ours`` with nodes at ``addresses`` would clash with a link already up.

    Beds share the machine by the longest prefix winning: a /27 bed inside the default /24 works as long as
    neither holds the other's addresses. It breaks when one of ours is already assigned, when a link as
    specific as ours or more covers one of ours (it would answer for it), or when ours would cover the
    address of a less specific bed (seen: a bed at 198.18.0.1/27 left up under the default 198.18.0.0/24,
    whose nodes then never reached each other).
    """
    for route in json.loads(run(["ip", "-j", "route", "show"]) or "[]"):
        if route.get("dst") == "default" or "gateway" in route:
            continue
        theirs = ipaddress.ip_network(route["dst"], strict=False)
        link = route.get("dev", "?")
        if theirs.prefixlen >= ours.prefixlen:
            covered = [a for a in addresses if ipaddress.ip_address(a) in theirs]
            if covered:
                return f"{covered[0]} is already on the network of {link} ({theirs})"
        elif "prefsrc" in route and ipaddress.ip_address(route["prefsrc"]) in ours:
            return f"{ours} holds {route['prefsrc']}, the address of {link}"
    for address in addresses:
        found = json.loads(run(["ip", "-j", "route", "get", address], check=False) or "[]")
        if any(route.get("type") == "local" for route in found):
            return f"{address} is already an address of this machine"
    return None


def port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


# Joining a network namespace from a thread -----------------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def connect_in_netns(netns: str, address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection made from inside ``netns`` (the socket stays there; the thread comes back).

    setns(2) on a network namespace affects only the calling thread, which is why this is possible from a
    multithreaded test process (Python 3.11 has no os.setns).
    """
    return _in_netns(netns, lambda: socket.create_connection(address, timeout=timeout))


def listen_in_netns(netns: str, address: tuple[str, int]) -> socket.socket:
    """A TCP listener bound inside ``netns``, as ``connect_in_netns`` connects from there."""
    return _in_netns(netns, lambda: socket.create_server(address))


def _in_netns(netns: str, make: Callable[[], socket.socket]) -> socket.socket:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / netns, os.O_RDONLY)
        try:
            _setns(target)
            try:
                return make()
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


# The oneadmin user -----------------------------------------------------------------------------------------


def ensure_oneadmin() -> pwd.struct_passwd:
    """The unprivileged user OpenNebula runs its drivers as; created like a distribution package would.

    sshd without PAM refuses accounts whose password field is locked (``!``), so a locked one is given ``*``
    (no password can match, but key login works).
    """
    try:
        user = pwd.getpwnam(ONEADMIN)
    except KeyError:
        home = ["--home-dir", str(ONEADMIN_HOME), "--no-create-home"]
        run(["useradd", "--system", *home, "--shell", "/bin/bash", "--user-group", ONEADMIN])
        user = pwd.getpwnam(ONEADMIN)
    shadow = run(["getent", "shadow", ONEADMIN]).split(":")
    if len(shadow) > 1 and shadow[1].startswith("!"):
        run(["usermod", "--password", "*", ONEADMIN])
    return user


def may_traverse(folder: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may traverse ``folder`` by its mode bits (no ACLs, no supplementary groups): enough to
    tell the usual obstacle, a home folder of mode 0700."""
    st = folder.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == user.pw_gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)
