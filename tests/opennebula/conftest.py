"""The tests of this folder run under genuine oned, once per tested OpenNebula version (``[7.4.0]``).

They read as the simulator's tests do (``bed``, ``one``, ``ipfs_ds``), but here ``one`` is OpenNebula itself
(``testbed.genuine.GenuineOne``), driven through its CLI, on the bed of its version.
"""

from __future__ import annotations

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.one import Datastore
from tests.support.datastores import ipfs_datastore_template


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
