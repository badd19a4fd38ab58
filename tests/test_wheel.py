"""The package as an admin installs it: an sdist built from the checkout, a wheel built from that sdist
(as ``python -m build`` does), installed into a clean venv, whose ``one-ipfs`` installs and uninstalls the
drivers.

Offline: the build uses this venv's setuptools, and the clean venv borrows only the third-party packages
(click, rich, defusedxml) of this one, never its one_ipfs or the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from one_ipfs.hosts.bundle import BUNDLE_STAMP, HOST_LIB
from one_ipfs.opennebula import oned_conf
from one_ipfs.opennebula.install import DRIVER_DIRS, SOURCE_REMOTES
from tests.test_admin_install import ONED_CONF, self_contained_one

REPO = Path(__file__).resolve().parents[1]
CHECKOUT = ("pyproject.toml", "README.md", "LICENSE", "src", "testbed", "tests", "benchmarks")
NOT_SHIPPED = ("testbed", "tests", "benchmarks")


def run(argv: list[str | Path], cwd: Path = Path("/")) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` away from the checkout (``python -c`` would import from its folder), insisting on
    success."""
    result = subprocess.run(
        [str(arg) for arg in argv], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from an sdist of the checkout's tracked parts (no venv, cache, build or bytecode)."""
    source = tmp_path_factory.mktemp("checkout")
    for part in CHECKOUT:
        if (REPO / part).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "results")
            shutil.copytree(REPO / part, source / part, symlinks=True, ignore=ignore)
        else:
            shutil.copy(REPO / part, source / part)
    build = "import sys, setuptools.build_meta as backend; print(backend.build_sdist(sys.argv[1]))"
    sdist = (
        source / "dist" / run([sys.executable, "-c", build, source / "dist"], cwd=source).stdout.split()[-1]
    )
    wheels = tmp_path_factory.mktemp("wheels")
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    run([*pip, "-w", wheels, sdist])
    return next(wheels.glob("one_ipfs-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv holding the wheel (its dependencies borrowed from this venv through a .pth file)."""
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", root])
    python = root / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    (Path(purelib) / "zz-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel])
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

    found = run([python, "-c", "import one_ipfs; print(one_ipfs.__file__)"]).stdout.strip()

    assert found.startswith(str(venv))
    for package in NOT_SHIPPED:
        missing = subprocess.run(
            [python, "-c", f"import {package}"], cwd="/", capture_output=True, check=False
        )
        assert missing.returncode != 0, f"{package} is importable from the wheel's venv"


def test_one_ipfs_from_a_wheel_installs_working_drivers_and_uninstalls_them(
    venv: Path, tmp_path: Path
) -> None:
    one = self_contained_one(tmp_path / "one")
    remotes = one / "var" / "remotes"
    one_ipfs = venv / "bin" / "one-ipfs"

    installed = run([one_ipfs, "install", "--one-location", one])

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

    removed = run([one_ipfs, "uninstall", "--one-location", one])

    assert "Traceback" not in removed.stderr
    for driver_dir in DRIVER_DIRS:
        assert not (remotes / driver_dir).exists()
    assert not (remotes / "etc" / "datastore" / "ipfs").exists()
    assert (one / "etc" / "oned.conf").read_text() == ONED_CONF
