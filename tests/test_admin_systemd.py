"""``one-ipfs network init|join --systemd-unit``: the unit a node gets for its Kubo daemon, and how it is run.

This machine has no systemd running, so each test puts a recording ``systemctl`` (and a ``sudo`` that only
passes its command on, for a test run without root) first on PATH, for that test only, has the node write
its unit into a temporary folder instead of /etc/systemd/system, and names a temporary folder as the sign
that systemd runs (``/run/systemd/system`` on a real node). Everything else is real: the node
side (``protocol.InstallUnit`` read back from its JSON and handled as a host handles it), the files,
``install``, and systemd's own parser (``systemd-analyze verify``) judging the unit.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from one_ipfs.admin.cli import main
from one_ipfs.admin.nodes import FRONTEND, Reply, call
from one_ipfs.host import admin
from one_ipfs.host.protocol import InstallUnit, UnitInstalled

UNIT = "one-ipfs-test"

RECORDING_SYSTEMCTL = """#!{python}
# Records its arguments; a unit is active once `enable --now` started it. FAIL_VERB makes one verb fail.
import json, os, sys
folder = os.path.dirname(os.path.abspath(__file__))
words = sys.argv[1:]
with open(os.path.join(folder, "calls.jsonl"), "a") as log:
    log.write(json.dumps(words) + "\\n")
verb, name = words[0], words[-1]
active = os.path.join(folder, "active-" + name)
if verb == os.environ.get("FAIL_VERB"):
    sys.stderr.write("Failed to " + verb + " unit " + name + ": Access denied\\n")
    sys.exit(1)
if verb == "is-active":
    sys.exit(0 if os.path.exists(active) else 3)
if words[:2] == ["enable", "--now"]:
    open(active, "w").close()
