"""Fixtures shared by every test file.

``bed``: one test bed (frontend + 4 hosts, see ``testbed.bed``) for the simulator's tests, brought up on
first use; ``one``: the OpenNebula simulator on it; ``ipfs_ds``: an IPFS datastore; ``cloud``: a genuine
oned (``testbed.genuine``) on a bed of its own, once per tested OpenNebula version (the test ids name it,
``[7.4.0]``), its drivers installed from the wheel in ``admin_python``'s venv; ``local_dir``: a folder for
image files the datastore driver may read; ``outsider``: a Kubo node on the bed outside its private
network. Tests that take a bed are marked ``@pytest.mark.bed``, those of genuine oned
``@pytest.mark.opennebula`` as well.

The beds share one layout, so only one is up at a time: the simulator's tests run first, then each
version's genuine ones (``pytest_collection_modifyitems``), and each bed replaces the one before it. A bed
replaces any bed left at its root (``.bed/``), including one started with ``python -m testbed up``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from one_ipfs.ipfs.network import generate_swarm_key
from testbed import package
from testbed.bed import Bed, Layout
from testbed.genuine import VERSIONS, GenuineOne, Unavailable, start_cloud
from testbed.kubo import Node
from testbed.one import Datastore, OneSim
from testbed.one.bedrunner import BedRunner
from tests.support.beds import BedKeeper
from tests.support.datastores import ipfs_datastore_template

GENUINE = "cloud"
"""The fixture of genuine oned, whose tests run after the simulator's, version by version."""
GENUINE_RUNS: dict[str, str] = {}
"""Each OpenNebula version the session asked for: "ran", or why it could not."""


def _layout() -> Layout:
    """The bed's layout: the default, or ``ONE_IPFS_TEST_BED=prefix:address/length:api:gateway`` so that
    a developer's run can share the machine with another bed (a /27 inside 198.18.0.0/24, say)."""
    spec = os.environ.get("ONE_IPFS_TEST_BED")
    return Layout.parse(spec) if spec else Layout()


@pytest.fixture(scope="module")
def local_dir() -> Iterator[Path]:
    """A folder of the module's own in /var/tmp, the default SAFE_DIRS, readable by oneadmin: where
    ``oneimage create --path`` takes its files from."""
    folder = Path(tempfile.mkdtemp(prefix="one-ipfs-tests-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="session")
def beds() -> Iterator[BedKeeper]:
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root (network namespaces, mounts, sshd); run the tests as root")
    keeper = BedKeeper(_layout())
    yield keeper
    keeper.close()


@pytest.fixture(scope="session")
def bed(beds: BedKeeper) -> Bed:
    return beds.take("simulator")


@pytest.fixture
def outsider(bed: Bed) -> Iterator[Node]:
    """A Kubo node on the bed's bridge that peers with every bed node but has a swarm key of its own."""
    node = bed.add_node("x9", swarm_key=generate_swarm_key())
    try:
        yield node
    finally:
        bed.remove_node(node)


@pytest.fixture(scope="session")
def admin_python() -> Path:
    """The Python of a clean venv holding the wheel built from this checkout, as an admin installs it: the
    genuine clouds' ``one-ipfs`` and drivers run from it, not from the checkout."""
    return package.installed()


@pytest.fixture(scope="session", params=VERSIONS)
def cloud(request: pytest.FixtureRequest, beds: BedKeeper, admin_python: Path) -> Iterator[GenuineOne]:
    """Genuine oned of one version on a bed of its own, the drivers installed as docs/install.md says, from
    the wheel."""
    version: str = request.param
    try:
        genuine = start_cloud(lambda: beds.take(f"oned-{version}"), version, str(admin_python))
    except Unavailable as missing:
        GENUINE_RUNS[version] = f"not run: {missing}"
        pytest.skip(f"genuine OpenNebula {version} not run: {missing}")
    GENUINE_RUNS[version] = "ran"
    yield genuine
    genuine.frontend.stop()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The simulator's tests first, then genuine oned's, one version after the other, so that each bed
    comes up once; on each bed, the tests that lose the frontend's IPFS repository last."""

    def rank(item: pytest.Item) -> tuple[int, bool]:
        callspec = getattr(item, "callspec", None)
        wipes = item.get_closest_marker("wipes_frontend") is not None
        if GENUINE not in getattr(item, "fixturenames", ()) or callspec is None:
            return 0, wipes
        return 1 + VERSIONS.index(callspec.params[GENUINE]), wipes

    items.sort(key=rank)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which genuine OpenNebula versions the tests ran on, so that a run without one does not pass
    quietly."""
    for version, outcome in GENUINE_RUNS.items():
        terminalreporter.write_line(f"genuine OpenNebula {version}: {outcome}", red=outcome != "ran")


@pytest.fixture(scope="session")
def one(bed: Bed) -> Iterator[OneSim]:
    """The OpenNebula simulator on the bed, with the drivers installed and synced to every host.

    One for the session: image and VM ids then never repeat, as in a real cloud, so no test can
    mistake another's leftovers for its own.
    """
    state = bed.root / "one"
    shutil.rmtree(state, ignore_errors=True)
    simulator = OneSim(BedRunner(bed), state=state)
    simulator.install_drivers()
    simulator.onehost_sync()
    yield simulator
    simulator.close()


@pytest.fixture(scope="session")
def ipfs_ds(bed: Bed, one: OneSim) -> Datastore:
    """An IPFS datastore with the defaults an admin gets from DS_MAD=ipfs TM_MAD=ipfs, short waits aside."""
    return one.datastore_create(ipfs_datastore_template(bed, "ipfs"))
