"""Disk snapshots of running VMs under genuine oned: ``onevm disk-snapshot-create`` on a RUNNING VM.

oned's KVM driver takes a live snapshot only for a ``<VM_MAD>-<TM_MAD>`` pair in vmm_execrc's
LIVE_DISK_SNAPSHOTS (``one-ipfs install`` adds ``kvm-ipfs``) and then runs the TM's ``snap_create_live``,
which has the host's hypervisor copy the disk (``virsh blockcopy``, played by the stand-in). oned deletes
snapshots of a running VM with the plain ``snap_delete`` and reverts only a powered-off VM; a persistent
disk's snapshots go into its image at save-back and come with the disk to its next VM. One VM carries a
COPY, an OVERLAY and a persistent disk through it all; every disk and snapshot is compared, by hash, with
what the guest saw when it was taken.
"""

from __future__ import annotations

import json

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.one import Datastore, OneFailure, VirtualMachine
from tests.support.images import disk_bytes, sha256
from tests.support.vms import disk_path, file_view, guest_write, image_from

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]

SIZE = 2 << 20
COPY, OVERLAY, PERSISTENT = 0, 1, 2


def seen(bed: Bed, one: GenuineOne, vm: VirtualMachine, disk_id: int, snapshot: int | None = None) -> str:
    """The hash of what the guest reads through a disk, or through one of its snapshots (``vm`` as
    ``one.vm`` last read it: the disk's DRIVER is the format the guest reads it with)."""
    name = f"disk.{disk_id}" + ("" if snapshot is None else f".snap/{snapshot}")
    return sha256(file_view(bed, one, vm, name, vm.disk(disk_id)["DRIVER"]))


def snapshot_info(
    bed: Bed, one: GenuineOne, vm: VirtualMachine, disk_id: int, snapshot: int
) -> dict[str, str]:
    """``qemu-img info`` of a snapshot file on the VM's host."""
    path = disk_path(bed, one, vm, disk_id).parent / f"disk.{disk_id}.snap" / str(snapshot)
    info = bed.host_run(bed.host(one.vm(vm).hostname), ["qemu-img", "info", "-U", "--output=json", str(path)])
    return {key: str(value) for key, value in json.loads(info.stdout).items()}


def test_a_running_vm_snapshots_its_disks_live_and_a_persistent_disks_snapshot_survives_its_save_back(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, overlay_ds: Datastore
) -> None:
    images = [
        image_from(bed, one, ipfs_ds, disk_bytes(SIZE, seed=41), "live-copy"),
        image_from(bed, one, overlay_ds, disk_bytes(SIZE, seed=42), "live-overlay"),
        image_from(bed, one, ipfs_ds, disk_bytes(SIZE, seed=43), "live-persistent", persistent=True),
    ]
    vm = one.vm_deploy(images, "h2")
    for disk_id in (COPY, OVERLAY, PERSISTENT):
        guest_write(bed, one, vm, 0, b"A" * 65536, disk_id)
    taken = {disk_id: seen(bed, one, vm, disk_id) for disk_id in (COPY, OVERLAY, PERSISTENT)}

    snapshots = {disk_id: one.disk_snapshot_create(vm, disk_id, "live") for disk_id in taken}

    assert one.vm(vm).lcm_state == "RUNNING"
    for disk_id, snapshot in snapshots.items():
        assert seen(bed, one, vm, disk_id, snapshot) == taken[disk_id]
        info = snapshot_info(bed, one, vm, disk_id, snapshot)
        assert (info["format"], "backing-filename" in info) == (vm.disk(disk_id)["DRIVER"], False)
    for disk_id in (COPY, OVERLAY, PERSISTENT):
        guest_write(bed, one, vm, 1 << 20, b"B" * 65536, disk_id)
    later = one.disk_snapshot_create(vm, OVERLAY, "later")
    one.disk_snapshot_delete(vm, OVERLAY, later)
    assert one.vm(vm).lcm_state == "RUNNING"
    assert not (disk_path(bed, one, vm, OVERLAY).parent / f"disk.{OVERLAY}.snap" / str(later)).exists()
    with pytest.raises(OneFailure, match="wrong state"):
        one.disk_snapshot_revert(vm, COPY, snapshots[COPY])

    one.vm_poweroff(vm)
    for disk_id in (COPY, OVERLAY):
        one.disk_snapshot_revert(vm, disk_id, snapshots[disk_id])
        assert seen(bed, one, vm, disk_id) == taken[disk_id]
    saved = seen(bed, one, vm, PERSISTENT)
    one.vm_resume(vm)
    one.vm_terminate(vm)

    again = one.vm_deploy([images[PERSISTENT]], "h3")
    assert seen(bed, one, again, 0) == saved
    assert seen(bed, one, again, 0, snapshots[PERSISTENT]) == taken[PERSISTENT]
    one.vm_poweroff(again)
    one.disk_snapshot_revert(again, 0, snapshots[PERSISTENT])
    assert seen(bed, one, again, 0) == taken[PERSISTENT]
    one.vm_terminate(again)
