"""The transfer driver where genuine oned cannot be made to go on cue, through the simulator on the bed: a
live migration that fails half-way (the hypervisor's link going down), a ``DATASTORE_LOCATION`` other
than the bed's oned.conf has, and the ssh connection deploys share (under genuine oned no control socket
outlives its transfer action; see docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from testbed.bed import Bed
from testbed.one import Datastore, OneFailure, OneSim
from testbed.one.transfers import TransferLines
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes
from tests.support.vms import disk_path, guest_view, image_from

pytestmark = pytest.mark.bed


def cache_refs(bed: Bed, host: str) -> dict[str, dict[str, dict[str, object]]]:
    """Every use of the host's cache entries: CID -> disk path -> {vm, expected}."""
    entries = bed.host(host).var_lib_one / "datastores" / ".one-ipfs-cache" / "entries"
    return {path.stem: json.loads(path.read_text())["refs"] for path in entries.glob("*.json")}


def test_a_failed_live_migration_leaves_nothing_on_the_target_once_it_acts_again(
    bed: Bed, one: OneSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = one.datastore_create(
        ipfs_datastore_template(bed, "ipfs-failmigrate", IPFS_DEPLOY_MODE="OVERLAY", IPFS_HOST_CACHE_MB="0")
    )
    image = image_from(bed, one, ds, disk_bytes(2 << 20, seed=38), "failmigrate")
    cid = one.image(image).template["IPFS_CID"]
    vm = one.vm_deploy([image], "h1")

    def unplugged(source_host: str, target_host: str, folder: str) -> None:
        raise OSError("the migration link went down")

    monkeypatch.setattr(one.hypervisor, "migrate", unplugged)
    with pytest.raises(OneFailure):
        one.vm_migrate(vm, "h2", live=True)
    monkeypatch.undo()
    assert one.vm(vm).hostname == "h1"
    assert any(ref["vm"] == vm.id for refs in cache_refs(bed, "h2").values() for ref in refs.values())

    other = one.vm_deploy([image_from(bed, one, ds, disk_bytes(1 << 20, seed=39), "after-failmigrate")], "h2")

    assert not any(ref["vm"] == vm.id for refs in cache_refs(bed, "h2").values() for ref in refs.values())
    assert cid not in {pin.cid for pin in bed.host("h2").node.client().pin_ls()}
    assert guest_view(bed, one, vm)[: 2 << 20] == disk_bytes(2 << 20, seed=38)
    for each in (vm, other):
        one.vm_terminate(each)


def test_a_datastore_location_outside_var_lib_one_deploys_snapshots_and_deletes(
    bed: Bed, one: OneSim, ipfs_ds: Datastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = Path(tempfile.mkdtemp(prefix="one-ipfs-ds-location-", dir="/var/tmp"))
    owner = bed.host("h4").var_lib_one.stat()
    os.chown(elsewhere, owner.st_uid, owner.st_gid)
    monkeypatch.setattr(one.transfers, "lines", TransferLines(one.hostname, f"{elsewhere}//datastores"))
    data = disk_bytes(1 << 20, seed=40)
    image = image_from(bed, one, ipfs_ds, data, "location-elsewhere", persistent=True)
    try:
        vm = one.vm_deploy([image], "h4")
        folder = elsewhere / "datastores" / "0" / str(vm.id)
        assert (folder / "disk.0").read_bytes() == data
        one.vm_poweroff(vm)
        one.disk_snapshot_create(vm, 0, "elsewhere")
        assert (folder / "disk.0.snap" / "0").read_bytes() == data
        one.vm_terminate(vm)
        assert not folder.exists()
    finally:
        shutil.rmtree(elsewhere)


def test_deploys_to_one_host_share_an_ssh_connection_whose_socket_is_private_and_not_named_after_the_host(
    bed: Bed, one: OneSim, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(1 << 20, seed=34)
    image = image_from(bed, one, ipfs_ds, data, "shared-ssh")
    vms = [one.vm_deploy([image], "h2") for _ in range(2)]

    folder = bed.frontend_var_lib_one / ".one-ipfs" / "ssh"
    sockets = [entry for entry in folder.iterdir() if entry.is_socket()]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sockets
    assert all(re.fullmatch(r"[0-9a-f]{40}", entry.name) for entry in sockets)
    for vm in vms:
        assert disk_path(bed, one, vm).read_bytes() == data
        one.vm_terminate(vm)
