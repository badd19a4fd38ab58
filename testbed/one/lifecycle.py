"""oned's DispatchManager and LifeCycleManager: a VM created, deployed, booted, migrated, powered off and
terminated, its transfers sent through ``Transfers`` and its hypervisor's share done by ``Hypervisor``."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from testbed.one import template as tmpl
from testbed.one.conf import OnedConf
from testbed.one.disks import image_disks, system_mode
from testbed.one.documents import (
    VirtualMachine,
    history_element,
    integer,
    set_text,
    template_set,
    text,
    to_string,
    vector_element,
    vector_get,
    vm_document,
)
from testbed.one.failure import OneFailure
from testbed.one.hosts import Hypervisor
from testbed.one.images import ImageManager
from testbed.one.managers import DriverResult
from testbed.one.pools import ImageRef, Pools, VmRef, b64, oid, set_vm_state
from testbed.one.transfers import Transfers

SYSTEM_DS_ID = 0


class LifeCycle:
    """The VMs of one system datastore (0) on the hosts of ``pools``."""

    def __init__(
        self, pools: Pools, conf: OnedConf, images: ImageManager, transfers: Transfers, hypervisor: Hypervisor
    ) -> None:
        self.pools = pools
        self.conf = conf
        self.images = images
        self.transfers = transfers
        self.hypervisor = hypervisor

    def deploy(self, images: Sequence[ImageRef], host: str, *, context: bool = True) -> VirtualMachine:
        """``onevm create`` + ``onevm deploy``: acquire the images, prolog on ``host``, boot.

        Raises OneFailure("one.vm.deploy", ...) for a refused deploy (the VM stays PENDING, holding its
        images, as in OpenNebula) and OneFailure("TRANSFER", info, vm) for a failed prolog (the VM is left
        in PROLOG_FAILURE).
        """
        vmid = self.pools.store.next_id("vm")
        context_disk = vector_element("CONTEXT", {"DISK_ID": str(len(images))}) if context else None
        disks = image_disks(self.pools, self.conf, vmid, images, context_disk)
        attributes: list[tmpl.Attribute] = [("CPU", "1"), ("MEMORY", "128"), ("VMID", str(vmid))]
        root = vm_document(vmid, f"vm-{vmid}", attributes)
        template = root.find("TEMPLATE")
        assert template is not None
        template.extend([*disks, *([context_disk] if context_disk is not None else [])])
        template[:] = sorted(template, key=lambda child: child.tag)
        with self.pools.store.locked():
            self.pools.store.write("vm", vmid, root)
        self._prolog(vmid, host)
        return self.pools.vm(vmid)

    def _prolog(self, vmid: int, host: str) -> None:
        """``one.vm.deploy`` on the system datastore, then PROLOG and boot."""
        system_tm = text(self.pools.read("datastore", SYSTEM_DS_ID), "TM_MAD")
        with self.pools.store.edit("vm", vmid) as root:
            template = root.find("TEMPLATE")
            assert template is not None
            for disk in template.findall("DISK"):
                problem = system_mode(self.pools, disk, system_tm)
                if problem:
                    raise OneFailure("one.vm.deploy", problem, vmid)
            template_set(template, "TM_MAD_SYSTEM", system_tm)
            self._add_history(root, host, system_tm, SYSTEM_DS_ID)
            set_vm_state(root, "ACTIVE", "PROLOG")
        self.pools.host_vms(host, add=vmid)
        root = self.pools.read("vm", vmid)
        context = root.find("TEMPLATE/CONTEXT")
        context_file = self.transfers.write_context(vmid, context) if context is not None else None
        result = self.transfers.send(vmid, "prolog", self.transfers.lines.prolog(root, context_file))
        if not result.success:
            self.transfers.failed(vmid, "PROLOG_FAILURE", result)
        self.pools.set_vm_state(vmid, "ACTIVE", "BOOT")
        self._boot(vmid)

    def _add_history(self, root: ET.Element, host: str, tm_mad: str, ds_id: int) -> None:
        """A new HISTORY record: the VM is on ``host`` from now."""
        history = root.find("HISTORY_RECORDS")
        assert history is not None
        vmid = integer(root, "ID")
        seq = len(history.findall("HISTORY"))
        host_id = self.pools.host_id(host)
        now = int(time.time())
        history.append(
            history_element(vmid, seq, hostname=host, host_id=host_id, tm_mad=tm_mad, ds_id=ds_id, now=now)
        )

    def _boot(self, vmid: int, restore: bool = False) -> None:
        place = self.transfers.place(vmid)
        if restore:
            self.hypervisor.restore(place.host, place.folder)
        deployment = f"<domain><name>one-{vmid}</name></domain>\n".encode()
        self.hypervisor.boot(place.host, place.folder, place.seq, deployment)
        with self.pools.store.edit("vm", vmid) as current:
            set_text(current, "DEPLOY_ID", f"one-{vmid}")
            set_vm_state(current, "ACTIVE", "RUNNING")

    def terminate(self, vm: VmRef) -> None:
        """``onevm terminate``: shutdown, then EPILOG (MVDS saved disks, DELETE the rest and the folder)."""
        vmid = oid(vm)
        if self.pools.vm_state(vmid)[1] == "RUNNING":
            self.pools.set_vm_state(vmid, "ACTIVE", "SHUTDOWN")
        self.pools.set_vm_state(vmid, "ACTIVE", "EPILOG")
        result = self.transfers.send(vmid, "epilog", self.transfers.lines.epilog(self.pools.read("vm", vmid)))
        if not result.success:
            self.transfers.failed(vmid, "EPILOG_FAILURE", result)
        self._done(vmid)

    def recover_delete(self, vm: VmRef) -> DriverResult:
        """``onevm recover --delete``: DELETE every disk and the folder (nothing saved), VM DONE."""
        vmid = oid(vm)
        self.pools.set_vm_state(vmid, "ACTIVE", "CLEANUP_DELETE")
        result = self.transfers.send(
            vmid, "delete", self.transfers.lines.deletes(self.pools.read("vm", vmid))
        )
        self._done(vmid)
        return result

    def recover_retry(self, vm: VmRef) -> None:
        """``onevm recover --retry`` of a failed prolog or epilog: the same transfer file is run again,
        then the VM boots (prolog) or is DONE (epilog)."""
        vmid = oid(vm)
        failure = self.pools.vm_state(vmid)[1]
        op, running = {"PROLOG_FAILURE": ("prolog", "PROLOG"), "EPILOG_FAILURE": ("epilog", "EPILOG")}[
            failure
        ]
        self.pools.set_vm_state(vmid, "ACTIVE", running)
        result = self.transfers.send_again(vmid, op)
        if not result.success:
            self.transfers.failed(vmid, failure, result)
        if op == "epilog":
            self._done(vmid)
            return
        self.pools.set_vm_state(vmid, "ACTIVE", "BOOT")
        self._boot(vmid)

    def _done(self, vmid: int) -> None:
        """DONE: release every image (``release_images``) and leave the host."""
        root = self.pools.read("vm", vmid)
        for disk in root.findall("TEMPLATE/DISK"):
            self.images.release(vmid, int(vector_get(disk, "IMAGE_ID")))
        self.pools.host_vms(self.transfers.place(vmid).host, remove=vmid)
        with self.pools.store.edit("vm", vmid) as current:
            set_vm_state(current, "DONE", "LCM_INIT")
            set_text(current, "ETIME", int(time.time()))

    def poweroff(self, vm: VmRef) -> None:
        """``onevm poweroff``: the hypervisor stops the VM; no transfer."""
        vmid = oid(vm)
        self.pools.set_vm_state(vmid, "ACTIVE", "SHUTDOWN_POWEROFF")
        self.pools.set_vm_state(vmid, "POWEROFF")

    def migrate(self, vm: VmRef, host: str, *, live: bool = False) -> None:
        """``onevm migrate [--live]`` of a running VM: cold = save, MV lines, restore; live = the VMM
        driver's PREMIGRATE, hypervisor migration (FAILMIGRATE on failure), POSTMIGRATE."""
        vmid = oid(vm)
        place = self.transfers.place(vmid)
        if live:
            self._move(vmid, host)
            self.pools.set_vm_state(vmid, "ACTIVE", "MIGRATE")
            self._live_migrate(vmid, place.host, host)
            return
        self.pools.set_vm_state(vmid, "ACTIVE", "SAVE_MIGRATE")
        self.hypervisor.save(place.host, place.folder)
        self._move(vmid, host)
        self.pools.set_vm_state(vmid, "ACTIVE", "PROLOG_MIGRATE")
        result = self.transfers.send(vmid, "migrate", self.transfers.lines.moves(self.pools.read("vm", vmid)))
        if not result.success:
            self.transfers.failed(vmid, "PROLOG_MIGRATE_FAILURE", result)
        self.pools.set_vm_state(vmid, "ACTIVE", "BOOT_MIGRATE")
        self._boot(vmid, restore=True)

    def _move(self, vmid: int, host: str) -> None:
        """A new HISTORY record on ``host`` (same system datastore), moving the VM between hosts."""
        with self.pools.store.edit("vm", vmid) as root:
            last = root.findall("HISTORY_RECORDS/HISTORY")[-1]
            self._add_history(root, host, text(last, "TM_MAD"), integer(last, "DS_ID"))
        self.pools.host_vms(text(last, "HOSTNAME"), remove=vmid)
        self.pools.host_vms(host, add=vmid)

    def _live_migrate(self, vmid: int, source: str, target: str) -> None:
        root = self.pools.read("vm", vmid)
        folder = self.transfers.lines.place(root).folder
        command = self.transfers.lines.migrate(root)
        stdin = b64(to_string(root)).encode()
        result = self.transfers.step(vmid, f"PRE{command}", stdin, vmm_action="MIGRATE")
        if result.success:
            try:
                self.hypervisor.migrate(source, target, folder)
            except OSError as exc:
                self.transfers.step(vmid, f"FAIL{command}", stdin, vmm_action="MIGRATE")
                result = DriverResult("MIGRATE", vmid, False, f"hypervisor migration failed: {exc}")
        if not result.success:
            self._move(vmid, source)
            self.pools.set_vm_state(vmid, "ACTIVE", "RUNNING")
            raise OneFailure("MIGRATE", result.info, vmid)
        self.transfers.step(vmid, f"POST{command}", stdin, vmm_action="MIGRATE")
        self.pools.set_vm_state(vmid, "ACTIVE", "RUNNING")
