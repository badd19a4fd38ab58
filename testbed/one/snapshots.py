"""Disk snapshot bookkeeping as oned keeps it (``src/vm/Snapshots.cc``): the SNAPSHOTS of a VM's disk.

Drivers see it in the VM's document; only its shape and the ids matter to them, so this keeps the tree
(PARENT, CHILDREN, ACTIVE, NEXT_SNAPSHOT) and sizes, not quota accounting.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from testbed.one.documents import (
    integer,
    set_text,
    snapshots_document,
    text,
    vector_element,
    vector_remove,
    vector_set,
)


def disk_snapshots(root: ET.Element, disk_id: int) -> ET.Element:
    """The VM's SNAPSHOTS of one disk, created empty when the disk has none yet."""
    for node in root.findall("SNAPSHOTS"):
        if text(node, "DISK_ID") == str(disk_id):
            return node
    node = snapshots_document(disk_id, "NO")
    root.append(node)
    return node


def find_snapshot(snapshots: ET.Element, snapshot_id: int) -> ET.Element:
    """The SNAPSHOT with ``snapshot_id``."""
    for snapshot in snapshots.findall("SNAPSHOT"):
        if text(snapshot, "ID") == str(snapshot_id):
            return snapshot
    raise KeyError(f"disk {text(snapshots, 'DISK_ID')} has no snapshot {snapshot_id}")


def create_snapshot(snapshots: ET.Element, name: str, size_mb: int) -> int:
    """``Snapshots::create_snapshot``: a child of the active snapshot (or a root)."""
    snapshot_id = integer(snapshots, "NEXT_SNAPSHOT")
    active = next((s for s in snapshots.findall("SNAPSHOT") if text(s, "ACTIVE") == "YES"), None)
    parent = integer(active, "ID") if active is not None else -1
    values = {
        "DATE": str(int(time.time())),
        "ID": str(snapshot_id),
        "NAME": name or f"snapshot-{snapshot_id}",
        "PARENT": str(parent),
        "SIZE": str(size_mb),
    }
    snapshots.append(vector_element("SNAPSHOT", values))
    if active is not None:
        children = [c for c in text(active, "CHILDREN").split(",") if c]
        vector_set(active, "CHILDREN", ",".join([*children, str(snapshot_id)]))
    set_text(snapshots, "NEXT_SNAPSHOT", snapshot_id + 1)
    return snapshot_id


def activate_snapshot(snapshots: ET.Element, snapshot_id: int) -> None:
    """``Snapshots::active_snapshot``: after a create or a revert, this one is the disk's state."""
    for snapshot in snapshots.findall("SNAPSHOT"):
        if text(snapshot, "ID") == str(snapshot_id):
            vector_set(snapshot, "ACTIVE", "YES")
        else:
            vector_remove(snapshot, "ACTIVE")


def update_disk(root: ET.Element, disk: ET.Element, snapshots: ET.Element) -> None:
    """The DISK_SNAPSHOT_* attributes of ``disk`` after a change; SNAPSHOTS goes when it is empty."""
    entries = snapshots.findall("SNAPSHOT")
    active = next((s for s in entries if text(s, "ACTIVE") == "YES"), None)
    vector_set(disk, "DISK_SNAPSHOT_TOTAL_SIZE", sum(integer(s, "SIZE") for s in entries))
    if active is not None:
        vector_set(disk, "DISK_SNAPSHOT_ACTIVE", "YES")
        vector_set(disk, "DISK_SNAPSHOT_ID", text(active, "ID"))
    if not entries:
        root.remove(snapshots)
        vector_remove(disk, "DISK_SNAPSHOT_ACTIVE")
        vector_remove(disk, "DISK_SNAPSHOT_ID")
