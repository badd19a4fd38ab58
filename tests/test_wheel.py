"""The package as an admin installs it (``testbed.package``: a wheel built from an sdist of the checkout,
installed into a clean venv): it ships the remotes tree and no test code, and its ``one-ipfs`` installs and
uninstalls the drivers. The genuine clouds run the drivers from such a venv too.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from one_ipfs.hosts.bundle import BUNDLE_STAMP, HOST_LIB
from one_ipfs.opennebula import oned_conf
from one_ipfs.opennebula.install import DRIVER_DIRS, SOURCE_REMOTES
from testbed import package
from tests.test_admin_install import ONED_CONF, self_contained_one

NOT_SHIPPED = ("testbed", "tests", "benchmarks")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    package.install_venv(wheel, root)
    return root


def test_the_wheel_carries_the_remotes_tree_and_no_test_code(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()

    shipped = {
        str(path.relative_to(SOURCE_REMOTES.parent.parent))
        for path in SOURCE_REMOTES.rglob("*")
        if not path.is_dir()
    }
    assert shipped <= set(names)
    assert {name.split("/")[0] for name in names} == {"one_ipfs", wheel.name.split("-py3")[0] + ".dist-info"}


def test_the_venv_runs_the_wheel_not_the_checkout(venv: Path) -> None:
    python = venv / "bin" / "python"

    found = package.run([python, "-c", "import one_ipfs; print(one_ipfs.__file__)"]).stdout.strip()

    assert found.startswith(str(venv))
    for shipped_not in NOT_SHIPPED:
        missing = subprocess.run(
            [python, "-c", f"import {shipped_not}"], cwd="/", capture_output=True, check=False
        )
        assert missing.returncode != 0, f"{shipped_not} is importable from the wheel's venv"


def test_one_ipfs_from_a_wheel_installs_working_drivers_and_uninstalls_them(
    venv: Path, tmp_path: Path
) -> None:
    one = self_contained_one(tmp_path / "one")
    remotes = one / "var" / "remotes"
    one_ipfs = venv / "bin" / "one-ipfs"

    installed = package.run([one_ipfs, "install", "--one-location", one])

    for driver_dir in DRIVER_DIRS:
        actions = sorted(path.name for path in (SOURCE_REMOTES / driver_dir).iterdir())
        assert sorted(path.name for path in (remotes / driver_dir).iterdir() if path.name != "lib") == actions
        for action in actions:
            assert os.access(remotes / driver_dir / action, os.X_OK), f"{driver_dir}/{action}"
    assert (remotes / HOST_LIB / BUNDLE_STAMP).is_file()
    defaults = (remotes / "etc" / "datastore" / "ipfs" / "ipfs.conf").read_text()
    assert f'ONE_IPFS_PYTHON="{venv / "bin" / "python"}"' in defaults
    assert oned_conf.inspect((one / "etc" / "oned.conf").read_text()).complete
    assert "onehost sync --force" in installed.stdout
    started = subprocess.run(
        [remotes / "datastore" / "ipfs" / "stat"],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert "expected the object id with the base64 driver action" in started.stderr, started.stderr

    removed = package.run([one_ipfs, "uninstall", "--one-location", one])

    assert "Traceback" not in removed.stderr
    for driver_dir in DRIVER_DIRS:
        assert not (remotes / driver_dir).exists()
    assert not (remotes / "etc" / "datastore" / "ipfs").exists()
    assert (one / "etc" / "oned.conf").read_text() == ONED_CONF
