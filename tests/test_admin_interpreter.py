"""The interpreter the drivers run under is checked: ``install --python`` refuses one that cannot run this
one_ipfs, and ``doctor`` checks the one ipfs.conf names on the frontend and each host's python3 against the
host bundle it will run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from one_ipfs import __version__
from one_ipfs.admin.cli import main
from one_ipfs.admin.doctor import Target, diagnose
from one_ipfs.admin.nodes import FRONTEND, Reply, Site
from one_ipfs.host.protocol import NodeFacts, Probe, read_result, to_json
from one_ipfs.hosts.bundle import HOST_LIB, write_host_bundle
from one_ipfs.hosts.calls import probe_argv
from one_ipfs.opennebula.install import DEFAULTS
from tests.test_admin_install import ONED_CONF, self_contained_one, stand_in_python, tree
from tests.test_admin_site import stand_ins

BASE_PYTHON = getattr(sys, "_base_executable", "")
"""This venv's own base interpreter: a real Python without one_ipfs."""


def one_ipfs(*args: str, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"ONE_LOCATION": None, **env}, catch_exceptions=False)


@pytest.mark.parametrize(
    ("python", "reason"),
    [
        ("/nonexistent/bin/python3", "No such file or directory"),
        (BASE_PYTHON, "ModuleNotFoundError: No module named 'one_ipfs'"),
        ("old", f"it runs one_ipfs 0.0.1, these drivers are {__version__}"),
    ],
)
def test_install_refuses_a_python_that_cannot_run_these_drivers_and_changes_nothing(
    tmp_path: Path, python: str, reason: str
) -> None:
    if not python:
        pytest.skip("this interpreter names no base interpreter")
    if python == "old":
        python = str(stand_in_python(tmp_path / "bin", "0.0.1"))
    one = self_contained_one(tmp_path / "one")
    before = tree(one)

    result = one_ipfs("install", "--one-location", str(one), "--python", python)

    assert result.exit_code == 1
    assert result.stderr == f"Error: --python {python} cannot run the drivers: {reason}\n"
    assert tree(one) == before


def test_install_takes_a_python_that_runs_these_drivers(tmp_path: Path) -> None:
    one = self_contained_one(tmp_path / "one")

    result = one_ipfs("install", "--one-location", str(one), "--python", sys.executable)

    assert result.exit_code == 0, result.output
    assert f'ONE_IPFS_PYTHON="{sys.executable}"' in (one / "var" / "remotes" / DEFAULTS).read_text()
    assert (one / "etc" / "oned.conf").read_text() != ONED_CONF


def doctor_problems(one: Path, bin_dir: Path, tmp_path: Path) -> set[tuple[str, str]]:
    result = one_ipfs(
        "doctor",
        *("--hosts", "h1", "--repo", str(tmp_path / "no-repo"), "--api", "http://127.0.0.1:9", "--json"),
        ONE_LOCATION=str(one),
        PATH=f"{bin_dir}:{os.environ['PATH']}",
    )
    return {(problem["node"], problem["check"]) for problem in json.loads(result.stdout)["problems"]}


def test_doctor_checks_the_interpreter_ipfs_conf_gives_the_drivers(tmp_path: Path) -> None:
    one = self_contained_one(tmp_path / "one")
    bin_dir = stand_ins(tmp_path / "bin")
    assert one_ipfs("install", "--one-location", str(one)).exit_code == 0
    assert (FRONTEND, "python") not in doctor_problems(one, bin_dir, tmp_path)
    defaults = one / "var" / "remotes" / DEFAULTS
    old = stand_in_python(tmp_path / "old", "0.0.1")
    defaults.write_text(defaults.read_text().replace(sys.executable, str(old)))

    assert (FRONTEND, "python") in doctor_problems(one, bin_dir, tmp_path)


def probe_over_ssh(lib: Path) -> NodeFacts:
    """The probe as a host runs it: the program the channel sends (``python3 -c``), the host bundle folder
    first on its path."""
    request = Probe(repo=str(lib / "no-repo"), api="http://127.0.0.1:9", lib=str(lib), frontend_bundle="x")
    done = subprocess.run(
        [sys.executable, *probe_argv()[1:]],
        input=to_json(request) + "\n",
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    return read_result(request, done.stdout.splitlines()[-1])


def test_doctor_finds_a_host_python3_that_cannot_run_the_host_bundle(tmp_path: Path) -> None:
    lib = tmp_path / "remotes" / HOST_LIB
    write_host_bundle(lib)
    sound = probe_over_ssh(lib)
    (lib / "one_ipfs" / "host" / "__main__.py").write_text("from one_ipfs import nothing_here\n")

    broken = probe_over_ssh(lib)

    assert sound.bundle_python is None
    assert "ImportError: cannot import name 'nothing_here'" in str(broken.bundle_python)
    target = Target(Site(tmp_path / "remotes", tmp_path / "oned.conf"), "~/.ipfs", "~/.ipfs")
    frontend = Reply(FRONTEND, sound)
    report = diagnose(target, {FRONTEND: frontend, "h1": Reply("h1", broken, sent_at=1.0, received_at=1.0)})
    assert ("h1", "python3") in {(problem.node, problem.check) for problem in report.problems}
    assert ("h1", "python3") not in {
        (problem.node, problem.check)
        for problem in diagnose(target, {FRONTEND: frontend, "h1": Reply("h1", sound)}).problems
    }
