"""OpenNebula operations on a genuine oned, through OpenNebula's own CLI, for tests and the demo.

``GenuineOne`` answers to the same calls as the simulator's ``OneSim`` (``image_create``, ``vm_deploy``,
``vm_migrate``...) and returns the same documents (the XML ``one* show -x`` prints), so that a test reads
the same on both. Each command is OpenNebula's CLI, as an admin types it; what the bed reads and waits for it
reads from oned's XML-RPC API (``testbed.genuine.api``), one request per look instead of a Ruby process. Each
call returns when oned has finished what it started, and raises ``OneFailure`` where
OpenNebula reports an error: ``info`` is then the driver's one line as oned recorded it (the image's ERROR,
the VM's log: a VM's ERROR keeps only its start), or the CLI's own error for a refused request.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar
from xml.etree.ElementTree import Element

from one_ipfs.errors import HostError
from testbed.genuine.api import Missing, OnedApi
from testbed.genuine.frontend import Frontend
from testbed.one import template as tmpl
from testbed.one.documents import Datastore, DiskSpec, Image, VirtualMachine, parse_xml
from testbed.one.failure import OneFailure

SYSTEM_DS_ID = 0
WAIT = 300.0
POLL = 0.2


@dataclass(frozen=True)
class Volatile:
    """A volatile DISK (``TYPE=fs`` or ``swap``), created by the system datastore's TM."""

    size_mb: int
    type: str = "fs"
    format: str = "raw"


ImageRef = Image | int
DatastoreRef = Datastore | int
VmRef = VirtualMachine | int
DiskRef = ImageRef | DiskSpec | Volatile
T = TypeVar("T")

TRUNCATED = "... see more details in VM log"
_ID = re.compile(rb"ID:\s*(\d+)")
_ERROR = re.compile(r"^\w{3} \w{3} +\d+ [\d:]{8} \d{4} ?: (?:Error [^:]*: )?(.*)$", re.DOTALL)
_LOGGED_ERROR = re.compile(r"\[(?:TrM|VMM)\]\[E\]: (?:Error [^:]*: )?(.*)$", re.MULTILINE)
_STATE_CHANGE = re.compile(r"\[VM\]\[I\]: New (?:LCM )?state is (\w+)")
_FAILED_VM = ("FAILURE",)
_IMAGE_SETTLED = ("READY", "USED", "USED_PERS", "ERROR", "DISABLED")


def _oid(ref: Image | Datastore | VirtualMachine | int) -> int:
    return ref if isinstance(ref, int) else ref.id


@dataclass(frozen=True)
class MarketApp:
    """A marketplace app as ``onemarketapp show -x`` prints it."""

    id: int
    name: str
    state: str
    market_id: int
    source: str
    md5: str
    size_mb: int
    format: str

    STATES: ClassVar[tuple[str, ...]] = ("INIT", "READY", "LOCKED", "ERROR", "DISABLED")

    @classmethod
    def from_xml(cls, xml: str) -> MarketApp:
        return cls.from_element(parse_xml(xml))

    @classmethod
    def from_element(cls, app: Element) -> MarketApp:
        state = int(app.findtext("STATE", "-1"))
        return cls(
            id=int(app.findtext("ID", "-1")),
            name=app.findtext("NAME", ""),
            state=cls.STATES[state] if 0 <= state < len(cls.STATES) else str(state),
            market_id=int(app.findtext("MARKETPLACE_ID", "-1")),
            source=app.findtext("SOURCE", ""),
            md5=app.findtext("MD5", ""),
            size_mb=int(app.findtext("SIZE", "0") or 0),
            format=app.findtext("FORMAT", ""),
        )


@dataclass(frozen=True)
class _Settled:
    """A VM that left the transient states of an operation: where it is and the error it has now."""

    vm: VirtualMachine
    error: str


