"""Running an entry point on hostile input and watching what it does, in this process.

Every run happens in a ``World``: a folder tree standing in for the frontend's state, remotes and
a host's ``/var/lib/one``, plus a fake Kubo RPC API that answers every request with an error and
records it. An audit hook (``sys.addaudithook``) sees everything the run asks the interpreter to
do: starting a process or a shell is refused and recorded, and so is any write, removal, rename or
network connection outside the world's allowed places; writes inside are recorded too. A hostile
case must then show: one plain failure line, a non-zero exit that is not a crash, no process, no
write, no Kubo request, and the world's files exactly as before.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import one_ipfs.driver as driver
import one_ipfs.host.__main__ as host_main
from one_ipfs.admin.cli import main as admin_main
from one_ipfs.opennebula.output import INTERNAL_ERROR_EXIT
from tests.support.host_requests import request_line

# DriverExecHelper#get_info_from_execution: the stderr lines OpenNebula treats as log lines.
MANAGER_LOG_LINE = re.compile(r"^(ERROR|INFO|WARN|DEBUG):\s+(\d+)?\s*(.*)$")
PROCESS_EVENTS = {
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "pty.spawn",
}
PATH_EVENTS = {
    "os.remove",
    "os.rmdir",
    "os.rename",
    "os.mkdir",
    "os.truncate",
    "os.symlink",
    "os.link",
    "os.chmod",
    "os.chown",
    "os.utime",
    "shutil.rmtree",
    "shutil.move",
    "shutil.copyfile",
    "shutil.copytree",
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CID = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


class Tripwire(BaseException):
    """Raised inside the run for anything it must never do; a BaseException so no handler hides it."""


@dataclass
class Watch:
    """What one run did, as the audit hook saw it."""

    allowed: tuple[str, ...]
    kubo_port: int
    processes: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)


_active: Watch | None = None
_lock = threading.Lock()


def _path_of(value: Any) -> str | None:
    if isinstance(value, int):
        return None
    if isinstance(value, bytes):
        return os.fsdecode(value)
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return None


def _is_write(mode: Any, flags: Any) -> bool:
    if isinstance(mode, str) and any(char in mode for char in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & WRITE_FLAGS)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    watch = _active
    if watch is None:
        return
    if event in PROCESS_EVENTS:
        words = args[1] if event == "subprocess.Popen" else args
        watch.processes.append(f"{event} {words!r}"[:300])
        raise Tripwire(f"{event} {words!r}"[:300])
    if event == "open":
        path = _path_of(args[0])
        if path is None or not _is_write(args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else 0):
            return
        _written(watch, f"open {path}", path)
    elif event in PATH_EVENTS:
        for value in args[:2]:
            path = _path_of(value)
            if path is not None:
                _written(watch, f"{event} {path}", path)
    elif event == "socket.connect":
        address = args[1]
        watch.connections.append(repr(address))
        if not (isinstance(address, tuple) and address[:2] == ("127.0.0.1", watch.kubo_port)):
            watch.blocked.append(f"connect {address!r}")
            raise Tripwire(f"connect {address!r}")


def _written(watch: Watch, what: str, path: str) -> None:
    if "__pycache__" in path or path.endswith(".pyc"):
        return
    watch.writes.append(what)
    real = os.path.realpath(path)
    if not any(real == base or real.startswith(base + os.sep) for base in watch.allowed):
        watch.blocked.append(what)
        raise Tripwire(what)


sys.addaudithook(_audit)


class _FakeKubo(BaseHTTPRequestHandler):
    """Kubo's RPC API as a wall: every request is recorded and refused with Kubo's error shape."""

    requests: list[str]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).requests.append(self.path)
        body = json.dumps({"Message": "the fake Kubo refuses every request", "Code": 0, "Type": "error"})
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded paths are what matters."""


@dataclass(frozen=True)
class Outcome:
    """What the caller of an entry point saw, and what the run did."""

    code: int
    out: str
    err: str
    watch: Watch
    kubo_requests: list[str]
    changed: list[str]

    @property
    def plain(self) -> list[str]:
        """The stderr lines OpenNebula shows as the failure reason (not log lines)."""
        return [line for line in self.err.splitlines() if not MANAGER_LOG_LINE.match(line)]

    def problems(self, reason: str) -> list[str]:
        """Everything this outcome does wrong for a hostile input that must be refused for ``reason``."""
        found = []
        if self.code in (0, INTERNAL_ERROR_EXIT):
            found.append(f"exit status {self.code}")
        if self.out:
            found.append(f"stdout {self.out[:200]!r}")
        if len(self.plain) != 1:
            found.append(f"{len(self.plain)} plain stderr lines: {self.plain[:3]!r}")
        elif reason.lower() not in self.plain[0].lower():
            found.append(f"reason {reason!r} not in {self.plain[0][:300]!r}")
        if "Traceback" in self.err or "Internal error" in self.err:
            found.append(f"a crash: {self.err[-400:]!r}")
        if any(ord(char) < 0x20 and char != "\n" for char in self.err):
            found.append("a control character on stderr")
        for kind, items in (
            ("process", self.watch.processes),
            ("write", self.watch.writes),
            ("blocked", self.watch.blocked),
            ("Kubo request", self.kubo_requests),
            ("changed file", self.changed),
        ):
            found += [f"{kind}: {item}" for item in items[:5]]
        return found


