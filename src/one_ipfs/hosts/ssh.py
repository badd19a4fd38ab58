"""ssh to a host, as OpenNebula's own TM drivers reach hosts: every word quoted, one shared connection per
host, and the host's log lines relayed live into the driver's log."""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
import subprocess
import threading
from pathlib import Path
from typing import IO

from one_ipfs.config import state_dir
from one_ipfs.defaults import SSH_ALIVE_INTERVAL, SSH_CONNECT_TIMEOUT, SSH_CONTROL_PERSIST
from one_ipfs.errors import HostError
from one_ipfs.opennebula.output import relay_log

SSH_OPTIONS = (
    *("-o", "BatchMode=yes"),
    *("-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}"),
    *("-o", f"ServerAliveInterval={SSH_ALIVE_INTERVAL}"),
)
MAX_CONTROL_FOLDER = 60
"""Unix socket paths hold about 100 bytes; the socket's name (%C) takes 40 of them."""
SSH_FAILED = 255


def ssh_argv(host: str, remote: list[str], *, control: Path | None = None) -> list[str]:
    """ssh's remote command is one string for the remote shell: every word is quoted, none trusted.

    With a ``control`` folder, one ssh connection per host is shared by the actions of the next minute
    (an ssh handshake costs more than a small action).
    """
    options = list(SSH_OPTIONS)
    if control is not None:
        # %C is a hash of the connection's endpoints: the host name never becomes part of a path.
        options += ["-o", "ControlMaster=auto", "-o", f"ControlPersist={SSH_CONTROL_PERSIST}s"]
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


def run_relayed(
    host: str, remote: list[str], stdin: bytes, *, timeout: float, reuse: bool = True
) -> tuple[int, str, str]:
    """Run over ssh with ``stdin`` as its input, relaying the host's log lines live; return (exit code,
    stdout, last plain line).

    A shared connection that fails before the command started (its host went away while it sat idle,
    or the host allows no more sessions on it) is not the last word: a connection of its own follows,
    and says why the host cannot be reached if it cannot.
    """
    control = control_folder() if reuse else None
    process = subprocess.Popen(
        ssh_argv(host, remote, control=control),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _send(process, stdin)
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
    if process.returncode == SSH_FAILED and not logged and control is not None:
        return run_relayed(host, remote, stdin, timeout=timeout, reuse=False)
    reason = plain[-1] if plain else ""
    if process.returncode == SSH_FAILED and not reason:
        # Log lines came: the command ran, and the connection broke under it (it cleans up by itself).
        reason = (
            "the ssh connection to the host was lost mid-way" if logged else "ssh could not reach the host"
        )
    return process.returncode, out.decode(errors="replace"), reason


def _send(process: subprocess.Popen[bytes], data: bytes) -> None:
    """A request is far smaller than a pipe's buffer: written at once, then closed (end of input)."""
    if process.stdin is None:
        return
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(data)
    with contextlib.suppress(BrokenPipeError):
        process.stdin.close()


def _relay_log(stream: IO[bytes] | None, plain: list[str], logged: list[str]) -> None:
    if stream is None:
        return
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        if relay_log(line):
            logged.append(line)
        elif line.strip():
            plain.append(line.strip())


def last_plain_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no message"
