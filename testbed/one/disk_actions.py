"""``onevm disk-saveas`` and ``onevm disk-snapshot-create`` as oned runs them: a new image filled by a CPDS
line, a snapshot taken by a SNAP_CREATE line, the VM back in its state once the transfer ends."""

from __future__ import annotations

from testbed.one import template as tmpl
from testbed.one.datastores import Datastores
from testbed.one.documents import (
    Image,
    image_document,
    integer,
    set_text,
    vector_get,
    vector_remove,
    vector_set,
)
from testbed.one.failure import OneFailure
from testbed.one.images import ImageManager, error_text, fail, unlock
from testbed.one.pools import Pools, VmRef, find_disk, oid, set_vm_state
from testbed.one.snapshots import (
    activate_snapshot,
    create_snapshot,
    disk_snapshots,
    find_snapshot,
    update_disk,
)
from testbed.one.transfers import Transfers

HOTPLUG_SAVE_AS = (
    "HOTPLUG_SAVE_AS",
    "HOTPLUG_SAVE_AS_ACTIVE",
    "HOTPLUG_SAVE_AS_SNAPSHOT_ID",
    "HOTPLUG_SAVE_AS_SOURCE",
)
"""What a disk carries while it is saved: the new image's id, YES, the snapshot saved, the image's SOURCE."""


class DiskActions:
    """Actions on one disk of a VM, each one transfer."""

    def __init__(
        self, pools: Pools, datastores: Datastores, images: ImageManager, transfers: Transfers
    ) -> None:
        self.pools = pools
        self.datastores = datastores
        self.images = images
        self.transfers = transfers

    def saveas(self, vm: VmRef, disk_id: int, name: str, *, snapshot_id: int = -1) -> Image:
        """``onevm disk-saveas`` of a running VM: a new image (MKFS placeholder, FORMAT ``save_as``), then
        CPDS into it."""
        vmid = oid(vm)
        restore = self.pools.vm_state(vmid)
        root = self.pools.read("vm", vmid)
        disk = find_disk(root, disk_id)
        original = self.pools.read("image", int(vector_get(disk, "IMAGE_ID")))
        ds_id = int(vector_get(disk, "DATASTORE_ID"))
        ds_root = self.pools.read("datastore", ds_id)
        size = int(vector_get(disk, "SIZE") or 0)
        saved: list[tmpl.Attribute] = [
            ("SAVED_DISK_ID", str(disk_id)),
            ("SAVED_IMAGE_ID", vector_get(disk, "IMAGE_ID")),
            ("SAVED_SNAPSHOT_ID", str(snapshot_id)),
            ("SAVED_VM_ID", str(vmid)),
            ("SAVE_AS_HOT", "YES"),
        ]
        image_type = integer(original, "TYPE")
        number = self.images.allocate(
            ds_root,
            size,
            lambda number: image_document(
                number,
                name,
                datastore=ds_root,
                image_type=image_type,
                image_format="save_as",
                size_mb=size,
                attributes=saved,
            ),
        )
        self.pools.set_vm_state(vmid, "ACTIVE", "HOTPLUG_SAVEAS")
        try:
            source = self.images.register(number, ds_id).source
        except OneFailure:
            self.pools.set_vm_state(vmid, *restore)
            raise
        with self.pools.store.edit("vm", vmid) as current:
            node = find_disk(current, disk_id)
            for key, value in zip(HOTPLUG_SAVE_AS, (number, "YES", snapshot_id, source), strict=True):
                vector_set(node, key, value)
            image_format = vector_get(node, "FORMAT") or vector_get(node, "DRIVER")
        line = self.transfers.lines.saveas(
            root, disk, self.transfers.lines.place(root).host, source, snapshot_id
        )
        result = self.transfers.send(vmid, "disk_saveas", [line])
        with self.pools.store.edit("image", number) as new:
            set_text(new, "FORMAT", image_format)
            if result.success:
                unlock(new)
            else:
                fail(new, error_text("Error saving image", result.info))
        with self.pools.store.edit("vm", vmid) as current:
            node = find_disk(current, disk_id)
            for key in HOTPLUG_SAVE_AS:
                vector_remove(node, key)
            set_vm_state(current, *restore)
        self.datastores.monitor(ds_id)
        if not result.success:
            raise OneFailure("TRANSFER", result.info, vmid)
        return self.pools.image(number)

    def snapshot_create(self, vm: VmRef, disk_id: int, name: str = "") -> int:
        """``onevm disk-snapshot-create`` of a powered-off VM: SNAP_CREATE in a transfer file."""
        vmid = oid(vm)
        state = self.pools.vm_state(vmid)[0]
        root = self.pools.read("vm", vmid)
        disk = find_disk(root, disk_id)
        with self.pools.store.edit("vm", vmid) as current:
            snapshot_id = create_snapshot(
                disk_snapshots(current, disk_id), name, int(vector_get(disk, "SIZE") or 0)
            )
            set_vm_state(current, "ACTIVE", f"DISK_SNAPSHOT_{state}")
        line = self.transfers.lines.snapshot(root, disk, "SNAP_CREATE", snapshot_id)
        result = self.transfers.send(vmid, "disk_snapshot", [line])
        with self.pools.store.edit("vm", vmid) as current:
            snapshots = disk_snapshots(current, disk_id)
            if result.success:
                activate_snapshot(snapshots, snapshot_id)
            else:
                snapshots.remove(find_snapshot(snapshots, snapshot_id))
            update_disk(current, find_disk(current, disk_id), snapshots)
            set_vm_state(current, state, "LCM_INIT")
        if not result.success:
            raise OneFailure(result.action, result.info, vmid)
        return snapshot_id
