"""``TM_MAD=ipfs`` on a system datastore, under genuine oned: a VM's folder (its image disk, a volatile disk,
the context ISO and a stopped VM's memory) goes into IPFS when the VM leaves its host, the frontend keeping
a manifest of CIDs, and comes back on any host peer to peer, each host fetching only the blocks it lacks;
a live migration leaves no folder behind; a persistent disk is saved from IPFS exactly once.
"""

from __future__ import annotations

import json

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.genuine.cloud import Volatile
from testbed.one import Datastore, VirtualMachine
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import bitswap_received, held_bytes, pins
from tests.support.vms import disk_path, image_from, write_into

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]

MANIFEST = "one-ipfs-folder.json"


def disk_digests(bed: Bed, one: GenuineOne, vm: VirtualMachine) -> dict[str, str]:
    """The image disk and the volatile one; the context ISO (disk.2) is there too, made anew by oned at
    every deploy and restore."""
    assert disk_path(bed, one, vm, 2).is_file()
    return {f"disk.{n}": sha256(disk_path(bed, one, vm, n).read_bytes()) for n in (0, 1)}


def test_an_ipfs_system_datastore_keeps_a_vm_folder_in_ipfs_and_resumes_it_on_any_host_byte_identical(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    system = one.datastore_create(
        {"NAME": "system-ipfs", "TYPE": "SYSTEM_DS", "TM_MAD": "ipfs", "IPFS_API": bed.frontend.api}
    )
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
