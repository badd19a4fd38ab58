"""Backups of VMs whose disks are on ``ipfs`` datastores, into OpenNebula's own ``rsync`` backup datastore.

oned hands a backup to the system datastore's TM (``prebackup``, ``prebackup_live`` on a running VM), which
converts each disk on its host into the backup folder (a running VM's through a qcow2 overlay the stand-in
hypervisor puts on the disk and commits back afterwards, as libvirt's ``snapshot-create-as`` and
``blockcommit`` do), and to the backup datastore's driver, which rsyncs the folder to its host. Nothing of
the ``ipfs`` drivers runs, but the disks must be what that TM reads: a file of the disk's announced format
at ``disk.<i>`` in the VM folder, an OVERLAY disk's base readable on its host, qcow2 where increments keep
their changed-block bitmaps in the disk. A backup comes back two ways: ``onevm restore`` writes it over a
powered-off VM's disks; ``oneimage restore`` makes new images of it in an ``ipfs`` datastore, whose ``cp``
reads it with OpenNebula's own downloader. Every restored disk is compared, by hash, with what the guest
saw when the backup was taken: on its host after ``onevm restore``, in a VM deployed from the images of a
running VM's full backup, and through the IPFS content of the other restored images.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.one import Datastore, Image, VirtualMachine
from tests.support.datastores import restic_backup_template
from tests.support.images import disk_bytes, sha256
from tests.support.vms import file_view, guest_write, image_from, parse_increments, stored_views

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]

SIZE = 2 << 20
COPY, OVERLAY, PERSISTENT = 0, 1, 2


@pytest.fixture(scope="module")
def restic_ds(one: GenuineOne) -> Datastore:
    """OpenNebula's ``restic`` backup datastore, its repository on h4 reached over sftp (as a backup server
    is: a host ``onehost sync`` gave the restic binary)."""
    return one.datastore_create(restic_backup_template("restic-backups"))


def seen(bed: Bed, one: GenuineOne, vm: VirtualMachine, disk_id: int) -> str:
    """The hash of what the guest reads through a disk (opened as the DRIVER oned gives it)."""
    current = one.vm(vm)
    return sha256(file_view(bed, one, current, f"disk.{disk_id}", current.disk(disk_id)["DRIVER"]))


def views(bed: Bed, one: GenuineOne, vm: VirtualMachine) -> list[str]:
    return [seen(bed, one, vm, disk.id) for disk in one.vm(vm).disks if disk.attributes.get("IMAGE_ID")]


def restored_views(bed: Bed, one: GenuineOne, images: list[Image], host: str) -> list[str]:
    """What a VM deployed from images restored into an ``ipfs`` datastore reads through its disks."""
    vm = one.vm_deploy(images, host)
    try:
        return views(bed, one, vm)
    finally:
        one.vm_terminate(vm)


@pytest.mark.current_version  # on 6.10.5 the incremental test's first backups are full ones
def test_full_backups_of_a_running_and_a_powered_off_vm_restore_byte_identical_in_place_and_as_ipfs_images(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, overlay_ds: Datastore, backup_ds: Datastore, tmp_path: Path
) -> None:
    images = [
        image_from(bed, one, ipfs_ds, disk_bytes(SIZE, seed=61), "bck-copy"),
        image_from(bed, one, overlay_ds, disk_bytes(SIZE, seed=62), "bck-overlay"),
        image_from(bed, one, ipfs_ds, disk_bytes(SIZE, seed=63), "bck-persistent", persistent=True),
    ]
    vm = one.vm_deploy(images, "h2")
    for disk_id in (COPY, OVERLAY, PERSISTENT):
        guest_write(bed, one, vm, 4096, b"live" * 4096, disk_id)
    running = views(bed, one, vm)

    live = one.vm_backup(vm, backup_ds)

    assert one.vm(vm).lcm_state == "RUNNING"
    assert views(bed, one, vm) == running
    for disk_id in (COPY, OVERLAY, PERSISTENT):
        guest_write(bed, one, vm, 1 << 20, b"off!" * 4096, disk_id)
    one.vm_poweroff(vm)
    off = views(bed, one, vm)
    powered_off = one.vm_backup(vm, backup_ds)
    assert one.vm(vm).state == "POWEROFF"

    assert restored_views(bed, one, one.backup_restore(live, ipfs_ds, "bck-live"), "h1") == running
    assert stored_views(bed, one.backup_restore(powered_off, ipfs_ds, "bck-off"), tmp_path) == off

    # In place, OpenNebula writes its backup file (qcow2) as the disk: only a disk oned opens as qcow2 (an
    # OVERLAY datastore's) can take it; a raw one comes back as new images (above).
    one.vm_restore(vm, live, disk_id=OVERLAY)
    assert seen(bed, one, vm, OVERLAY) == running[OVERLAY]
    one.vm_resume(vm)
    one.vm_terminate(vm)


def test_incremental_backups_of_overlay_disks_powered_off_and_running_restore_each_increment_byte_identical(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, overlay_ds: Datastore, backup_ds: Datastore, tmp_path: Path
) -> None:
    overlay = image_from(bed, one, overlay_ds, disk_bytes(SIZE, seed=71), "inc-overlay")
    persistent = image_from(
        bed, one, overlay_ds, disk_bytes(SIZE, seed=72), "inc-persistent", persistent=True
    )
    vm = one.vm_deploy([overlay, persistent], "h1")
    one.vm_poweroff(vm)
    one.vm_backup_config(vm, {"MODE": "INCREMENT"})
    off, backup = increments(bed, one, vm, backup_ds)

    assert stored_views(bed, one.backup_restore(backup, ipfs_ds, "inc-off"), tmp_path) == off[1]
    one.vm_restore(vm, backup, increment=0)
    assert views(bed, one, vm) == off[0]
    one.vm_terminate(vm)

    # The persistent disk, saved back as restored, runs again; the stand-in serves a running VM's
    # increment one disk at a time, as qemu-nbd does.
    again = one.vm_deploy([persistent], "h2")
    assert views(bed, one, again) == [off[0][1]]
    one.vm_backup_config(again, {"MODE": "INCREMENT"})
    running, live = increments(bed, one, again, backup_ds)

    assert one.vm(again).lcm_state == "RUNNING"
    assert stored_views(bed, one.backup_restore(live, ipfs_ds, "inc-live"), tmp_path) == running[1]
    one.vm_terminate(again)


def increments(
    bed: Bed, one: GenuineOne, vm: VirtualMachine, backup_ds: Datastore
) -> tuple[list[list[str]], Image]:
    """A full backup and an increment of ``vm``, the guest writing into every disk before each; returns
    what the guest saw at each and the backup image."""
    seen_at = []
    for increment in range(2):
        for disk in one.vm(vm).disks:
            if disk.attributes.get("IMAGE_ID"):
                guest_write(bed, one, vm, increment << 20, bytes([increment + 1]) * 65536, disk.id)
        seen_at.append(views(bed, one, vm))
        backup = one.vm_backup(vm, backup_ds)
    assert parse_increments(one.image(backup)) == [0, 1]
    return seen_at, backup


@pytest.mark.current_version  # what differs by version is restic's driver; ours is cp's restic:// read
def test_a_restic_backup_of_ipfs_disks_restores_as_ipfs_images_byte_identical(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, overlay_ds: Datastore, restic_ds: Datastore, tmp_path: Path
) -> None:
    images = [
        image_from(bed, one, ipfs_ds, disk_bytes(SIZE, seed=91), "restic-copy"),
        image_from(bed, one, overlay_ds, disk_bytes(SIZE, seed=92), "restic-overlay"),
    ]
    vm = one.vm_deploy(images, "h1")
    for disk_id in (COPY, OVERLAY):
        guest_write(bed, one, vm, 4096, b"restic!!" * 2048, disk_id)
    one.vm_poweroff(vm)
    off = views(bed, one, vm)

    backup = one.vm_backup(vm, restic_ds)

    assert one.image(backup).source
    assert stored_views(bed, one.backup_restore(backup, ipfs_ds, "restic-restored"), tmp_path) == off
    one.vm_terminate(vm)
