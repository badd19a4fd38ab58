"""Disk snapshots of running VMs under genuine oned: ``onevm disk-snapshot-create`` on a RUNNING VM.

oned's KVM driver takes a live snapshot only for a ``<VM_MAD>-<TM_MAD>`` pair in vmm_execrc's
LIVE_DISK_SNAPSHOTS (``one-ipfs install`` adds ``kvm-ipfs``) and then runs the TM's ``snap_create_live``,
which has the host's hypervisor copy the disk (``virsh blockcopy``, played by the stand-in). oned deletes
snapshots of a running VM with the plain ``snap_delete`` and reverts only a powered-off VM. Every disk and
snapshot is compared, by hash, with what the guest saw when it was taken.
"""

from __future__ import annotations

import json

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.one import Datastore, OneFailure
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.vms import disk_path, file_view, guest_write, image_from

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]

SIZE = 2 << 20


@pytest.fixture(scope="module")
def datastores(bed: Bed, one: GenuineOne, ipfs_ds: Datastore) -> dict[str, Datastore]:
    overlay = one.datastore_create(
        ipfs_datastore_template(bed, "ipfs-live-overlay", IPFS_DEPLOY_MODE="OVERLAY")
    )
    return {"COPY": ipfs_ds, "OVERLAY": overlay}


def snapshot_file(bed: Bed, one: GenuineOne, vm: int, snapshot: int) -> dict[str, object]:
    """``qemu-img info`` of a snapshot file on the VM's host."""
    current = one.vm(vm)
    path = disk_path(bed, one, current).parent / "disk.0.snap" / str(snapshot)
    info = bed.host_run(bed.host(current.hostname), ["qemu-img", "info", "-U", "--output=json", str(path)])
    return dict(json.loads(info.stdout))


@pytest.mark.parametrize("mode", ["COPY", "OVERLAY"])
def test_a_running_vm_snapshots_its_disk_live_deletes_live_and_reverts_once_powered_off(
    bed: Bed, one: GenuineOne, datastores: dict[str, Datastore], mode: str
) -> None:
    image = image_from(bed, one, datastores[mode], disk_bytes(SIZE, seed=41 + len(mode)), f"live-{mode}")
    vm = one.vm_deploy([image], "h2")
    driver = one.vm(vm).disk(0)["DRIVER"]
    guest_write(bed, one, vm, 0, b"A" * 65536)
    first_view = sha256(file_view(bed, one, vm, "disk.0", driver))

    first = one.disk_snapshot_create(vm, 0, "live-1")

    assert one.vm(vm).lcm_state == "RUNNING"
    assert sha256(file_view(bed, one, vm, f"disk.0.snap/{first}", driver)) == first_view
    info = snapshot_file(bed, one, vm.id, first)
    assert (info["format"], "backing-filename" in info) == (driver, False)  # what blockcopy leaves
    guest_write(bed, one, vm, 1 << 20, b"B" * 65536)
    second_view = sha256(file_view(bed, one, vm, "disk.0", driver))
    second = one.disk_snapshot_create(vm, 0, "live-2")
    assert sha256(file_view(bed, one, vm, f"disk.0.snap/{second}", driver)) == second_view

    one.disk_snapshot_delete(vm, 0, second)
    assert one.vm(vm).lcm_state == "RUNNING"
    assert not (disk_path(bed, one, vm).parent / "disk.0.snap" / str(second)).exists()
    with pytest.raises(OneFailure, match="wrong state"):
        one.disk_snapshot_revert(vm, 0, first)

    one.vm_poweroff(vm)
    one.disk_snapshot_revert(vm, 0, first)
    one.vm_resume(vm)

    assert sha256(file_view(bed, one, vm, "disk.0", driver)) == first_view
    one.vm_terminate(vm)


def test_a_live_snapshot_of_a_persistent_disk_survives_its_save_back_and_reverts_on_another_host(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_from(bed, one, ipfs_ds, disk_bytes(SIZE, seed=47), "live-persistent", persistent=True)
    vm = one.vm_deploy([image], "h1")
    driver = one.vm(vm).disk(0)["DRIVER"]
    guest_write(bed, one, vm, 0, b"S" * 65536)
    snapped = sha256(file_view(bed, one, vm, "disk.0", driver))
    snapshot = one.disk_snapshot_create(vm, 0, "kept")
    guest_write(bed, one, vm, 1 << 20, b"T" * 65536)
    saved = sha256(file_view(bed, one, vm, "disk.0", driver))

    one.vm_terminate(vm)
    again = one.vm_deploy([image], "h3")

    assert sha256(file_view(bed, one, again, "disk.0", driver)) == saved
    assert sha256(file_view(bed, one, again, f"disk.0.snap/{snapshot}", driver)) == snapped
    one.vm_poweroff(again)
    one.disk_snapshot_revert(again, 0, snapshot)
    assert sha256(file_view(bed, one, again, "disk.0", driver)) == snapped
    one.vm_terminate(again)
