"""oned's TransferManager (``src/tm/TransferManager.cc``): the lines it writes into transfer files and TM
commands, and the files it writes and sends to the transfer driver manager.

``TransferLines`` reads a VM document and returns text exactly as oned composes it: ``ACTION[.sys] tm args``,
paths ``host:<DATASTORE_LOCATION>/<sys ds>/<vmid>/disk.<i>`` (hence ``/var/lib/one//datastores``), a
SOURCE as ``<frontend>:SOURCE`` unless it already holds a ``:`` (never for MVDS/CPDS), the ``.<sys>``
suffix from the disk's TM_MAD_SYSTEM, and the system datastore's TM for the VM folder.
Where oned has a quirk a driver can observe, it is kept and said so.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from testbed.one.documents import integer, text, vector_get
from testbed.one.failure import OneFailure
from testbed.one.hosts import HostFiles
from testbed.one.managers import DriverResult, TransferDriverManager
from testbed.one.pools import Pools, set_error, set_vm_state


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

    def prolog_disk(self, vm: ET.Element, disk: ET.Element) -> str:
        """``prolog_transfer_command``: CLONE/LN on the image TM."""
        place = self.place(vm)
        vmid = text(vm, "ID")
        target = f"{place.host}:{place.folder}/disk.{vector_get(disk, 'DISK_ID')}"
        names = ("TM_MAD", "DATASTORE_ID", "SOURCE", "CLONE")
        tm_mad, image_ds, source, clone = (vector_get(disk, name) for name in names)
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
            carried = suffix(disk) or carried
            disk_id = vector_get(disk, "DISK_ID")
            lines.append(
                f"MV{carried} {vector_get(disk, 'TM_MAD')} {source_host}:{source_dir}/disk.{disk_id} "
                f"{target_host}:{place.folder}/disk.{disk_id} {vmid} {vector_get(disk, 'DATASTORE_ID')}"
            )
        lines.append(
            f"MV {place.tm_mad} {source_host}:{source_dir} {target_host}:{place.folder} {vmid} {place.ds_id}"
        )
        return lines

    def epilog_disk(self, vm: ET.Element, disk: ET.Element, host: str) -> str:
        """``epilog_transfer_command``: MVDS for a disk to save (SOURCE verbatim), else DELETE."""
        folder = self.place(vm).folder
        vmid = text(vm, "ID")
        disk_id = vector_get(disk, "DISK_ID")
        tm_mad, ds_id = vector_get(disk, "TM_MAD"), vector_get(disk, "DATASTORE_ID")
        if vector_get(disk, "SAVE").upper() == "YES":
            source = vector_get(disk, "SOURCE")
            return f"MVDS{suffix(disk)} {tm_mad} {host}:{folder}/disk.{disk_id} {source} {vmid} {ds_id}"
        return f"DELETE{suffix(disk)} {tm_mad} {host}:{folder}/disk.{disk_id} {vmid} {ds_id}"

    def epilog(self, vm: ET.Element) -> list[str]:
        """``trigger_epilog``: every disk saved or deleted, then the folder deleted."""
        place = self.place(vm)
        host = place.host
        lines = [self.epilog_disk(vm, disk, host) for disk in vm.findall("TEMPLATE/DISK")]
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
            carried = suffix(disk) or carried
            disk_id = vector_get(disk, "DISK_ID")
            tm_mad, ds_id = vector_get(disk, "TM_MAD"), vector_get(disk, "DATASTORE_ID")
            lines.append(f"DELETE{carried} {tm_mad} {host}:{place.folder}/disk.{disk_id} {vmid} {ds_id}")
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


class Transfers:
    """oned's TransferManager: transfer files written into ``vms/<id>/`` and sent to the transfer driver
    manager, and the TM steps the VMM driver runs; every reply is kept in ``exchanges``."""

    def __init__(
        self,
        pools: Pools,
        files: HostFiles,
        lines: TransferLines,
        manager: TransferDriverManager,
        exchanges: list[DriverResult],
    ) -> None:
        self.pools = pools
        self.runner = files.runner
        self.files = files
        self.lines = lines
        self.manager = manager
        self.exchanges = exchanges

    def place(self, vmid: int, previous: bool = False) -> Place:
        return self.lines.place(self.pools.read("vm", vmid), previous)

    def write_context(self, vmid: int, context: ET.Element) -> str:
        """``generate_context``: vms/<id>/context.sh on the frontend; returns the drivers' view of it."""
        content = "# Context variables generated by OpenNebula\n" + "".join(
            f"{child.tag}='{child.text or ''}'\n" for child in context
        )
        self.files.write(self.runner.var_lib_one / "vms" / str(vmid) / "context.sh", content.encode())
        return f"{self.runner.driver_var_lib_one}/vms/{vmid}/context.sh"

    def send(self, vmid: int, op: str, lines: list[str]) -> DriverResult:
        """Write ``vms/<id>/transfer.<seq>.<op>`` and send TRANSFER to the transfer driver manager."""
        name = f"transfer.{self.place(vmid).seq}.{op}"
        self.files.write(self._local(vmid, name), "".join(f"{line}\n" for line in lines).encode())
        return self._transfer(vmid, name)

    def send_again(self, vmid: int, op: str) -> DriverResult:
        """The transfer file of ``op`` sent again as it is (``onevm recover --retry``)."""
        return self._transfer(vmid, f"transfer.{self.place(vmid).seq}.{op}")

    def _local(self, vmid: int, name: str) -> Path:
        return self.runner.var_lib_one / "vms" / str(vmid) / name

    def _transfer(self, vmid: int, name: str) -> DriverResult:
        driver_path = f"{self.runner.driver_var_lib_one}/vms/{vmid}/{name}"
        result = self.manager.transfer(vmid, self._local(vmid, name), driver_path)
        self.exchanges.append(result)
        return result

    def step(self, vmid: int, command: str, stdin: bytes, *, vmm_action: str) -> DriverResult:
        """A TM command run by the VMM driver as a step of ``vmm_action`` (MIGRATE...): a failing step
        fails that VMM action, not a TRANSFER."""
        step = self.manager.command(vmid, command.split(), stdin)
        self.exchanges.append(step)
        return DriverResult(**{**step.__dict__, "action": vmm_action, "steps": (step,)})

    def failed(self, vmid: int, lcm_state: str, result: DriverResult) -> NoReturn:
        """TransferManagerProtocol on a failed TRANSFER: the VM's ERROR, its failure state, the exception."""
        with self.pools.store.edit("vm", vmid) as root:
            if result.info and not result.info.startswith("-"):
                set_error(root, "USER_TEMPLATE", f"Error executing image transfer script: {result.info}")
            set_vm_state(root, "ACTIVE", lcm_state)
        raise OneFailure(result.action, result.info, vmid)

    def file(self, vmid: int, op: str, seq: int | None = None) -> str:
        """The text of a transfer file oned wrote for the VM (``op`` = prolog, epilog, migrate...)."""
        seq = self.place(vmid).seq if seq is None else seq
        return self._local(vmid, f"transfer.{seq}.{op}").read_text(encoding="utf-8")
