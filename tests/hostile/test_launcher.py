"""A sample of the corpus (one case per entry point) through the real ``remotes/.../ipfs/<action>``
launchers, as separate processes the way the driver managers start them, with tripwires: ``sh``,
``bash``, ``ssh`` and OpenNebula's commands first on PATH record any call, and an audit hook loaded
through ``sitecustomize`` records any process, write outside the world's scratch folder, or connection.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from one_ipfs.opennebula.install import SOURCE_REMOTES
from tests.hostile.corpus import ALL_CASES, Case
from tests.hostile.harness import MANAGER_LOG_LINE, World, new_world, placed
from tests.support.host_requests import request_line

TRIPWIRES = (
    "sh",
    "bash",
    "dash",
    "ssh",
    "scp",
    "onevm",
    "oneimage",
    "onedatastore",
    "onehost",
    "qemu-img",
    "ipfs",
)
SITECUSTOMIZE = """
import os, sys
_log, _allowed = os.environ["ONE_IPFS_AUDIT_LOG"], os.path.realpath(os.environ["TMPDIR"])
_PROCESS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork"}
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def _record(what):
    with open(_log, "a") as log:
        log.write(what.replace("\\n", "\\\\n")[:300] + "\\n")

def _hook(event, args):
    if event in _PROCESS:
        _record(f"{event} {args!r}")
    elif event == "open" and isinstance(args[0], (str, bytes)) and args[0] != _log:
        mode, flags = args[1], args[2] or 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(flags & _WRITE)
        path = os.path.realpath(os.fsdecode(args[0]))
        if writing and not path.startswith(_allowed) and "__pycache__" not in path:
            _record(f"write {path}")
    elif event == "socket.connect":
        _record(f"connect {args[1]!r}")

sys.addaudithook(_hook)
"""


def sample() -> list[Case]:
    """The first case of each entry point that has a launcher, with a payload a pipe takes quickly."""
    chosen: dict[str, Case] = {}
    for case in ALL_CASES:
        kind, _, name = case.entry.partition(" ")
        if kind == "admin" or case.entry in chosen or len(case.stdin) > (1 << 20):
            continue
        if kind in ("datastore", "tm") and not (SOURCE_REMOTES / kind / "ipfs" / name).exists():
            continue
        chosen[case.entry] = case
    return list(chosen.values())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with new_world(tmp_path_factory.mktemp("hostile-launcher")) as running:
        yield running


@pytest.fixture(scope="module")
def tripwires(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tripwires")
    for name in TRIPWIRES:
        script = folder / "bin" / name
        script.parent.mkdir(exist_ok=True)
        script.write_text('#!/bin/sh\necho "$0 $*" >> "$ONE_IPFS_TRIPWIRE_LOG"\nexit 97\n')
        script.chmod(0o755)
    (folder / "site").mkdir()
    (folder / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def environment(world: World, tripwires: Path) -> dict[str, str]:
    """The driver manager's environment, with the tripwires first on PATH and the audit hook loaded."""
    return {
        **os.environ,
        "PATH": f"{tripwires / 'bin'}:{os.environ['PATH']}",
        "PYTHONPATH": str(tripwires / "site"),
        "ONE_IPFS_PYTHON": sys.executable,
        "ONE_IPFS_STATE": str(world.state),
        "ONE_IPFS_HOST_ROOT": str(world.host_root),
        "TMPDIR": str(world.tmp),
        "ONE_IPFS_AUDIT_LOG": str(world.tmp / "audit.log"),
        "ONE_IPFS_TRIPWIRE_LOG": str(world.tmp / "tripwires.log"),
    }


def test_the_tripwires_see_a_shell_an_ssh_and_a_write(world: World, tripwires: Path) -> None:
    """The watch itself works: what every case below must not do is recorded when done."""
    outside = world.root / "outside"
    script = f"import subprocess; subprocess.run(['ssh', '-oProxyCommand=x', 'h1']); open('{outside}', 'a')"

    subprocess.run([sys.executable, "-c", script], env=environment(world, tripwires), check=False)

    assert "ssh -oProxyCommand=x h1" in (world.tmp / "tripwires.log").read_text()
    audit = (world.tmp / "audit.log").read_text()
    assert "subprocess.Popen" in audit and f"write {outside}" in audit
    outside.unlink()
    (world.tmp / "tripwires.log").unlink()
    (world.tmp / "audit.log").unlink()


@pytest.mark.parametrize("case", sample(), ids=lambda case: case.id)
def test_a_launcher_refuses_hostile_input_with_one_line_and_runs_nothing(
    world: World, tripwires: Path, case: Case
) -> None:
    kind, _, name = case.entry.partition(" ")
    args, stdin = placed(world, case.args, case.stdin)
    if kind == "host":
        command, stdin = [sys.executable, "-m", "one_ipfs.host"], request_line(args).encode()
    else:
        command = [str(SOURCE_REMOTES / kind / "ipfs" / name), *args]
    audit, calls = world.tmp / "audit.log", world.tmp / "tripwires.log"
    before = world.snapshot()

    done = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        cwd=world.cwd,
        env=environment(world, tripwires),
        timeout=120,
        check=False,
    )

    err = done.stderr.decode(errors="replace")
    plain = [line for line in err.splitlines() if not MANAGER_LOG_LINE.match(line)]
    assert done.returncode not in (0, 70), err
    assert done.stdout == b""
    assert len(plain) == 1 and case.reason.lower() in plain[0].lower(), err
    assert not calls.exists(), calls.read_text()
    assert not audit.exists(), audit.read_text()
    changed = {name for name, info in world.snapshot().items() if before.get(name) != info}
    assert changed <= {"tmp"}, changed
