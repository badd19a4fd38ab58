"""Where and as whom driver scripts run: the frontend context of a real or a pretend OpenNebula.

oned's driver managers start every script on the frontend, as oneadmin, in their own process group,
with the base64 action on stdin, and kill the group on a timeout (``CommandManager#capture3_timeout``).
A ``Runner`` supplies exactly that context, plus the two path views the simulator needs: the frontend's
``/var/lib/one`` as this process reaches it (to write transfer files) and as the drivers see it (what goes
into transfer files and command lines), and each host's folders (for the share of work the simulator
does on hosts itself). ``LocalRunner`` is the plain implementation for fast tests: the current user, a
temporary folder per "machine"; the test bed supplies one with namespaces, ssh and oneadmin.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

ONE_VAR = "/var/lib/one"
ONE_TMP = "/var/tmp/one"
READER_GRACE = 0.1


@dataclass(frozen=True)
class Execution:
    """A finished command as ``GenericCommand`` sees it: exit 255 when a signal ended it."""

    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    internal_error: str = ""


class Runner(Protocol):
    frontend_hostname: str
    var_lib_one: Path
    driver_var_lib_one: str
    owner: tuple[int, int] | None
    hosts: tuple[str, ...]

    def base_env(self) -> dict[str, str]:
        """The environment oned's driver managers inherit (before the simulator's additions)."""

    def run(
        self, argv: list[str], *, env: Mapping[str, str], stdin: bytes, timeout: float | None
    ) -> Execution:
        """Run ``argv`` as the driver user in the frontend context, cwd ``driver_var_lib_one``."""

    def host_path(self, host: str, path: str) -> Path:
        """Where ``path`` on ``host`` (the frontend too, by its hostname) is reachable from this process."""


def _drain(stream: IO[bytes], chunks: list[bytes]) -> None:
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            return
        chunks.append(chunk)


def _feed(stream: IO[bytes], data: bytes) -> None:
    try:
        stream.write(data)
        stream.close()
    except (BrokenPipeError, ValueError, OSError):
        return


def capture(
    argv: list[str], *, env: Mapping[str, str], stdin: bytes, timeout: float | None, cwd: str
) -> Execution:
    """``capture3_timeout`` with ``:pgroup => true``: SIGTERM to the group on timeout, then wait for exit.

    Like the Ruby helper, output is read by threads and whatever a lingering grandchild still holds
    open after the script exits is given up after a short grace period.
    """
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            process_group=0,
        )
    except OSError as exc:
        return Execution(255, b"", b"", internal_error=f"{exc.strerror} - {argv[0]}")
    assert process.stdin and process.stdout and process.stderr
    out: list[bytes] = []
    err: list[bytes] = []
    threads = [
        threading.Thread(target=_drain, args=(process.stdout, out), daemon=True),
        threading.Thread(target=_drain, args=(process.stderr, err), daemon=True),
        threading.Thread(target=_feed, args=(process.stdin, stdin), daemon=True),
    ]
    for thread in threads:
        thread.start()
    timed_out = False
    try:
        process.wait(timeout=timeout if timeout and timeout > 0 else None)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait()
    for thread in threads[:2]:
        thread.join(READER_GRACE)
    code = process.returncode if process.returncode >= 0 else 255
    return Execution(code, b"".join(out), b"".join(err), timed_out=timed_out)


def map_path(base: Path, prefix: str, path: str) -> Path | None:
    """``path`` under ``prefix`` re-rooted at ``base``; None when it is not under ``prefix``."""
    normal = posixpath.normpath(path)
    if normal == prefix:
        return base
    if not normal.startswith(prefix + "/"):
        return None
    return base / normal[len(prefix) + 1 :]


class LocalRunner:
    """Everything in one folder, as the current user: ``frontend/var-lib-one`` and ``hosts/<name>/...``.

    Drivers see the frontend folder under its real path (there is no mount namespace), so transfer
    files and command lines carry that path where OpenNebula would write ``/var/lib/one``.
    """

    def __init__(
        self, root: Path, hosts: tuple[str, ...] = ("h1", "h2", "h3"), frontend_hostname: str = "fe"
    ) -> None:
        self.root = root
        self.hosts = hosts
        self.frontend_hostname = frontend_hostname
        self.owner: tuple[int, int] | None = None
        self.var_lib_one = root / "frontend" / "var-lib-one"
        self.driver_var_lib_one = str(self.var_lib_one)
        self.var_lib_one.mkdir(parents=True, exist_ok=True)
        for host in hosts:
            for folder in ("var-lib-one", "var-tmp-one"):
                (root / "hosts" / host / folder).mkdir(parents=True, exist_ok=True)

    def base_env(self) -> dict[str, str]:
        return dict(os.environ)

    def run(
        self, argv: list[str], *, env: Mapping[str, str], stdin: bytes, timeout: float | None
    ) -> Execution:
        return capture(argv, env=env, stdin=stdin, timeout=timeout, cwd=self.driver_var_lib_one)

    def host_path(self, host: str, path: str) -> Path:
        if host == self.frontend_hostname:
            mapped = map_path(self.var_lib_one, ONE_VAR, path)
        elif host in self.hosts:
            folders = self.root / "hosts" / host
            mapped = map_path(folders / "var-lib-one", ONE_VAR, path) or map_path(
                folders / "var-tmp-one", ONE_TMP, path
            )
        else:
            raise KeyError(f"no host named {host!r}")
        if mapped is None:
            raise KeyError(f"{path} on {host} is outside {ONE_VAR} and {ONE_TMP}")
        return mapped
