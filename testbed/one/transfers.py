"""The lines oned writes into transfer files and TM commands (``src/tm/TransferManager.cc``).

Each function reads a VM document and returns text exactly as oned composes it: ``ACTION[.sys] tm args``,
paths ``host:<DATASTORE_LOCATION>/<sys ds>/<vmid>/disk.<i>`` (hence ``/var/lib/one//datastores``), a
SOURCE as ``<frontend>:SOURCE`` unless it already holds a ``:`` (never for MVDS/CPDS), the ``.<sys>``
suffix from the disk's TM_MAD_SYSTEM, and the system datastore's TM for the VM folder.
Where oned has a quirk a driver can observe, it is kept and said so.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from testbed.one.documents import integer, text, vector_get
from testbed.one.failure import OneFailure


def suffix(disk: ET.Element) -> str:
    system = vector_get(disk, "TM_MAD_SYSTEM")
    return f".{system}" if system else ""


@dataclass(frozen=True)
class Place:
    """Where a VM is (or was) according to one HISTORY record."""

    host: str
    folder: str
    seq: int
    tm_mad: str
    ds_id: str


@dataclass(frozen=True)
class TransferLines:
    """oned's transfer-line writer for a frontend called ``hostname``."""

    hostname: str
    datastore_location: str

    def place(self, vm: ET.Element, previous: bool = False) -> Place:
        """The current (or previous) history record: host, system folder, seq, system TM and DS."""
        records = vm.findall("HISTORY_RECORDS/HISTORY")
        record = records[-2] if previous else records[-1]
        ds_id = text(record, "DS_ID")
        folder = f"{self.datastore_location}/{ds_id}/{text(vm, 'ID')}"
        return Place(text(record, "HOSTNAME"), folder, integer(record, "SEQ"), text(record, "TM_MAD"), ds_id)

    def source(self, source: str) -> str:
        return source if ":" in source else f"{self.hostname}:{source}"

    def disk_tm(self, vm: ET.Element, disk: ET.Element) -> tuple[str, str] | None:
        """(TM_MAD, DS id) of a disk's own line."""
        tm_mad, ds_id = vector_get(disk, "TM_MAD"), vector_get(disk, "DATASTORE_ID")
        return (tm_mad, ds_id) if tm_mad and ds_id else None

    def prolog_disk(self, vm: ET.Element, disk: ET.Element) -> str:
        """``prolog_transfer_command``: CLONE/LN on the image TM."""
        place = self.place(vm)
        vmid = text(vm, "ID")
        disk_id = vector_get(disk, "DISK_ID")
        target = f"{place.host}:{place.folder}/disk.{disk_id}"
        names = ("TM_MAD", "DATASTORE_ID", "SOURCE", "CLONE")
        tm_mad, image_ds, source, clone = (vector_get(disk, name) for name in names)
        if not (tm_mad and image_ds and source and clone):
            raise OneFailure(
                "TRANSFER",
                "missing DISK mandatory attributes (SOURCE, TM_MAD, CLONE, DATASTORE_ID) "
                f"for VM {vmid}, DISK {disk_id}",
                int(vmid),
            )
        action = "CLONE" if clone.upper() == "YES" else "LN"
        return f"{action}{suffix(disk)} {tm_mad} {self.source(source)} {target} {vmid} {image_ds}"

    def prolog(self, vm: ET.Element, context_file: str | None) -> list[str]:
        """Every disk, then CONTEXT (system TM) onto the context disk when the VM has one."""
        lines = [self.prolog_disk(vm, disk) for disk in vm.findall("TEMPLATE/DISK")]
        context = vm.find("TEMPLATE/CONTEXT")
        if context is not None and context_file is not None:
            place = self.place(vm)
            target = f"{place.host}:{place.folder}/disk.{vector_get(context, 'DISK_ID')}"
            lines.append(f"CONTEXT {place.tm_mad} {context_file} {target} {text(vm, 'ID')} {place.ds_id}")
        return lines

    def moves(self, vm: ET.Element) -> list[str]:
        """MV lines of a cold migration (previous host -> host): each disk on its TM, then the folder on the
        system TM.

        As in TransferManager.cc the suffix variable is not reset between disks: once a disk with
        TM_MAD_SYSTEM is seen, later disk lines carry the suffix too.
        """
        place = self.place(vm)
        vmid = text(vm, "ID")
        previous = self.place(vm, previous=True)
        source_host, source_dir, target_host = previous.host, previous.folder, place.host
        lines = []
        carried = ""
        for disk in vm.findall("TEMPLATE/DISK"):
            tm = self.disk_tm(vm, disk)
            if tm is None:
                continue
            carried = suffix(disk) or carried
            disk_id = vector_get(disk, "DISK_ID")
            lines.append(
                f"MV{carried} {tm[0]} {source_host}:{source_dir}/disk.{disk_id} "
                f"{target_host}:{place.folder}/disk.{disk_id} {vmid} {tm[1]}"
            )
        lines.append(
            f"MV {place.tm_mad} {source_host}:{source_dir} {target_host}:{place.folder} {vmid} {place.ds_id}"
        )
        return lines

    def epilog_disk(self, vm: ET.Element, disk: ET.Element, host: str) -> str | None:
        """``epilog_transfer_command``: MVDS for a disk to save (SOURCE verbatim), else DELETE."""
        folder = self.place(vm).folder
        vmid = text(vm, "ID")
        disk_id = vector_get(disk, "DISK_ID")
        if vector_get(disk, "SAVE").upper() == "YES":
            tm_mad, ds_id, source = (vector_get(disk, n) for n in ("TM_MAD", "DATASTORE_ID", "SOURCE"))
            if not (tm_mad and ds_id and source):
                return None
            return f"MVDS{suffix(disk)} {tm_mad} {host}:{folder}/disk.{disk_id} {source} {vmid} {ds_id}"
        tm = self.disk_tm(vm, disk)
        if tm is None:
            return None
        return f"DELETE{suffix(disk)} {tm[0]} {host}:{folder}/disk.{disk_id} {vmid} {tm[1]}"

    def epilog(self, vm: ET.Element) -> list[str]:
        """``trigger_epilog``: every disk saved or deleted, then the folder deleted."""
        place = self.place(vm)
        host = place.host
        lines = [line for disk in vm.findall("TEMPLATE/DISK") if (line := self.epilog_disk(vm, disk, host))]
        lines.append(f"DELETE {place.tm_mad} {host}:{place.folder} {text(vm, 'ID')} {place.ds_id}")
        return lines

    def deletes(self, vm: ET.Element) -> list[str]:
        """``epilog_delete_commands``: DELETE every disk and the folder, nothing saved (suffix carried)."""
        place = self.place(vm)
        host = place.host
        vmid = text(vm, "ID")
        lines = []
        carried = ""
        for disk in vm.findall("TEMPLATE/DISK"):
            tm = self.disk_tm(vm, disk)
            if tm is None:
                continue
            carried = suffix(disk) or carried
            disk_id = vector_get(disk, "DISK_ID")
            lines.append(f"DELETE{carried} {tm[0]} {host}:{place.folder}/disk.{disk_id} {vmid} {tm[1]}")
        lines.append(f"DELETE {place.tm_mad} {host}:{place.folder} {vmid} {place.ds_id}")
        return lines

    def saveas(self, vm: ET.Element, disk: ET.Element, host: str, source: str, snapshot_id: int) -> str:
        """``trigger_saveas_hot``: CPDS from the disk into the new image's SOURCE (verbatim)."""
        folder = self.place(vm).folder
        disk_id = vector_get(disk, "DISK_ID")
        return (
            f"CPDS{suffix(disk)} {vector_get(disk, 'TM_MAD')} {host}:{folder}/disk.{disk_id} "
            f"{source} {snapshot_id} {text(vm, 'ID')} {vector_get(disk, 'DATASTORE_ID')}"
        )

    def snapshot(self, vm: ET.Element, disk: ET.Element, verb: str, snapshot_id: int) -> str:
        """``snapshot_transfer_command``: SNAP_CREATE."""
        place = self.place(vm)
        disk_id = vector_get(disk, "DISK_ID")
        return (
            f"{verb}{suffix(disk)} {vector_get(disk, 'TM_MAD')} {place.host}:{place.folder}/disk.{disk_id} "
            f"{snapshot_id} {text(vm, 'ID')} {vector_get(disk, 'DATASTORE_ID')}"
        )

    def migrate(self, vm: ET.Element) -> str:
        """``migrate_transfer_command``: the MIGRATE TM_COMMAND the VMM driver prefixes PRE/POST/FAIL."""
        place = self.place(vm)
        previous = self.place(vm, previous=True)
        hosts = f"{previous.host} {place.host}"
        return f"MIGRATE {place.tm_mad} {hosts} {place.folder} {text(vm, 'ID')} {place.ds_id}"
