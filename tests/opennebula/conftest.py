"""The tests of this folder run under genuine oned, once per tested OpenNebula version (``[7.4.0]``).

They read as the simulator's tests do (``bed``, ``one``, ``ipfs_ds``), but here ``one`` is OpenNebula itself
(``testbed.genuine.GenuineOne``), driven through its CLI, on the bed of its version. A test marked
``current_version`` proves what lies between the drivers and Kubo, the same whichever oned orders it: it runs
under the current version only, and its other ids are skipped with a line saying so (docs/testing.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.bed import Bed
from testbed.genuine import VERSIONS, GenuineOne
from testbed.one import Datastore
from tests.conftest import GENUINE
from tests.support.datastores import ipfs_datastore_template, rsync_backup_template
from tests.support.web import served_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip a ``current_version`` test under the other versions before any of its fixtures is set up."""
    skip = pytest.mark.skip(reason=f"proven under OpenNebula {VERSIONS[0]} only (docs/testing.md)")
    for item in items:
        callspec = getattr(item, "callspec", None)
        version = callspec.params.get(GENUINE) if callspec else None
        if item.get_closest_marker("current_version") and version not in (None, VERSIONS[0]):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bed(cloud: GenuineOne) -> Bed:
    """The bed genuine oned runs on."""
    return cloud.frontend.bed


@pytest.fixture(scope="session")
def one(cloud: GenuineOne) -> GenuineOne:
    return cloud


@pytest.fixture(scope="session")
def ipfs_ds(cloud: GenuineOne) -> Datastore:
    """The IPFS datastore of the version's tests, created with ``onedatastore create``."""
    return cloud.datastore_create(ipfs_datastore_template(cloud.frontend.bed, "ipfs"))


@pytest.fixture(scope="session")
def overlay_ds(cloud: GenuineOne) -> Datastore:
    """An IPFS datastore in OVERLAY mode: disks are qcow2 overlays on a base each host keeps once."""
    bed = cloud.frontend.bed
    return cloud.datastore_create(ipfs_datastore_template(bed, "ipfs-overlay", IPFS_DEPLOY_MODE="OVERLAY"))


@pytest.fixture(scope="session")
def backup_ds(cloud: GenuineOne) -> Datastore:
    """OpenNebula's ``rsync`` backup datastore, kept on the frontend (reached over ssh by its name, as the
    hosts reach it)."""
    return cloud.datastore_create(rsync_backup_template("backups"))


@pytest.fixture(scope="module")
def web() -> Iterator[tuple[str, Path]]:
    """An http server on the frontend's loopback, serving a folder of /var/tmp that oneadmin owns (an http
    marketplace's PUBLIC_DIR, say)."""
    with served_folder() as served:
        yield served