class GenuineOne:
    """A genuine oned on the bed (``frontend``), driven as an admin drives it: one CLI command per step."""

    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend

    @property
    def version(self) -> str:
        return self.frontend.version

    @property
    def api(self) -> OnedApi:
        """oned's XML-RPC API, through which the bed watches oned (every wait, ``vm()``, ``image()``...)."""
        return self.frontend.api

    # Reading --------------------------------------------------------------------------------------------

    def image(self, image: ImageRef) -> Image:
        return Image.from_xml(self.api.info("image", _oid(image)))

    def datastore(self, datastore: DatastoreRef) -> Datastore:
        return Datastore.from_xml(self.api.info("datastore", _oid(datastore)))

    def vm(self, vm: VmRef) -> VirtualMachine:
        return VirtualMachine.from_xml(self.api.info("vm", _oid(vm)))

    def vm_log(self, vm: VmRef) -> str:
        """The VM's log, where oned writes each driver's lines (``$ONE_LOCATION/var/vms/<id>/vm.log``)."""
        path = self.frontend.location / "var" / "vms" / str(_oid(vm)) / "vm.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # Datastores -----------------------------------------------------------------------------------------

    def datastore_create(self, template: Mapping[str, str], *, monitor: bool = True) -> Datastore:
        """``onedatastore create``; returns once oned has monitored it (images need its FREE_MB), or at
        once without ``monitor`` (a datastore whose MONITOR is meant to fail)."""
        oid = self._create(["onedatastore", "create"], "one.datastore.allocate", template)
        if not monitor:
            return self.datastore(oid)
        return self._wait(
            lambda: self.datastore(oid),
            lambda ds: ds.type != "IMAGE_DS" or ds.total_mb > 0,
            f"datastore {oid} to be monitored",
        )

    def datastore_update(self, datastore: DatastoreRef, attributes: Mapping[str, str]) -> Datastore:
        """``onedatastore update --append``: the attributes are merged into the template."""
        text = tmpl.render(list(attributes.items()))
        with self.frontend.template(text) as path:
            argv = ["onedatastore", "update", str(_oid(datastore)), path, "--append"]
            self._command(argv, "one.datastore.update")
        return self.datastore(datastore)

    # Images ---------------------------------------------------------------------------------------------

    def image_create(
        self,
        datastore: DatastoreRef,
        *,
        name: str,
        path: str | None = None,
        source: str | None = None,
        size_mb: int | None = None,
        type: str = "OS",
        persistent: bool = False,
        format: str = "",
        fs: str = "",
        template: Mapping[str, str] | None = None,
    ) -> Image:
        """``oneimage create``; returns the image READY, or raises with its ERROR."""
        values = {"NAME": name, "TYPE": type}
        optional = {"PATH": path, "SOURCE": source, "FORMAT": format, "FS": fs}
        values.update({k: v for k, v in optional.items() if v})
        if size_mb is not None:
            values["SIZE"] = str(size_mb)
        if persistent:
            values["PERSISTENT"] = "YES"
        values.update(template or {})
        oid = self._create(["oneimage", "create", "-d", str(_oid(datastore))], "one.image.allocate", values)
        return self._image_settled(oid, "CP" if path else "MKFS")

    def image_clone(self, image: ImageRef, name: str, datastore: DatastoreRef | None = None) -> Image:
        argv = ["oneimage", "clone", str(_oid(image)), name]
        if datastore is not None:
            argv += ["-d", str(_oid(datastore))]
        oid = self._allocated(argv, "one.image.clone")
        return self._image_settled(oid, "CLONE")

    def image_delete(self, image: ImageRef) -> None:
        """``oneimage delete``; returns once the image is gone, or raises with the ERROR of a failed RM."""
        oid = _oid(image)
        self._command(["oneimage", "delete", str(oid)], "one.image.delete")
        deadline = time.monotonic() + WAIT
        while True:
            try:
                current = self.image(oid)
            except Missing:
                return
            if current.state == "ERROR":
                raise OneFailure("RM", driver_line(current.error), oid)
            if time.monotonic() > deadline:
                raise HostError(f"test bed: image {oid} was not deleted in time")
            time.sleep(POLL)

    def image_persistent(self, image: ImageRef, persistent: bool) -> Image:
        verb = "persistent" if persistent else "nonpersistent"
        self._command(["oneimage", verb, str(_oid(image))], "one.image.persistent")
        return self.image(image)

    def image_enable(self, image: ImageRef) -> Image:
        """``oneimage enable``: an image oned put in ERROR (a VM deleted with its persistent disk) is
        usable again."""
        self._command(["oneimage", "enable", str(_oid(image))], "one.image.enable")
        return self.image(image)

    def image_update(self, image: ImageRef, attributes: Mapping[str, str], *, append: bool = False) -> Image:
        """``oneimage update`` (``--append``: the attributes are merged into the template)."""
        text = tmpl.render(list(attributes.items()))
        with self.frontend.template(text) as path:
            argv = ["oneimage", "update", str(_oid(image)), path, *(["--append"] if append else [])]
            self._command(argv, "one.image.update")
        return self.image(image)

    def environment(self) -> dict[str, str]:
        """What oneadmin's shell on the frontend has, for commands that call OpenNebula's CLI."""
        return self.frontend.environment()

    def onehost_sync(self) -> None:
        """``onehost sync --force``: every host gets the frontend's remotes tree again."""
        self.frontend.cli(["onehost", "sync", "--force"], timeout=120)

    def _image_settled(self, oid: int, action: str) -> Image:
        image = self._wait(lambda: self.image(oid), lambda i: i.state in _IMAGE_SETTLED, f"image {oid}")
        if image.state == "ERROR":
            raise OneFailure(action, driver_line(image.error), oid)
        return image

    # Marketplaces ---------------------------------------------------------------------------------------

    def market_create(self, template: Mapping[str, str]) -> int:
        return self._create(["onemarket", "create"], "one.market.allocate", template)

    def market_delete(self, market: int) -> None:
        self._command(["onemarket", "delete", str(market)], "one.market.delete")

    def market_app(self, app: int) -> MarketApp:
        return MarketApp.from_xml(self.api.info("marketapp", app))

    def market_apps(self, market: int) -> list[MarketApp]:
        """``onemarketapp list``: the apps oned holds for the marketplace (monitored or created)."""
        listed = parse_xml(str(self.api.call("one.marketapppool.info", -2, -1, -1)))
        apps = [MarketApp.from_element(app) for app in listed.findall("MARKETPLACEAPP")]
        return [app for app in apps if app.market_id == market]

    def market_app_create(self, market: int, image: ImageRef, name: str) -> MarketApp:
        """``onemarketapp create`` from an image; returns the app once its import ended (READY or ERROR)."""
        values = {"NAME": name, "ORIGIN_ID": str(_oid(image)), "TYPE": "IMAGE"}
        oid = self._create(["onemarketapp", "create", "-m", str(market)], "one.marketapp.allocate", values)
        return self._wait(lambda: self.market_app(oid), lambda app: app.state != "LOCKED", f"app {oid}")

    def market_app_export(self, app: int, datastore: DatastoreRef, name: str) -> Image:
        """``onemarketapp export`` of the app's image alone into the datastore; returns the image READY."""
        argv = ["onemarketapp", "export", str(app), name, "-d", str(_oid(datastore)), "--no"]
        return self._image_settled(self._allocated(argv, "onemarketapp export"), "CP")

    def market_app_delete(self, app: int) -> None:
        """``onemarketapp delete``; returns once the app is gone."""
        self._command(["onemarketapp", "delete", str(app)], "one.marketapp.delete")
        self._wait(lambda: self.api.exists("marketapp", app), lambda held: not held, f"app {app} to go")

    # Virtual machines -----------------------------------------------------------------------------------

    def vm_deploy(
        self,
        disks: Sequence[DiskRef],
        host: str,
        *,
        context: bool = True,
        name: str | None = None,
        system_ds: int = SYSTEM_DS_ID,
    ) -> VirtualMachine:
        """``onevm create --hold`` + ``onevm deploy``; returns the VM RUNNING, or raises with its ERROR
        (the VM is left where oned left it, e.g. PROLOG_FAILURE)."""
        (vm,) = self.vms_deploy([self.vm_hold(disks, context=context, name=name)], host, system_ds=system_ds)
        return vm

    def vms_deploy(
        self, oids: Sequence[int], host: str, *, system_ds: int = SYSTEM_DS_ID
    ) -> list[VirtualMachine]:
        """``onevm deploy`` of held VMs in one command (the CLI takes a list of IDs), so that their transfers
        start at once; returns them RUNNING, or raises with the first ERROR."""
        self._command(["onevm", "deploy", _id_list(oids), host, str(system_ds)], "one.vm.deploy")
        return [self._vm_operation(oid, "TRANSFER", ("RUNNING",), before="") for oid in oids]

    def vm_hold(self, disks: Sequence[DiskRef], *, context: bool = True, name: str | None = None) -> int:
        """``onevm create --hold``: the new VM's ID; it waits in HOLD for an ``onevm deploy``."""
        (oid,) = self.vms_hold(disks, 1, context=context, name=name)
        return oid

    def vms_hold(
        self, disks: Sequence[DiskRef], count: int, *, context: bool = True, name: str | None = None
    ) -> list[int]:
        """``onevm create --hold --multiple count``: the new VMs' IDs, in HOLD for an ``onevm deploy``."""
        # The scheduler runs as on any frontend; "ID = -1" matches no host, so it never places a VM of the
        # tests' behind their back (a resumed one, say): each goes where ``onevm deploy`` puts it.
        attributes: list[tmpl.Attribute] = [
            ("CPU", "0.1"),
            ("MEMORY", "64"),
            ("SCHED_REQUIREMENTS", "ID = -1"),
        ]
        if name:
            attributes.insert(0, ("NAME", name))
        attributes += [("DISK", _disk(spec)) for spec in disks]
        if context:
            attributes.append(("CONTEXT", {"NETWORK": "NO", "TOKEN": "NO"}))
        with self.frontend.template(tmpl.render(attributes)) as path:
            argv = ["onevm", "create", "--hold", "--multiple", str(count), path]
            done = self._command(argv, "one.vm.allocate")
        oids = [int(oid) for oid in _ID.findall(done.stdout)]
        if len(oids) != count:
            raise HostError(f"test bed: onevm create printed {len(oids)} IDs, not {count}: {done.stdout!r}")
        return oids

    def vm_terminate(self, vm: VmRef, *, hard: bool = False) -> None:
        """``onevm terminate``: the VM is DONE, or raises with its ERROR (e.g. EPILOG_FAILURE)."""
        oid = _oid(vm)
        self._run_vm(oid, ["onevm", "terminate", *(["--hard"] if hard else []), str(oid)], ("DONE",))

    def vms_terminate(self, vms: Sequence[VmRef]) -> None:
        """``onevm terminate`` of many VMs in one command: each is DONE, or raises with the first ERROR."""
        oids = [_oid(vm) for vm in vms]
        before = {oid: self.vm(oid).error for oid in oids}
        self._command(["onevm", "terminate", _id_list(oids)], "one.vm.terminate")
        for oid in oids:
            self._vm_operation(oid, "TRANSFER", ("DONE",), before[oid])

    def vm_poweroff(self, vm: VmRef) -> VirtualMachine:
        return self._run_vm(_oid(vm), ["onevm", "poweroff", str(_oid(vm))], ("POWEROFF",))

    def vm_stop(self, vm: VmRef) -> VirtualMachine:
        return self._run_vm(_oid(vm), ["onevm", "stop", str(_oid(vm))], ("STOPPED",))

    def vm_undeploy(self, vm: VmRef) -> VirtualMachine:
        return self._run_vm(_oid(vm), ["onevm", "undeploy", str(_oid(vm))], ("UNDEPLOYED",))

    def vm_suspend(self, vm: VmRef) -> VirtualMachine:
        return self._run_vm(_oid(vm), ["onevm", "suspend", str(_oid(vm))], ("SUSPENDED",))

    def vm_resume(self, vm: VmRef, host: str | None = None) -> VirtualMachine:
        """``onevm resume``; a stopped or undeployed VM goes PENDING and is deployed on ``host`` (its
        last host by default), as the scheduler would."""
        oid = _oid(vm)
        current = self.vm(oid)
        if current.state in ("POWEROFF", "SUSPENDED"):
            return self._run_vm(oid, ["onevm", "resume", str(oid)], ("RUNNING",))
        self._run_vm(oid, ["onevm", "resume", str(oid)], ("PENDING",))
        target = host or current.hostname
        return self._run_vm(oid, ["onevm", "deploy", str(oid), target], ("RUNNING",))

    def vm_migrate(self, vm: VmRef, host: str, *, live: bool = False) -> VirtualMachine:
        oid = _oid(vm)
        argv = ["onevm", "migrate", *(["--live"] if live else []), str(oid), host]
        return self._run_vm(oid, argv, ("RUNNING", "POWEROFF"), action="MIGRATE" if live else "TRANSFER")

    def vm_recover_retry(self, vm: VmRef) -> VirtualMachine:
        oid = _oid(vm)
        return self._run_vm(oid, ["onevm", "recover", "--retry", str(oid)], ("RUNNING", "POWEROFF", "DONE"))

    def vm_recover(self, vm: VmRef, outcome: Literal["success", "failure"], until: str) -> VirtualMachine:
        """``onevm recover --success`` or ``--failure``: oned takes the pending action as done, or as
        failed, and runs no driver; waits for the state (LCM state of an ACTIVE VM) ``until``."""
        oid = _oid(vm)
        self._command(["onevm", "recover", f"--{outcome}", str(oid)], "one.vm.recover")
        return self._wait(lambda: self.vm(oid), lambda now: _where(now) == until, f"VM {oid} to be {until}")

    def vm_recover_delete(self, vm: VmRef) -> None:
        """``onevm recover --delete``: oned deletes the disks and folder, saving nothing; the VM is DONE."""
        oid = _oid(vm)
        self._command(["onevm", "recover", "--delete", str(oid)], "one.vm.recover")
        self._wait(lambda: self.vm(oid), lambda current: current.state == "DONE", f"VM {oid} to be DONE")

    def disk_attach(self, vm: VmRef, disk: DiskRef) -> int:
        """``onevm disk-attach``; returns the new DISK_ID."""
        oid = _oid(vm)
        before = {d.id for d in self.vm(oid).disks}
        text = tmpl.render([("DISK", _disk(disk))])
        with self.frontend.template(text) as path:
            self._run_vm(oid, ["onevm", "disk-attach", str(oid), "--file", path], ("RUNNING", "POWEROFF"))
        added = {d.id for d in self.vm(oid).disks} - before
        if len(added) != 1:
            raise self._vm_failure("ATTACH", oid, self.vm(oid).error)
        return added.pop()

    def disk_detach(self, vm: VmRef, disk_id: int) -> None:
        oid = _oid(vm)
        self._run_vm(oid, ["onevm", "disk-detach", str(oid), str(disk_id)], ("RUNNING", "POWEROFF"))

    def disk_saveas(self, vm: VmRef, disk_id: int, name: str, *, snapshot_id: int = -1) -> Image:
        """``onevm disk-saveas``; returns the new image READY."""
        oid = _oid(vm)
        argv = ["onevm", "disk-saveas", str(oid), str(disk_id), name]
        if snapshot_id >= 0:
            argv += ["--snapshot", str(snapshot_id)]
        states = ("RUNNING", "POWEROFF", "STOPPED", "UNDEPLOYED", "SUSPENDED")
        before = self.vm(oid).error
        done = self._command(argv, "one.vm.disksaveas")
        match = _ID.search(done.stdout)
        if match is None:
            raise HostError(f"test bed: disk-saveas printed no image ID: {done.stdout!r}")
        settled = self._settle(oid, states, before)
        if settled.error:
            raise self._vm_failure("CPDS", oid, settled.error)
        return self._image_settled(int(match.group(1)), "CPDS")

    def disk_snapshot_create(self, vm: VmRef, disk_id: int, name: str = "") -> int:
        """``onevm disk-snapshot-create``; returns the new snapshot's ID."""
        oid = _oid(vm)
        before = set(_snapshot_ids(self.vm(oid), disk_id))
        self._run_vm(
            oid,
            ["onevm", "disk-snapshot-create", str(oid), str(disk_id), name or "snap"],
            ("RUNNING", "POWEROFF", "SUSPENDED"),
            action="SNAP_CREATE",
        )
        added = set(_snapshot_ids(self.vm(oid), disk_id)) - before
        if len(added) != 1:
            raise self._vm_failure("SNAP_CREATE", oid, self.vm(oid).error)
        return added.pop()

    def disk_snapshot_revert(self, vm: VmRef, disk_id: int, snapshot_id: int) -> None:
        oid = _oid(vm)
        self._run_vm(
            oid,
            ["onevm", "disk-snapshot-revert", str(oid), str(disk_id), str(snapshot_id)],
            ("RUNNING", "POWEROFF", "SUSPENDED"),
            action="SNAP_REVERT",
        )

    def disk_snapshot_delete(self, vm: VmRef, disk_id: int, snapshot_id: int) -> None:
        oid = _oid(vm)
        self._run_vm(
            oid,
            ["onevm", "disk-snapshot-delete", str(oid), str(disk_id), str(snapshot_id)],
            ("RUNNING", "POWEROFF", "SUSPENDED"),
            action="SNAP_DELETE",
        )

    def disk_resize(self, vm: VmRef, disk_id: int, size_mb: int) -> None:
        oid = _oid(vm)
        self._run_vm(
            oid,
            ["onevm", "disk-resize", str(oid), str(disk_id), f"{size_mb}M"],
            ("RUNNING", "POWEROFF", "UNDEPLOYED"),
            action="RESIZE",
        )

    # Backups --------------------------------------------------------------------------------------------

    def vm_backup(self, vm: VmRef, datastore: DatastoreRef, *, reset: bool = False) -> Image:
        """``onevm backup -d <backup datastore>`` of a RUNNING or POWEROFF VM (``--reset``: a new full backup
        even where the VM's BACKUP_CONFIG asks for increments); returns the VM's backup image once the VM
        is back in its state."""
        oid = _oid(vm)
        argv = ["onevm", "backup", str(oid), "-d", str(_oid(datastore)), *(["--reset"] if reset else [])]
        current = self._run_vm(oid, argv, ("RUNNING", "POWEROFF"), action="BACKUP")
        ids = parse_xml(current.xml).findall("BACKUPS/BACKUP_IDS/ID")
        if not ids:
            raise self._vm_failure("BACKUP", oid, current.error)
        return self.image(int(ids[-1].text or "-1"))

    def vm_backup_config(self, vm: VmRef, config: Mapping[str, str]) -> None:
        """``onevm updateconf`` of the VM's BACKUP_CONFIG (MODE, INCREMENT_MODE, KEEP_LAST...)."""
        text = tmpl.render([("BACKUP_CONFIG", dict(config))])
        with self.frontend.template(text) as path:
            self._command(["onevm", "updateconf", str(_oid(vm)), path, "--append"], "one.vm.updateconf")

    def vm_restore(
        self, vm: VmRef, backup: ImageRef, *, increment: int | None = None, disk_id: int | None = None
    ) -> VirtualMachine:
        """``onevm restore``: a POWEROFF VM's disks (or only ``disk_id``) become the backup's, as of
        ``increment`` (by default its last)."""
        oid = _oid(vm)
        argv = ["onevm", "restore", str(oid), str(_oid(backup))]
        argv += ["--increment", str(increment)] if increment is not None else []
        argv += ["--disk-id", str(disk_id)] if disk_id is not None else []
        return self._run_vm(oid, argv, ("POWEROFF",), action="RESTORE")

    def backup_restore(
        self, backup: ImageRef, datastore: DatastoreRef, name: str, *, increment: int | None = None
    ) -> list[Image]:
        """``oneimage restore``: the backup's disks (as of ``increment``, by default its last) become new
        images of ``datastore``, returned READY in disk order; the VM template it also makes is deleted."""
        argv = [
            "oneimage",
            "restore",
            str(_oid(backup)),
            "-d",
            str(_oid(datastore)),
            "--name",
            name,
            "--no-nic",
        ]
        argv += ["--increment", str(increment)] if increment is not None else []
        # oned answers once the backup datastore's driver has listed the backup and oned made the images:
        # longer than the CLI's 30 s on a busy machine.
        done = self.frontend.run(argv, env={"ONE_XMLRPC_TIMEOUT": str(int(WAIT))}, check=False)
        if done.returncode != 0:
            raise OneFailure("one.image.restore", _message(done.stderr or done.stdout))
        printed = done.stdout.decode()
        template = re.search(r"VM Template: (\d+)", printed)
        images = re.search(r"Images: ([\d ]+)", printed)
        if images is None:
            raise HostError(f"test bed: oneimage restore printed no images: {printed!r}")
        if template is not None:
            self._command(["onetemplate", "delete", template.group(1)], "one.template.delete")
        restored = [self._image_settled(int(oid), "CP") for oid in images.group(1).split()]
        return sorted(restored, key=lambda image: int(image.name.rpartition("-disk-")[2]))

    # Mechanics ------------------------------------------------------------------------------------------

    def _run_vm(
        self,
        oid: int,
        argv: Sequence[str],
        states: Sequence[str],
        *,
        action: str = "TRANSFER",
    ) -> VirtualMachine:
        """Run a VM command and wait for one of ``states``; a new ERROR on the VM fails the operation.
        oned answers the command before its life-cycle manager acts on it, and a VM that ends where it
        started (a migration, a hot-plug: RUNNING again) would look finished at once: so first wait for
        oned to log the VM's next state change, and for ``one.vm.info`` (read from oned's database,
        written just after the log) to show the state last logged."""
        before = self.vm(oid).error
        changes = len(self._logged_states(oid))
        self._command(argv, f"one.vm.{argv[1]}")
        self._wait(lambda: self._caught_up(oid, changes), bool, f"VM {oid} to start {argv[1]}")
        return self._vm_operation(oid, action, states, before)

    def _logged_states(self, oid: int) -> list[str]:
        """Each state the VM's log says oned moved it to (``New state is``, ``New LCM state is``)."""
        return _STATE_CHANGE.findall(self.vm_log(oid))

    def _caught_up(self, oid: int, changes: int) -> bool:
        """Whether oned has logged more than ``changes`` state changes and shows the last of them."""
        logged = self._logged_states(oid)
        vm = self.vm(oid)
        return len(logged) > changes and logged[-1] in (vm.state, vm.lcm_state)

    def _vm_operation(self, oid: int, action: str, states: Sequence[str], before: str) -> VirtualMachine:
        settled = self._settle(oid, states, before)
        if settled.error:
            raise self._vm_failure(action, oid, settled.error)
        return settled.vm

    def _vm_failure(self, action: str, oid: int, error: str) -> OneFailure:
        """The failure of a VM operation, with the driver's whole line: oned keeps only the first 100
        characters of a message in the VM's ERROR, but writes all of it to the VM log."""
        logged = _LOGGED_ERROR.findall(self.vm_log(oid))
        return OneFailure(action, logged[-1] if logged else driver_line(error), oid)

    def _settle(self, oid: int, states: Sequence[str], before: str) -> _Settled:
        """Wait until the VM is in one of ``states`` (LCM RUNNING for an ACTIVE one), or failed: a
        ``*_FAILURE`` state or, back where it started, an ERROR it did not have before."""

        def now() -> VirtualMachine:
            return self.vm(oid)

        def settled(vm: VirtualMachine) -> bool:
            here = _where(vm)
            return here in states or here.endswith(_FAILED_VM) or (vm.error != before and _idle(vm))

        vm = self._wait(now, settled, f"VM {oid} to reach {'/'.join(states)}")
        here = _where(vm)
        if here in states and vm.error == before:
            return _Settled(vm, "")
        return _Settled(vm, vm.error or here)

    def _create(
        self,
        argv: Sequence[str],
        api: str,
        values: Mapping[str, str],
        attributes: Sequence[tmpl.Attribute] = (),
    ) -> int:
        text = tmpl.render([*values.items(), *attributes])
        with self.frontend.template(text) as path:
            return self._allocated([*argv, path], api)

    def _allocated(self, argv: Sequence[str], api: str) -> int:
        done = self._command(argv, api)
        match = _ID.search(done.stdout)
        if match is None:
            raise HostError(f"test bed: {' '.join(argv[:2])} printed no ID: {done.stdout!r}")
        return int(match.group(1))

    def _command(self, argv: Sequence[str], api: str) -> subprocess.CompletedProcess[bytes]:
        done = self.frontend.run(argv, check=False)
        if done.returncode != 0:
            raise OneFailure(api, _message(done.stderr or done.stdout))
        return done

    def _wait(self, read: Callable[[], T], done: Callable[[T], bool], what: str) -> T:
        deadline = time.monotonic() + WAIT
        while True:
            value = read()
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise HostError(f"test bed: oned {self.version} did not finish waiting for {what} in time")
            time.sleep(POLL)


