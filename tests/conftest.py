"""Fixtures shared by every test file.

``bed``: one test bed (frontend + 4 hosts, see ``testbed.bed``) for the whole session, brought up on first
use and torn down at the end; ``one``: the OpenNebula simulator on it; ``ipfs_ds``: an IPFS datastore;
``local_dir``: a folder for image files the datastore driver may read. Tests that take the bed are marked
``@pytest.mark.bed``. The bed replaces any bed left at the default root (``.bed/``), including one started
with ``python -m testbed up``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.bed import Bed, Layout
from testbed.one import Datastore, OneSim
from testbed.one.bedrunner import BedRunner
from tests.support.datastores import ipfs_datastore_template


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
def bed() -> Iterator[Bed]:
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root (network namespaces, mounts, sshd); run the tests as root")
    layout = _layout()
    with Bed.up(hosts=4, root=layout.root, layout=layout) as running:
        yield running


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


@pytest.fixture(scope="session")
def ipfs_ds(bed: Bed, one: OneSim) -> Datastore:
    """An IPFS datastore with the defaults an admin gets from DS_MAD=ipfs TM_MAD=ipfs, short waits aside."""
    return one.datastore_create(ipfs_datastore_template(bed, "ipfs"))
