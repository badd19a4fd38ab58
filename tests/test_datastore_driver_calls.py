"""The datastore driver's actions called the way oned's driver manager calls them, through the simulator on
the bed, where no OpenNebula command makes genuine oned send them: the pre-6.8 calling convention. (EXPORT,
read back by OpenNebula's own downloader, runs under genuine oned: tests/opennebula/test_marketplace.py.)
"""

from __future__ import annotations

import base64

import pytest

from testbed.bed import Bed
from testbed.one import Datastore, OneSim
from tests.support.images import disk_bytes
from tests.support.vms import add_on

pytestmark = pytest.mark.bed


def test_the_pre_6_8_calling_convention_is_understood(bed: Bed, one: OneSim, ipfs_ds: Datastore) -> None:
    data = disk_bytes(3 << 20, seed=5)
    cid = add_on(bed, "h1", data)
    payload = base64.b64encode(
        (
            f"<DS_DRIVER_ACTION_DATA><IMAGE><PATH>/ipfs/{cid}</PATH></IMAGE>"
            f"{one.datastore(ipfs_ds).xml}</DS_DRIVER_ACTION_DATA>"
        ).encode()
    ).decode()

    result = one.datastore_manager.request("STAT", 42, payload, convention="pre-6.8")

    assert (result.success, result.info) == (True, "3")