def driver_line(error: str) -> str:
    """The driver's message in an ERROR oned recorded: ``<time>: Error executing image transfer script:
    <message>`` (``<time> : Error copying image in the datastore: ...`` for an image). Of a VM's, only the
    start: oned cuts the message at 100 characters and says ``... see more details in VM log``."""
    match = _ERROR.match(error)
    return (match.group(1) if match else error).removesuffix(TRUNCATED)


def _where(vm: VirtualMachine) -> str:
    """Where a VM is: its LCM state while ACTIVE, its state otherwise."""
    return vm.lcm_state if vm.state == "ACTIVE" else vm.state


def _idle(vm: VirtualMachine) -> bool:
    """A VM oned is not working on: nothing left to wait for."""
    return vm.state != "ACTIVE" or vm.lcm_state in ("RUNNING", "UNKNOWN")


def _disk(spec: DiskRef) -> dict[str, str]:
    if isinstance(spec, Volatile):
        return {"TYPE": spec.type, "SIZE": str(spec.size_mb), "FORMAT": spec.format}
    disk = spec if isinstance(spec, DiskSpec) else DiskSpec(spec)
    values = {"IMAGE_ID": str(_oid(disk.image))}
    if disk.size_mb is not None:
        values["SIZE"] = str(disk.size_mb)
    if disk.target:
        values["TARGET"] = disk.target
    if disk.dev_prefix:
        values["DEV_PREFIX"] = disk.dev_prefix
    return values


def _snapshot_ids(vm: VirtualMachine, disk_id: int) -> list[int]:
    """The IDs of the disk's snapshots, as ``onevm show`` lists them under SNAPSHOTS."""
    root = parse_xml(vm.xml)
    return [
        int(snapshot.findtext("ID", "-1"))
        for snapshots in root.findall("SNAPSHOTS")
        if snapshots.findtext("DISK_ID") == str(disk_id)
        for snapshot in snapshots.findall("SNAPSHOT")
    ]


def _id_list(oids: Sequence[int]) -> str:
    """IDs as the CLI's VM commands take a list of them: ``3,4,7``."""
    return ",".join(map(str, oids))


def _message(output: bytes) -> str:
    """The CLI's error, one line: ``[one.vm.deploy] Error deploying...``."""
    return " ".join(output.decode(errors="replace").split())
