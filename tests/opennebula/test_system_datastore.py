"""``TM_MAD=ipfs`` on a system datastore, under genuine oned: a VM's folder (its image disk, a volatile disk,
the context ISO and a stopped VM's memory) goes into IPFS when the VM leaves its host, the frontend keeping
a manifest of CIDs, and comes back on any host peer to peer, each host fetching only the blocks it lacks;
a live migration leaves no folder behind; a persistent disk is saved from IPFS exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.genuine.cloud import Volatile
from testbed.one import Datastore, OneFailure, VirtualMachine
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import bitswap_received, held_bytes, pins
from tests.support.vms import disk_path, image_from, stored_views, write_into

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]

MANIFEST = "one-ipfs-folder.json"


def disk_digests(bed: Bed, one: GenuineOne, vm: VirtualMachine) -> dict[str, str]:
    """The image disk and the volatile one; the context ISO (disk.2) is there too, made anew by oned at
    every deploy and restore."""
    assert disk_path(bed, one, vm, 2).is_file()
    return {f"disk.{n}": sha256(disk_path(bed, one, vm, n).read_bytes()) for n in (0, 1)}


@pytest.fixture(scope="module")
def system(bed: Bed, one: GenuineOne) -> Datastore:
    """A system datastore whose TM is ``ipfs``, created as an admin creates one."""
    return one.datastore_create(
        {"NAME": "system-ipfs", "TYPE": "SYSTEM_DS", "TM_MAD": "ipfs", "IPFS_API": bed.frontend.api}
    )


def test_an_ipfs_system_datastore_keeps_a_vm_folder_in_ipfs_and_resumes_it_on_any_host_byte_identical(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, system: Datastore
) -> None:
    data = disk_bytes(8 << 20, seed=61)
    image = image_from(bed, one, ipfs_ds, data, "system-ipfs", persistent=True)  # its blocks are on h3's node
    first = one.image(image).template["IPFS_CID"]
    vm = one.vm_deploy([image, Volatile(16)], "h1", system_ds=system.id)
    write_into(disk_path(bed, one, vm, 0), 4096, b"written on h1" * 100)
    write_into(disk_path(bed, one, vm, 1), 5 << 20, b"volatile" * 512)
    before = disk_digests(bed, one, vm)

    one.vm_undeploy(vm)
    parked = bed.frontend_var_lib_one / "datastores" / str(system.id) / str(vm.id)
    assert [path.name for path in parked.iterdir()] == [MANIFEST]
    files = json.loads((parked / MANIFEST).read_text())["files"]
    assert sorted(file["name"] for file in files) == sorted(before)
    held = {name for _, name in pins(bed.frontend)}
    assert {f"one-ipfs-vm{vm.id}-{file['name']}" for file in files} <= held
    assert not (bed.host("h1").var_lib_one / "datastores" / str(system.id) / str(vm.id)).exists()

    received = bitswap_received(bed.host("h3").node)
    one.vm_resume(vm, "h3")
    fetched_by_h3 = bitswap_received(bed.host("h3").node) - received
    assert disk_digests(bed, one, vm) == before
    assert not parked.exists()
    assert fetched_by_h3 < len(data)  # the image's unchanged blocks were there already
    print(f"resume on h3 fetched {fetched_by_h3} bytes of {sum(file['size'] for file in files)}")

    one.vm_migrate(vm, "h4", live=True)  # the hypervisor copies the disks; h3's folder goes after
    assert disk_digests(bed, one, vm) == before

    one.vm_stop(vm)
    stopped = {file["name"]: file["cid"] for file in json.loads((parked / MANIFEST).read_text())["files"]}
    assert sorted(stopped) == sorted([*before, "checkpoint"])
    one.vm_terminate(vm)  # from STOPPED: the persistent disk is saved from IPFS, the folder released
    assert one.image(image).template["IPFS_VERSIONS"] == f"1:{first} 2:{stopped['disk.0']}"  # saved once
    assert sha256(held_bytes(bed.frontend, stopped["disk.0"])) == before["disk.0"]
    assert not parked.exists()
    assert not [name for _, name in pins(bed.frontend) if name.startswith(f"one-ipfs-vm{vm.id}-")]
    for host in bed.hosts:
        assert not (host.var_lib_one / "datastores" / str(system.id) / str(vm.id)).exists()


def test_on_an_ipfs_system_datastore_a_vm_migrates_cold_grows_and_hot_plugs_volatile_disks_and_backs_up(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, system: Datastore, backup_ds: Datastore, tmp_path: Path
) -> None:
    image = image_from(bed, one, ipfs_ds, disk_bytes(4 << 20, seed=62), "system-ipfs-cold")
    vm = one.vm_deploy([image, Volatile(8)], "h1", system_ds=system.id)
    write_into(disk_path(bed, one, vm, 0), 4096, b"image disk" * 100)
    write_into(disk_path(bed, one, vm, 1), 1 << 20, b"volatile" * 512)
    one.vm_poweroff(vm)
    before = disk_digests(bed, one, vm)

    one.vm_migrate(vm, "h2")  # powered off: the folder moves host to host through IPFS
    assert not (bed.host("h1").var_lib_one / "datastores" / str(system.id) / str(vm.id)).exists()
    one.disk_resize(vm, 1, 16)
    with pytest.raises(OneFailure, match="Cannot make snapshots"):
        one.disk_snapshot_create(vm, 1)  # oned's own refusal, whatever the TM
    one.vm_resume(vm)  # the hypervisor's deploy has oned make the context ISO anew

    moved = disk_digests(bed, one, vm)
    volatile = disk_path(bed, one, vm, 1).read_bytes()
    assert moved["disk.0"] == before["disk.0"]
    assert len(volatile) == 16 << 20 and sha256(volatile[: 8 << 20]) == before["disk.1"]
    plugged = one.disk_attach(vm, Volatile(4))
    assert disk_path(bed, one, vm, plugged).stat().st_size == 4 << 20
    one.disk_detach(vm, plugged)
    assert not disk_path(bed, one, vm, plugged).exists()
    one.vm_poweroff(vm)
    seen = sha256(disk_path(bed, one, vm, 0).read_bytes())

    backup = one.vm_backup(vm, backup_ds)  # prebackup and postbackup are OpenNebula's ssh TM's

    assert stored_views(bed, one.backup_restore(backup, ipfs_ds, "system-ipfs-restored"), tmp_path) == [seen]
    one.vm_terminate(vm)
    for host in bed.hosts:
        assert not (host.var_lib_one / "datastores" / str(system.id) / str(vm.id)).exists()