class World:
    """The frontend's and one host's folders for hostile runs, and the fake Kubo they point at."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.remotes = root / "remotes"
        self.host_root = root / "host"
        self.safe = root / "safe"
        self.cwd = root / "cwd"
        self.tmp = root / "tmp"
        self.disk = self.host_root / "datastores" / "0" / "42" / "disk.0"
        for folder in (self.state, self.safe, self.cwd, self.tmp, self.disk.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self.disk.write_bytes(b"disk of VM 42")
        (self.safe / "image.raw").write_bytes(bytes(4096))
        (root / "canary").write_text("must stay")
        _FakeKubo.requests = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKubo)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        conf = self.remotes / "etc" / "datastore" / "ipfs" / "ipfs.conf"
        conf.parent.mkdir(parents=True)
        api = f"http://127.0.0.1:{self.port}"
        conf.write_text(f'IPFS_API="{api}"\nIPFS_HOST_API="{api}"\nIPFS_RPC_TIMEOUT=5\n')

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        files = {}
        for path in self.root.rglob("*"):
            info = path.lstat()
            files[str(path.relative_to(self.root))] = (info.st_mode, info.st_size, info.st_mtime_ns)
        return files

    @contextlib.contextmanager
    def watched(self) -> Iterator[Callable[[], tuple[Watch, list[str]]]]:
        """Environment, cwd and audit for one run; yields a function giving (watch, Kubo requests)."""
        global _active
        environment = {
            "ONE_IPFS_STATE": str(self.state),
            "ONE_IPFS_REMOTES": str(self.remotes),
            "ONE_IPFS_HOST_ROOT": str(self.host_root),
            "TMPDIR": str(self.tmp),
            "PATH": str(self.root / "no-commands-here"),
        }
        saved_env = {name: os.environ.get(name) for name in environment}
        saved_cwd = os.getcwd()
        watch = Watch(allowed=(os.path.realpath(self.tmp),), kubo_port=self.port)
        before = len(_FakeKubo.requests)
        os.environ.update(environment)
        os.chdir(self.cwd)
        with _lock:
            _active = watch
            try:
                yield lambda: (watch, _FakeKubo.requests[before:])
            finally:
                _active = None
                os.chdir(saved_cwd)
                for name, value in saved_env.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def _run(self, call: Callable[[], int], stdin: bytes) -> Outcome:
        before = self.snapshot()
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdin, sys.stdout, sys.stderr
        with self.watched() as seen:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
            sys.stdout, sys.stderr = out, err
            try:
                code = call()
            except Tripwire as tripped:
                code = -1
                err.write(f"tripwire: {tripped}\n")
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            finally:
                sys.stdin, sys.stdout, sys.stderr = saved
            watch, requests = seen()
        after = self.snapshot()
        changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
        return Outcome(code, out.getvalue(), err.getvalue(), watch, requests, changed)

    def driver(self, kind: str, action: str, args: list[str], stdin: bytes = b"") -> Outcome:
        """``remotes/<kind>/ipfs/<action> ARGS`` as the launcher runs it: ``python -m one_ipfs.driver``."""
        return self._run(lambda: driver.main([kind, action, *args]), stdin)

    def host(self, words: list[str]) -> Outcome:
        """The host side given the request ``words`` write (``host_requests``), as the frontend sends it."""
        return self._run(host_main.main, request_line(words).encode())

    def admin(self, words: list[str]) -> Outcome:
        """``one-ipfs WORDS``, the admin CLI."""

        def call() -> int:
            result = CliRunner().invoke(admin_main, words, catch_exceptions=False)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.exit_code

        return self._run(call, b"")


def placed(world: World, args: tuple[str, ...], stdin: bytes) -> tuple[list[str], bytes]:
    """Arguments and base64 stdin with the world's folders put in for ``{host}`` and ``{safe}``."""
    words = [arg.replace("{host}", str(world.host_root)).replace("{safe}", str(world.safe)) for arg in args]
    try:
        decoded = base64.b64decode(stdin, validate=True)
    except binascii.Error:
        return words, stdin
    if b"{safe}" in decoded:
        stdin = base64.b64encode(decoded.replace(b"{safe}", str(world.safe).encode()))
    return words, stdin


@contextlib.contextmanager
def new_world(root: Path) -> Iterator[World]:
    world = World(root)
    try:
        yield world
    finally:
        world.close()
