"""Running the host side of an action over ssh, as OpenNebula's own TM drivers reach hosts.

Hosts run the standard-library bundle from the remotes tree that ``onehost sync`` copied to
``/var/tmp/one``. A host that lacks it, or holds another version, gets it over this same ssh
connection, so a forgotten sync never breaks a deploy.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import stat
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import IO, Any

from one_ipfs.config import remotes_dir
from one_ipfs.errors import HostError
from one_ipfs.images import state_dir
from one_ipfs.ipfs.rpc import ImportSettings
from one_ipfs.opennebula.install import BUNDLE_STAMP, HOST_LAUNCHER, HOST_LIB
from one_ipfs.opennebula.output import log_info, relay_log

STALE_BUNDLE = 3
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15")
CONTROL_PERSIST = "60s"
MAX_CONTROL_FOLDER = 60
"""Unix socket paths hold about 100 bytes; the socket's name (%C) takes 40 of them."""
UNPACK = "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|gz').extractall(sys.argv[1])"


def remote_lib() -> str:
    """Where the bundle sits on hosts: OpenNebula's SCRIPTS_REMOTE_DIR plus the driver's lib folder."""
    return f"{os.environ.get('ONE_IPFS_SCRIPTS_REMOTE_DIR', '/var/tmp/one')}/{HOST_LIB}"


def local_lib() -> Path:
    return remotes_dir() / HOST_LIB


def bundle_digest() -> str:
    """The digest of the host bundle in this frontend's remotes tree (what every host must run)."""
    stamp = local_lib() / BUNDLE_STAMP
    try:
        return stamp.read_text(encoding="utf-8").strip()
    except OSError:
        raise HostError(
            f"the drivers are not installed in {stamp.parents[3]}: run `one-ipfs install`"
        ) from None


def ssh_argv(host: str, remote: list[str], *, control: Path | None = None) -> list[str]:
    """ssh's remote command is one string for the remote shell: every word is quoted, none trusted.

    With a ``control`` folder, one ssh connection per host is shared by the actions of the next minute
    (an ssh handshake costs more than a small action).
    """
    options = list(SSH_OPTIONS)
    if control is not None:
        # %C is a hash of the connection's endpoints: the host name never becomes part of a path.
        options += ["-o", "ControlMaster=auto", "-o", f"ControlPersist={CONTROL_PERSIST}"]
        options += ["-o", f"ControlPath={control}/%C"]
    return ["ssh", *options, "--", host, shlex.join(remote)]


def control_folder() -> Path | None:
    """The driver user's own folder for ssh control sockets, or None if it is not private to us."""
    folder = state_dir() / "ssh"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077
    if not private or "%" in str(folder) or len(str(folder)) > MAX_CONTROL_FOLDER:
        return None
    return folder


def host_options(**values: str | int | float | None) -> list[str]:
    """``--name value`` pairs for the host command (``size_mb`` becomes ``--size-mb``); None is left out."""
    argv: list[str] = []
    for name, value in values.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def import_options(settings: ImportSettings) -> list[str]:
    """How the host's node must cut and hash what it adds, so that its CIDs are the datastore's."""
    return host_options(
        chunker=settings.chunker,
        cid_version=settings.cid_version,
        raw_leaves="true" if settings.raw_leaves else "false",
        hash=settings.hash,
    )


def run_on_host(host: str, command: str, args: list[str], *, timeout: float) -> dict[str, Any]:
    """Run ``one-ipfs-host <command> <args>`` on ``host``; its log lines flow into the driver's log.

    Returns the JSON object the host printed (empty when it printed none); a failure raises
    HostError with the host's own one-line reason.
    """
    remote = ["python3", f"{remote_lib()}/{HOST_LAUNCHER}", "--bundle", bundle_digest(), command, *args]
    code, out, reason = _run(host, remote, timeout=timeout)
    if code == STALE_BUNDLE or (code == 2 and "can't open file" in reason):
        ship_bundle(host, timeout=timeout)
        code, out, reason = _run(host, remote, timeout=timeout)
    if code != 0:
        raise HostError(f"{host}: {reason or f'{command} failed with exit code {code}'}")
    text = out.strip()
    if not text:
        return {}
    try:
        result = json.loads(text.splitlines()[-1])
    except json.JSONDecodeError:
        raise HostError(f"{host}: {command} printed something that is not its JSON result") from None
    if not isinstance(result, dict):
        raise HostError(f"{host}: {command} printed something that is not its JSON result")
    return result


def ship_bundle(host: str, *, timeout: float) -> None:
    """Copy the host bundle of this frontend to ``host`` over ssh (it replaces any older one)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(local_lib(), arcname=".")
    remote = ["sh", "-c", 'mkdir -p "$1" && exec python3 -c "$2" "$1"', "sh", remote_lib(), UNPACK]
    try:
        result = subprocess.run(
            ssh_argv(host, remote),
            input=archive.getvalue(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HostError(f"{host}: copying the one-ipfs host bundle took longer than {timeout:g} s") from None
    if result.returncode != 0:
        raise HostError(f"{host}: cannot copy the one-ipfs host bundle: {_last_plain_line(result.stderr)}")
    log_info(f"copied the one-ipfs host bundle to {host}")


def _run(host: str, remote: list[str], *, timeout: float, reuse: bool = True) -> tuple[int, str, str]:
    """Run over ssh, relaying the host's log lines live; return (exit code, stdout, last plain line).

    A shared connection that fails before the command started (its host went away while it sat idle,
    or the host allows no more sessions on it) is not the last word: a connection of its own follows,
    and says why the host cannot be reached if it cannot.
    """
    control = control_folder() if reuse else None
    process = subprocess.Popen(
        ssh_argv(host, remote, control=control),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    plain: list[str] = []
    logged: list[str] = []
    relay = threading.Thread(target=_relay_log, args=(process.stderr, plain, logged), daemon=True)
    relay.start()
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        process.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        out = process.stdout.read() if process.stdout is not None else b""
        process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            # The action was interrupted (backup_cancel): ssh goes, and the host side cleans up on its hangup.
            process.kill()
            process.wait()
    if expired.is_set():
        raise HostError(f"{host}: the host side did not finish within {timeout:g} s")
    relay.join(timeout=5)
    if process.returncode == 255 and not logged and control is not None:
        return _run(host, remote, timeout=timeout, reuse=False)
    reason = plain[-1] if plain else ""
    if process.returncode == 255 and not reason:
        # Log lines came: the command ran, and the connection broke under it (it cleans up by itself).
        reason = (
            "the ssh connection to the host was lost mid-way" if logged else "ssh could not reach the host"
        )
    return process.returncode, out.decode(errors="replace"), reason


def _relay_log(stream: IO[bytes] | None, plain: list[str], logged: list[str]) -> None:
    if stream is None:
        return
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        if relay_log(line):
            logged.append(line)
        elif line.strip():
            plain.append(line.strip())


def _last_plain_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no message"