"""

PASS_ON_SUDO = """#!{python}
import os, sys
words = [word for word in sys.argv[1:] if word != "-n"]
os.execvp(words[0], words)
"""


@dataclass(frozen=True)
class Node:
    """A node as the unit sees it: its PATH folder (systemctl, sudo, ipfs), repository and unit folder."""

    bin: Path
    repo: Path
    unit_dir: Path

    @property
    def unit_file(self) -> Path:
        return self.unit_dir / f"{UNIT}.service"

    def calls(self) -> list[list[str]]:
        """The systemctl commands run, without the ``--`` before the unit name."""
        log = self.bin / "calls.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        return [[word for word in json.loads(line) if word != "--"] for line in lines]

    def configure(self, *, restart: bool = False) -> Reply[UnitInstalled]:
        return call(FRONTEND, InstallUnit(unit=UNIT, daemon="kubo", folder=str(self.repo), restart=restart))


def executable(path: Path, text: str) -> None:
    path.write_text(text.format(python=sys.executable))
    path.chmod(0o755)


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    bin_dir, repo, unit_dir = tmp_path / "bin", tmp_path / "repo", tmp_path / "etc" / "systemd" / "system"
    for folder in (bin_dir, repo, unit_dir):
        folder.mkdir(parents=True)
    executable(bin_dir / "systemctl", RECORDING_SYSTEMCTL)
    executable(bin_dir / "sudo", PASS_ON_SUDO)
    executable(bin_dir / "ipfs", "#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    booted = tmp_path / "run" / "systemd" / "system"
    booted.mkdir(parents=True)
    monkeypatch.setattr(admin, "SYSTEMD_RUNTIME", str(booted))
    monkeypatch.setattr(admin, "SYSTEMD_DIR", str(unit_dir))
    yield Node(bin_dir, repo, unit_dir)


def directives(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> every value it is given, in order (systemd allows a key more than once)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(f"{section}.{key}", []).append(value)
    return found


def test_unit_runs_kubo_as_the_repository_owner_in_a_forced_private_network(node: Node) -> None:
    result = node.configure()

    assert result.result == UnitInstalled(str(node.unit_file), changed=True, done="enabled and started")
    unit = directives(node.unit_file.read_text())
    owner = pwd.getpwuid(node.repo.stat().st_uid).pw_name
    assert unit["Service.User"] == [owner]
    assert unit["Service.Environment"] == [
        f"IPFS_PATH={node.repo}",
        "LIBP2P_FORCE_PNET=1",
        "IPFS_TELEMETRY=off",
    ]
    assert unit["Service.ExecStart"] == [f"{node.bin}/ipfs daemon --migrate"]
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.ProtectSystem"] == ["strict"]
    assert unit["Service.ReadWritePaths"] == [str(node.repo)]
    assert unit["Service.NoNewPrivileges"] == ["yes"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]
    assert oct(node.unit_file.stat().st_mode & 0o777) == "0o644"


def test_unit_has_kubo_migrate_its_repository_so_an_upgrade_leaves_no_node_down(node: Node) -> None:
    node.configure()

    command = directives(node.unit_file.read_text())["Service.ExecStart"][0].split()

    assert command[1:] == ["daemon", "--migrate"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_every_directive_of_the_unit(node: Node) -> None:
    node.configure()

    verify = subprocess.run(
        ["systemd-analyze", "verify", str(node.unit_file)], capture_output=True, text=True, check=False
    )

    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", "")


def test_first_install_reloads_systemd_then_enables_and_starts_the_daemon(node: Node) -> None:
    node.configure()

    assert node.calls() == [["is-active", "--quiet", UNIT], ["daemon-reload"], ["enable", "--now", UNIT]]


def test_running_the_same_network_command_again_leaves_the_daemon_alone(node: Node) -> None:
    node.configure()
    first = len(node.calls())

    result = node.configure()

    assert result.result == UnitInstalled(str(node.unit_file), changed=False, done="running")
    assert node.calls()[first:] == [["is-active", "--quiet", UNIT]]


def test_running_daemon_is_restarted_to_read_new_network_settings(node: Node) -> None:
    node.configure()
    first = len(node.calls())

    result = node.configure(restart=True).result

    assert result is not None and result.done == "restarted"
    assert node.calls()[first:] == [["is-active", "--quiet", UNIT], ["restart", UNIT]]


def test_moved_kubo_binary_rewrites_the_unit_and_restarts_the_daemon(node: Node, tmp_path: Path) -> None:
    node.configure()
    first = len(node.calls())
    moved = tmp_path / "opt" / "kubo"
    moved.mkdir(parents=True)
    (node.bin / "ipfs").rename(moved / "ipfs")
    (node.bin / "ipfs").symlink_to(moved / "ipfs")

    result = node.configure().result

    assert result is not None and (result.changed, result.done) == (True, "restarted")
    assert directives(node.unit_file.read_text())["Service.ExecStart"] == [f"{moved}/ipfs daemon --migrate"]
    assert node.calls()[first:] == [
        ["is-active", "--quiet", UNIT],
        ["daemon-reload"],
        ["enable", UNIT],
        ["restart", UNIT],
    ]


def test_daemon_started_by_hand_is_named_and_no_unit_is_written(node: Node) -> None:
    """Kubo's daemon holds an fcntl write lock on ``repo.lock``; a child process takes the same lock."""
    lock = node.repo / admin.REPO_LOCK
    lock.touch()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'r+'); fcntl.lockf(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        result = node.configure()
    finally:
        holder.communicate("")

    assert (
        result.error == f"a Kubo daemon that {UNIT} does not run holds {node.repo}: stop it, then run again"
    )
    assert not node.unit_file.exists()
    assert node.calls() == [["is-active", "--quiet", UNIT]]


def test_refused_systemctl_is_reported_with_its_own_words_and_a_rerun_starts_the_daemon(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_VERB", "enable")

    result = node.configure()

    assert (
        result.error
        == f"systemctl enable --now -- {UNIT} failed: Failed to enable unit {UNIT}: Access denied"
    )
    monkeypatch.delenv("FAIL_VERB")
    rerun = node.configure().result
    assert rerun is not None and rerun.done == "enabled and started"


@pytest.mark.parametrize("missing", ["systemctl", "a running systemd"])
def test_node_without_systemd_is_told_so_and_nothing_is_written(
    node: Node, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str
) -> None:
    if missing == "systemctl":
        (node.bin / "systemctl").unlink()
        monkeypatch.setenv("PATH", str(node.bin))
    else:
        monkeypatch.setattr(admin, "SYSTEMD_RUNTIME", str(tmp_path / "not-booted"))

    result = node.configure()

    assert result.error == "systemd does not run here: start Kubo with this node's own service manager"
    assert list(node.unit_dir.iterdir()) == []
    assert node.calls() == []


@pytest.mark.parametrize("unit", ["../../etc/passwd", "ipfs service", "-ipfs", ""])
def test_network_init_refuses_a_unit_that_is_no_unit_name_before_touching_any_node(unit: str) -> None:
    result = CliRunner().invoke(main, ["network", "init", "--hosts", "h1", "--unit", unit, "--systemd-unit"])

    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: --unit must be a systemd unit name such as ipfs, not {unit!r}"
    ]


def test_cluster_unit_runs_the_peer_as_its_folders_owner_after_kubo_and_systemd_accepts_it(
    node: Node,
) -> None:
    executable(node.bin / "ipfs-cluster-service", "#!/bin/sh\nexit 0\n")
    folder = node.repo.parent / "cluster"
    folder.mkdir()
    request = InstallUnit(unit="one-ipfs-cluster-test", daemon="cluster", folder=str(folder), after=UNIT)

    result = call(FRONTEND, request)

    path = node.unit_dir / "one-ipfs-cluster-test.service"
    assert result.result == UnitInstalled(str(path), changed=True, done="enabled and started")
    unit = directives(path.read_text())
    assert unit["Unit.After"] == [f"network-online.target {UNIT}.service"]
    assert unit["Service.User"] == [pwd.getpwuid(folder.stat().st_uid).pw_name]
    assert unit["Service.Environment"] == [f"IPFS_CLUSTER_PATH={folder}"]
    assert unit["Service.ExecStart"] == [f"{node.bin}/ipfs-cluster-service daemon"]
    assert unit["Service.ReadWritePaths"] == [str(folder)]
    if shutil.which("systemd-analyze") is not None:
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False
        )
        assert (verify.returncode, verify.stderr) == (0, ""), verify.stderr
