"""``one-ipfs`` behaves like the tools admins know: ``--version``, an exit status that tells a broken network,
tables that stay whole in a pipe, ``NO_COLOR``, ``--verbose``, and a host named ``frontend`` still a host.

No node runs here: the frontend's Kubo API is a closed loopback port and ssh a stand-in that reaches no host.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from one_ipfs import __version__
from one_ipfs.admin.cli import main
from one_ipfs.admin.nodes import HOST_NAMED_FRONTEND
from tests.test_admin_install import self_contained_one
from tests.test_admin_site import SSH_REFUSED, stand_ins

CLOSED_API = "http://127.0.0.1:9"


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    return stand_ins(tmp_path / "bin")


def one_ipfs(*args: str, bin_dir: Path | None = None, color: bool = False, **env: str) -> Result:
    """In this process, the stand-ins first on PATH; ONE_LOCATION and NO_COLOR put back afterwards."""
    path = f"{bin_dir}:{os.environ['PATH']}" if bin_dir else os.environ["PATH"]
    environment: dict[str, str | None] = {"ONE_LOCATION": None, "NO_COLOR": None, "PATH": path, **env}
    return CliRunner().invoke(main, list(args), env=environment, color=color, catch_exceptions=False)


def probe_options(tmp_path: Path) -> list[str]:
    return ["--repo", str(tmp_path / "no-repo"), "--api", CLOSED_API]


def test_version_names_the_package_version() -> None:
    result = one_ipfs("--version")

    assert result.exit_code == 0
    assert result.output == f"one-ipfs, version {__version__}\n"


@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_network_status_exits_1_when_a_node_is_down(
    tmp_path: Path, bin_dir: Path, as_json: list[str]
) -> None:
    result = one_ipfs(
        "network", "status", "--hosts", "h1", *probe_options(tmp_path), *as_json, bin_dir=bin_dir
    )

    assert result.exit_code == 1
    assert "h1" in result.stdout


def test_doctor_table_in_a_pipe_keeps_every_value_whole(tmp_path: Path, bin_dir: Path) -> None:
    one = self_contained_one(tmp_path / "a-rather-long-folder-name-for-a-self-contained-opennebula" / "one")

    result = one_ipfs(
        "doctor", "--hosts", "h1", *probe_options(tmp_path), bin_dir=bin_dir, ONE_LOCATION=str(one)
    )

    assert result.exit_code == 1
    missing = ", ".join(
        str(one / "var" / "remotes" / part)
        for part in ("datastore/ipfs", "tm/ipfs", "market/ipfs", "tm/ipfs/lib/BUNDLE")
    )
    assert f"the drivers are not installed ({missing} missing)" in result.stdout
    assert f"ssh to h1 failed: {SSH_REFUSED}" in result.stdout
    assert "…" not in result.stdout


def test_no_color_takes_the_colours_out_of_the_oned_conf_diff(tmp_path: Path) -> None:
    one = self_contained_one(tmp_path / "one")

    coloured = one_ipfs("install", "--print", "--one-location", str(one), color=True)
    plain = one_ipfs("install", "--print", "--one-location", str(one), color=True, NO_COLOR="1")

    assert "\x1b[" in coloured.output
    assert "\x1b[" not in plain.output
    assert plain.output == re.sub("\x1b\\[[0-9]*m", "", coloured.output)


def test_verbose_says_what_install_does_and_quiet_says_nothing_more(tmp_path: Path) -> None:
    one = self_contained_one(tmp_path / "one")

    quiet = one_ipfs("install", "--one-location", str(self_contained_one(tmp_path / "other")))
    verbose = one_ipfs("--verbose", "install", "--one-location", str(one))

    assert "one-ipfs:" not in quiet.stderr
    assert (
        f"one-ipfs: copying the drivers and the host bundle into {one / 'var' / 'remotes'}" in verbose.stderr
    )
    assert f"one-ipfs: keeping the original {one / 'etc' / 'oned.conf'} as " in verbose.stderr
    assert f"one-ipfs: writing {one / 'etc' / 'oned.conf'}" in verbose.stderr
    assert "one-ipfs:" not in one_ipfs("uninstall", "--one-location", str(one)).stderr


def test_verbose_says_which_node_is_asked_what_and_how(tmp_path: Path, bin_dir: Path) -> None:
    result = one_ipfs("-v", "network", "status", "--hosts", "h1", *probe_options(tmp_path), bin_dir=bin_dir)

    assert "one-ipfs: frontend: reading its Kubo node, repository, interpreter" in result.stderr
    assert "one-ipfs: h1: reading its Kubo node, repository, interpreter" in result.stderr
    assert "over ssh h1 python3" in result.stderr


def test_a_host_named_frontend_is_checked_over_ssh_beside_the_frontend(tmp_path: Path, bin_dir: Path) -> None:
    result = one_ipfs("doctor", "--hosts", "frontend", *probe_options(tmp_path), "--json", bin_dir=bin_dir)

    report = json.loads(result.stdout)
    assert set(report["nodes"]) == {"frontend", HOST_NAMED_FRONTEND}
    assert (
        report["nodes"][HOST_NAMED_FRONTEND]["error"] == f"ssh to {HOST_NAMED_FRONTEND} failed: {SSH_REFUSED}"
    )
    assert "-- frontend python3 -c" in (bin_dir / "ssh.log").read_text()
    assert {
        "node": HOST_NAMED_FRONTEND,
        "check": "ssh",
        "fix": "check that oneadmin can `ssh frontend` without a password",
    }.items() <= next(p for p in report["problems"] if p["node"] == HOST_NAMED_FRONTEND).items()
