"""oned, as far as datastore and transfer drivers can tell: images, datastores, VMs and their life cycles.

``OneSim`` plays the ImageManager (``ImageManagerActions.cc``, ``ImageManagerProtocol.cc``), the
TransferManager (``TransferManager.cc``: transfer files line for line), the LifeCycleManager's state
changes and the VMM driver's TM steps (``one_vmm_exec.rb``), and calls the real driver scripts through
the driver managers of ``testbed.one.managers``. Calls are synchronous (oned's are not, but a driver
cannot tell): each operation returns when oned would have processed the driver's reply, and raises
``OneFailure`` with the FAILURE info where OpenNebula would report an error, leaving the objects in the
state OpenNebula leaves them (image ERROR, VM PROLOG_FAILURE...).
"""

from __future__ import annotations

import base64
import secrets
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from one_ipfs.opennebula.install import install_remotes
from testbed.one import template as tmpl
from testbed.one.api import ApiServer, state_methods
from testbed.one.conf import OnedConf
from testbed.one.documents import (
    DATASTORE_TYPES,
    DISK_TYPES,
    IMAGE_STATES,
    IMAGE_TYPES,
    LCM_STATES,
    VM_STATES,
    Datastore,
    Host,
    Image,
    VirtualMachine,
    collection_ids,
    datastore_document,
    element,
    history_element,
    host_document,
    image_document,
    integer,
    log_time,
    parse_xml,
    set_collection,
    set_text,
    template_attributes,
    template_get,
    template_set,
    text,
    to_string,
    vector_element,
    vector_get,
    vector_remove,
    vector_set,
    vm_document,
)
from testbed.one.failure import OneFailure
from testbed.one.hosts import HostFiles, Hypervisor, SimulatedSystemTM
from testbed.one.managers import DatastoreDriverManager, DriverResult, TransferDriverManager
from testbed.one.runner import Execution, Runner
from testbed.one.snapshots import (
    activate_snapshot,
    create_snapshot,
    disk_snapshots,
    find_snapshot,
    set_image_snapshots,
    update_disk,
)
from testbed.one.state import StateStore
from testbed.one.transfers import TransferLines

SYSTEM_DS_ID = 0
FIRST_DATASTORE_ID = 100
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


ImageRef = Image | int
DatastoreRef = Datastore | int
VmRef = VirtualMachine | int


@dataclass(frozen=True)
class DiskSpec:
    """A DISK of a VM template that uses an image, with the options a user may add."""

    image: ImageRef
    size_mb: int | None = None
    target: str | None = None
    dev_prefix: str | None = None


DiskRef = ImageRef | DiskSpec


def _oid(ref: Image | Datastore | VirtualMachine | Host | int) -> int:
    return ref if isinstance(ref, int) else ref.id


def _b64(document: str) -> str:
    return base64.b64encode(document.encode()).decode()


class OneSim:
    """A frontend's oned with one system datastore (0, ``ssh``) and one host object per runner host.

    ``state`` is the folder of the object documents, which the simulator's XML-RPC API serves the drivers
    (``testbed.one.api``) until ``close()``; it must be reachable by the driver user. ``extra_env`` is
    added to the environment of every driver script.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        state: Path,
        conf: OnedConf | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.runner = runner
        self.conf = conf or OnedConf()
        self.hostname = self.conf.hostname or runner.frontend_hostname
        self.lines = TransferLines(self.hostname, self.conf.datastore_location)
        self.store = StateStore(state, owner=runner.owner)
        self.extra_env = dict(extra_env or {})
        self.exchanges: list[DriverResult] = []
        self.api = ApiServer(state_methods(self.store), f"oneadmin:{secrets.token_hex(16)}")
        self.auth = state / "one_auth"
        self.store.write_file(self.auth, f"{self.api.session}\n".encode(), mode=0o600)
        self.files = HostFiles(runner)
        self.hypervisor = Hypervisor(self.files)
        self.remotes = runner.var_lib_one / "remotes"
        self.driver_remotes = f"{runner.driver_var_lib_one}/remotes"
        for folder in (self.remotes / "datastore", self.remotes / "tm", runner.var_lib_one / "vms"):
            self.files.make_dirs(folder)
        self._write_config()
        self.system_tm = SimulatedSystemTM(self.files, self.driver_remotes, self._run_script)
        self.datastore_manager = DatastoreDriverManager(
            runner,
            self.remotes,
            self.driver_remotes,
            self.environment,
            ds_mads=self.conf.datastore_mads,
            system_tms=self.conf.system_ds_tms,
            timeout=self.conf.datastore_timeout,
        )
        self.transfer_manager = TransferDriverManager(
            runner,
            self.remotes,
            self.driver_remotes,
            self.environment,
            simulated={name: self.system_tm for name in SimulatedSystemTM.NAMES},
            tm_mads=self.conf.tm_mads,
        )
        with self.store.locked():
            if self.store.read("datastore", SYSTEM_DS_ID) is None:
                self._allocate_datastore(
                    SYSTEM_DS_ID, {"NAME": "system", "TYPE": "SYSTEM_DS", "TM_MAD": "ssh"}
                )
            for index, host in enumerate(runner.hosts):
                if self.store.read("host", index) is None:
                    self.store.write("host", index, host_document(index, host, []))

    # ----------------------------------------------------------------------------------------------
    # Environment of the drivers, remotes, hosts
    # ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving the API: drivers can reach this oned no more."""
        self.api.close()

    def environment(self) -> dict[str, str]:
        """oned's environment as its driver managers pass it on, with the API's endpoint and session where
        drivers look first (``ONE_XMLRPC``, ``ONE_AUTH``): ``~/.one/one_auth``, where genuine oned's
        oneadmin keeps it, is the bed's genuine frontend's, or the user's own."""
        env = self.runner.base_env()
        env.setdefault("PATH", DEFAULT_PATH)
        env["ONE_XMLRPC"] = self.api.url
        env["ONE_AUTH"] = str(self.auth)
        env.update(self.extra_env)
        return env

    def _run_script(self, argv: list[str], stdin: bytes) -> Execution:
        return self.runner.run(argv, env=self.environment(), stdin=stdin, timeout=None)

    def _write_config(self) -> None:
        """``/var/lib/one/config``, which oned writes at start and the Ruby driver helpers read."""
        lines = [
            f"DATASTORE_LOCATION={self.conf.datastore_location}",
            f"DEFAULT_DEVICE_PREFIX={self.conf.default_device_prefix}",
            f"DEFAULT_CDROM_DEVICE_PREFIX={self.conf.default_cdrom_device_prefix}",
            f"HOSTNAME={self.hostname}",
            f"SCRIPTS_REMOTE_DIR={self.conf.scripts_remote_dir}",
        ]
        self.files.write(self.runner.var_lib_one / "config", ("\n".join(lines) + "\n").encode())

    def install_drivers(self, python: str | None = None) -> None:
        """``one-ipfs install`` into the frontend's remotes tree (launchers, defaults, host bundle)."""
        install_remotes(self.remotes, python or sys.executable)
        self.files.give(self.remotes)

    def onehost_sync(self) -> None:
        """``onehost sync``: ``rsync -LRaz --delete`` of the remotes tree into every host's /var/tmp/one."""
        for host in self.runner.hosts:
            target = self.runner.host_path(host, self.conf.scripts_remote_dir)
            for entry in list(target.iterdir()) if target.exists() else []:
                self.files.remove(entry)
            self.files.make_dirs(target)
            shutil.copytree(self.remotes, target, symlinks=False, dirs_exist_ok=True)
            self.files.give(target)

    # ----------------------------------------------------------------------------------------------
    # Reading objects
    # ----------------------------------------------------------------------------------------------

    def _read(self, kind: str, oid: int) -> ET.Element:
        root = self.store.read(kind, oid)
        if root is None:
            noun = {"vm": "virtual machine"}.get(kind, kind)
            raise OneFailure(f"one.{kind}.info", f"Error getting {noun} [{oid}].", oid)
        return root

    def image(self, image: ImageRef) -> Image:
        return Image.from_xml(to_string(self._read("image", _oid(image))))

    def datastore(self, datastore: DatastoreRef) -> Datastore:
        return Datastore.from_xml(to_string(self._read("datastore", _oid(datastore))))

    def vm(self, vm: VmRef) -> VirtualMachine:
        return VirtualMachine.from_xml(to_string(self._read("vm", _oid(vm))))

    def host(self, name: str) -> Host:
        return Host.from_xml(to_string(self._read("host", self._host_id(name))))

    def images(self) -> list[Image]:
        return [self.image(oid) for oid in self.store.ids("image")]

    def results(self, action: str | None = None) -> list[DriverResult]:
        """Every driver manager exchange so far (optionally of one action), oldest first."""
        return [r for r in self.exchanges if action is None or r.action == action]

    def _host_id(self, name: str) -> int:
        for oid in self.store.ids("host"):
            root = self.store.read("host", oid)
            if root is not None and text(root, "NAME") == name:
                return oid
        raise OneFailure("one.host.info", f"Host named {name} not found.")

    # ----------------------------------------------------------------------------------------------
    # Datastores
    # ----------------------------------------------------------------------------------------------

    def datastore_create(self, template: Mapping[str, str], *, monitor: bool = True) -> Datastore:
        """``onedatastore create``: validated against DS_MAD_CONF/TM_MAD_CONF as ``Datastore::insert``.

        oned monitors datastores every MONITORING_INTERVAL_DATASTORE; ``monitor`` runs the first
        cycle now so that the capacity check of the next image sees real numbers.
        """
        oid = self.store.next_id("datastore", FIRST_DATASTORE_ID)
        with self.store.locked():
            self._allocate_datastore(oid, dict(template))
        if monitor:
            self.datastore_monitor(oid)
        return self.datastore(oid)

    def _allocate_datastore(self, oid: int, template: dict[str, str]) -> None:
        attributes: list[tmpl.Attribute] = [
            (k.upper(), v) for k, v in template.items() if k.upper() != "NAME"
        ]
        values = {k.upper(): v for k, v in template.items()}
        api = "one.datastore.allocate"
        name = values.get("NAME", "")
        if not name:
            raise OneFailure(api, "NAME cannot be empty")
        type_name = values.get("TYPE", "IMAGE_DS").upper() or "IMAGE_DS"
        ds_type = DATASTORE_TYPES.index(type_name) if type_name in DATASTORE_TYPES else 0
        ds_mad = values.get("DS_MAD", "")
        if ds_type == 1:
            if ds_mad:
                raise OneFailure(api, "SYSTEM datastores cannot have DS_MAD defined.")
            ds_mad = "-"
        else:
            if not ds_mad:
                raise OneFailure(api, "No DS_MAD in template.")
            conf = self.conf.ds_mad_conf.get(ds_mad)
            if conf is None:
                raise OneFailure(api, f'DS_MAD named "{ds_mad}" is not defined in oned.conf')
            for required in filter(
                None, (a.strip().upper() for a in conf.get("REQUIRED_ATTRS", "").split(","))
            ):
                if not values.get(required):
                    raise OneFailure(
                        api, f'Datastore template is missing the "{required}" attribute or it\'s empty.'
                    )
        tm_mad = values.get("TM_MAD", "")
        attributes = self._tm_mad_attributes(api, tm_mad, ds_type, attributes)
        disk_type = "FILE"
        for attr_name, value in attributes:
            if attr_name == "DISK_TYPE" and isinstance(value, str) and value:
                disk_type = value.upper()
        attributes = [(n, v) for n, v in attributes if n != "DISK_TYPE"]
        attributes.append(("DISK_TYPE", disk_type))
        names = {n for n, _ in attributes}
        if "SAFE_DIRS" not in names and "RESTRICTED_DIRS" not in names:
            attributes += [("SAFE_DIRS", "/var/tmp"), ("RESTRICTED_DIRS", "/")]
        location = self.conf.datastore_location
        base_path = f"{location}{oid}" if location.endswith("/") else f"{location}/{oid}"
        root = datastore_document(
            oid,
            name,
            ds_mad=ds_mad,
            tm_mad=tm_mad,
            base_path=base_path,
            ds_type=ds_type,
            disk_type=DISK_TYPES.get(disk_type, 0),
            attributes=attributes,
        )
        self.store.write("datastore", oid, root)

    def _tm_mad_attributes(
        self, api: str, tm_mad: str, ds_type: int, attributes: list[tmpl.Attribute]
    ) -> list[tmpl.Attribute]:
        """``Datastore::set_tm_mad``: what TM_MAD_CONF copies into the datastore template."""
        if not tm_mad:
            raise OneFailure(api, "No TM_MAD in template.")
        conf = self.conf.tm_mad_conf.get(tm_mad)
        if conf is None:
            raise OneFailure(api, f'TM_MAD named "{tm_mad}" is not defined in oned.conf')
        wrong = (
            f"Attribute shared, ln_target or clone_target in TM_MAD_CONF for {tm_mad} "
            "is missing or has wrong value in oned.conf"
        )
        values: list[tmpl.Attribute] = list(attributes)

        def replace(name: str, value: str) -> None:
            nonlocal values
            values = [(n, v) for n, v in values if n != name] + [(name, value)]

        def target(name: str) -> str:
            value = conf.get(name, "").upper()
            if value not in ("NONE", "SELF", "SYSTEM"):
                raise OneFailure(api, wrong)
            return value

        if ds_type == 1:
            if "SHARED" not in conf:
                raise OneFailure(api, wrong)
            replace("SHARED", "YES" if conf["SHARED"].upper() == "YES" else "NO")
            replace("DS_MIGRATE", "NO" if conf.get("DS_MIGRATE", "YES").upper() == "NO" else "YES")
            values = [(n, v) for n, v in values if n not in ("LN_TARGET", "CLONE_TARGET")]
        elif ds_type != 3:
            modes = conf.get("TM_MAD_SYSTEM", "")
            if modes:
                replace("TM_MAD_SYSTEM", modes)
                for mode in filter(None, (m.strip().upper() for m in modes.split(","))):
                    replace(f"LN_TARGET_{mode}", target(f"LN_TARGET_{mode}"))
                    replace(f"CLONE_TARGET_{mode}", target(f"CLONE_TARGET_{mode}"))
                    if not conf.get(f"DISK_TYPE_{mode}"):
                        raise OneFailure(api, wrong)
                    replace(f"DISK_TYPE_{mode}", conf[f"DISK_TYPE_{mode}"])
            replace("LN_TARGET", target("LN_TARGET"))
            replace("CLONE_TARGET", target("CLONE_TARGET"))
            for name in ("DRIVER", "DISK_TYPE"):
                if conf.get(name):
                    replace(name, conf[name])
            values = [(n, v) for n, v in values if n != "SHARED"]
        if ds_type != 3:
            replace("ALLOW_ORPHANS", conf.get("ALLOW_ORPHANS", "NO"))
        return values

    def datastore_monitor(self, datastore: DatastoreRef) -> DriverResult | None:
        """One monitoring cycle (``ImageManager::monitor_datastore``); None for an unmonitored system DS."""
        oid = _oid(datastore)
        root = self._read("datastore", oid)
        extra = ""
        if integer(root, "TYPE") == 1:
            node = root.find("TEMPLATE")
            if node is None or template_get(node, "SHARED").upper() != "YES":
                return None
            extra = (
                f"<DATASTORE_LOCATION>{self.conf.datastore_location}</DATASTORE_LOCATION>"
                "<MONITOR_VM_DISKS>0</MONITOR_VM_DISKS>"
            )
        payload = _b64(f"<DS_DRIVER_ACTION_DATA>{to_string(root)}{extra}</DS_DRIVER_ACTION_DATA>")
        result = self._ds_request("MONITOR", oid, payload)
        if result.success:
            try:
                values = dict(
                    (n, v)
                    for n, v in tmpl.parse(base64.b64decode(result.info).decode(errors="replace"))
                    if isinstance(v, str)
                )
            except (tmpl.TemplateSyntaxError, ValueError):
                return result
            with self.store.edit("datastore", oid) as ds:
                for name in ("TOTAL_MB", "FREE_MB", "USED_MB"):
                    try:
                        number = int(float(values.get(name, "0")))
                    except ValueError:
                        number = 0
                    set_text(ds, name, number)
        return result

    def _ds_request(self, action: str, oid: int, payload: str) -> DriverResult:
        result = self.datastore_manager.request(action, oid, payload, self.conf.convention)
        self.exchanges.append(result)
        return result

    def _ds_payload(self, image_xml: str, datastore_id: int, extra: str = "") -> str:
        ds_xml = to_string(self._read("datastore", datastore_id))
        return _b64(f"<DS_DRIVER_ACTION_DATA>{image_xml}{ds_xml}{extra}</DS_DRIVER_ACTION_DATA>")

    # ----------------------------------------------------------------------------------------------
    # Images
    # ----------------------------------------------------------------------------------------------

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
        """``oneimage create``: STAT (sync) and CP for a PATH, nothing for a SOURCE, MKFS for an empty one.

        Raises OneFailure("one.image.allocate", ...) when oned refuses the request (no image is
        created) and OneFailure(<action>, info, image id) when the driver fails (the image stays, in ERROR).
        """
        ds_id = _oid(datastore)
        ds_root = self._read("datastore", ds_id)
        api = "one.image.allocate"
        image_type = type.upper()
        if image_type not in IMAGE_TYPES:
            raise OneFailure(api, f"Unknown type {type}")
        if integer(ds_root, "TYPE") == 1:
            raise OneFailure(api, "Cannot allocate images in a SYSTEM_DS")
        if path and source:
            raise OneFailure(api, "Template malformed, PATH and SOURCE are mutually exclusive")
        if not persistent and self._persistent_only(ds_root):
            persistent = True
        size = self._stat_image(image_type, path, source, size_mb, ds_id)
        self._check_capacity(ds_root, size)
        if not path and not source and image_type in ("OS", "DATABLOCK"):
            # Image::insert: an MKFS image's FORMAT is TM_MAD_CONF/DRIVER, else the datastore's DRIVER,
            # else the template's, else raw.
            node = ds_root.find("TEMPLATE")
            driver = template_get(node, "DRIVER") if node is not None else ""
            format = driver or format or "raw"
        attributes: list[tmpl.Attribute] = [(k.upper(), v) for k, v in (template or {}).items()]
        oid = self.store.next_id("image")
        with self.store.locked():
            root = image_document(
                oid,
                name,
                datastore=self._read("datastore", ds_id),
                image_type=IMAGE_TYPES.index(image_type),
                persistent=persistent,
                source=source or "",
                path=path or "",
                image_format=format,
                fs=fs,
                size_mb=size,
                attributes=attributes,
            )
            self.store.write("image", oid, root)
            self._datastore_images(ds_id, add=oid)
        return self._register_image(oid, ds_id)

    def _persistent_only(self, ds_root: ET.Element) -> bool:
        conf = self.conf.ds_mad_conf.get(text(ds_root, "DS_MAD"), {})
        return conf.get("PERSISTENT_ONLY", "NO").upper() == "YES"

    def _stat_image(
        self, image_type: str, path: str | None, source: str | None, size_mb: int | None, ds_id: int
    ) -> int:
        """``ImageManager::stat_image``: SIZE from the template, or a synchronous STAT of the PATH.

        SIZE is mandatory with a SOURCE and for an OS/DATABLOCK without PATH (made by MKFS); other
        types need a PATH or a SOURCE. The STAT id is a sync-request id, not an image id.
        """
        api = "one.image.allocate"
        if source or (not path and image_type in ("OS", "DATABLOCK")):
            if size_mb is None:
                raise OneFailure(api, "Cannot determine Image SIZE: Wrong number or missing SIZE attribute.")
            return size_mb
        if not path:
            raise OneFailure(
                api, f"Cannot determine Image SIZE: Either PATH or SOURCE are required for {image_type}"
            )
        request = self.store.next_id("request")
        image_xml = f"<IMAGE><PATH>{_escape(path)}</PATH></IMAGE>"
        result = self._ds_request("STAT", request, self._ds_payload(image_xml, ds_id))
        if not result.success:
            raise OneFailure("STAT", result.info, request)
        try:
            return int(result.info.split()[0])
        except (ValueError, IndexError):
            raise OneFailure(api, f"Cannot parse image SIZE: {result.info}") from None

    def _check_capacity(self, ds_root: ET.Element, size: int) -> None:
        node = ds_root.find("TEMPLATE")
        check_value = template_get(node, "DATASTORE_CAPACITY_CHECK") if node is not None else ""
        check = check_value.upper() == "YES" if check_value else self.conf.datastore_capacity_check
        avail = integer(ds_root, "FREE_MB")
        limit = template_get(node, "LIMIT_MB") if node is not None else ""
        if limit.isdigit():
            avail = min(avail, int(limit) - integer(ds_root, "USED_MB"))
        if check and size > max(avail, 0):
            raise OneFailure("one.image.allocate", "Not enough space in datastore")

    def _register_image(self, oid: int, ds_id: int) -> Image:
        """``ImageManager::register_image`` and the reply handlers ``_cp``/``_mkfs``."""
        root = self._read("image", oid)
        path, source = text(root, "PATH"), text(root, "SOURCE")
        node = root.find("TEMPLATE")
        saving = node is not None and template_get(node, "SAVE_AS_HOT").upper() == "YES"
        if not path and source:
            with self.store.edit("image", oid) as image:
                _unlock(image)
            return self.image(oid)
        if not path and not (saving or IMAGE_TYPES[integer(root, "TYPE")] in ("DATABLOCK", "OS")):
            return self.image(oid)
        action = "CP" if path else "MKFS"
        result = self._ds_request(action, oid, self._ds_payload(to_string(root), ds_id))
        failure = ""
        with self.store.edit("image", oid) as image:
            if action == "CP" and result.success:
                words = result.info.split()
                set_text(image, "SOURCE", words[0] if words else "")
                if len(words) < 2:
                    failure = "CP operation succeeded but image FORMAT was not returned."
                else:
                    set_text(image, "FORMAT", words[1])
                    _unlock(image)
            elif action == "CP":
                failure = _error_text("Error copying image in the datastore", result.info)
            elif result.success:
                set_text(image, "SOURCE", result.info)
                if not saving:
                    _unlock(image)
            else:
                failure = _error_text("Error creating datablock", result.info)
            if failure:
                _set_error(image, failure)
                _set_image_state(image, "ERROR")
        if not saving or failure:
            self.datastore_monitor(ds_id)
        if failure:
            raise OneFailure(action, result.info if not result.success else failure, oid)
        return self.image(oid)

    def image_clone(self, image: ImageRef, name: str, datastore: DatastoreRef | None = None) -> Image:
        """``oneimage clone``: a new image whose PATH is the original's SOURCE; CLONE on the target DS."""
        api = "one.image.clone"
        source_id = _oid(image)
        original = self._read("image", source_id)
        ds_id = _oid(datastore) if datastore is not None else integer(original, "DATASTORE_ID")
        ds_root = self._read("datastore", ds_id)
        source_ds = self._read("datastore", integer(original, "DATASTORE_ID"))
        if integer(ds_root, "TYPE") != 0:
            raise OneFailure(api, "Clone only supported for IMAGE_DS Datastores")
        if text(ds_root, "DS_MAD") != text(source_ds, "DS_MAD"):
            raise OneFailure(api, "Clone only supported for IMAGE_DS Datastores of the same type")
        state = IMAGE_STATES[integer(original, "STATE")]
        if state not in ("READY", "USED", "CLONE"):
            raise OneFailure(api, f"Cannot clone image in state: {state}")
        size = integer(original, "SIZE")
        self._check_capacity(ds_root, size)
        attributes = template_attributes(original.find("TEMPLATE"))
        oid = self.store.next_id("image")
        with self.store.locked():
            clone = image_document(
                oid,
                name,
                datastore=ds_root,
                image_type=integer(original, "TYPE"),
                persistent=text(original, "PERSISTENT") == "1",
                path=text(original, "SOURCE"),
                image_format=text(original, "FORMAT"),
                size_mb=size,
                attributes=attributes,
                cloning_id=source_id,
            )
            self.store.write("image", oid, clone)
            self._datastore_images(ds_id, add=oid)
            with self.store.edit("image", source_id) as src:
                set_text(src, "CLONING_OPS", integer(src, "CLONING_OPS") + 1)
                set_collection(src, "CLONES", [*collection_ids(src, "CLONES"), oid])
                if state == "READY":
                    _set_image_state(src, "CLONE" if text(src, "PERSISTENT") == "1" else "USED")
        result = self._ds_request("CLONE", oid, self._ds_payload(to_string(clone), ds_id))
        failure = ""
        with self.store.edit("image", oid) as new:
            words = result.info.split() if result.success else []
            if words:
                set_text(new, "SOURCE", words[0])
                if len(words) > 1:
                    set_text(new, "FORMAT", words[1])
                _unlock(new)
            else:
                failure = _error_text(f"Error cloning from Image {source_id}", result.info)
                _set_error(new, failure)
                _set_image_state(new, "ERROR")
            set_text(new, "CLONING_ID", -1)
        self._release_cloning(source_id, oid)
        if not failure:
            self.datastore_monitor(ds_id)
            return self.image(oid)
        raise OneFailure("CLONE", result.info, oid)

    def _release_cloning(self, source_id: int, clone_id: int) -> None:
        with self.store.edit("image", source_id) as src:
            clones = [i for i in collection_ids(src, "CLONES") if i != clone_id]
            set_collection(src, "CLONES", clones)
            set_text(src, "CLONING_OPS", len(clones))
            state = IMAGE_STATES[integer(src, "STATE")]
            if state in ("USED", "CLONE") and not clones and integer(src, "RUNNING_VMS") == 0:
                _set_image_state(src, "READY")

    def image_delete(self, image: ImageRef) -> None:
        """``oneimage delete``: RM through the driver when the image has a SOURCE; ERROR if RM fails."""
        oid = _oid(image)
        root = self._read("image", oid)
        state = IMAGE_STATES[integer(root, "STATE")]
        api = "one.image.delete"
        running = integer(root, "RUNNING_VMS")
        if (state == "READY" and running) or state in (
            "USED",
            "USED_PERS",
            "LOCKED_USED",
            "LOCKED_USED_PERS",
        ):
            raise OneFailure(api, f"There are {running} VMs using it.", oid)
        if state == "CLONE":
            raise OneFailure(api, f"There are {integer(root, 'CLONING_OPS')} active clone operations.", oid)
        ds_id = integer(root, "DATASTORE_ID")
        cloning_id = integer(root, "CLONING_ID")
        if not text(root, "SOURCE"):
            self._drop_image(oid, ds_id)
        else:
            with self.store.edit("image", oid) as current:
                _set_image_state(current, "DELETE")
                set_text(current, "CLONING_ID", -1)
                payload = self._ds_payload(to_string(current), ds_id)
            result = self._ds_request("RM", oid, payload)
            node = root.find("TEMPLATE")
            forced = node is not None and template_get(node, "FORCE_DELETE").upper() == "YES"
            if not (result.success or forced):
                with self.store.edit("image", oid) as current:
                    # oned writes the SOURCE variable before setting it, hence the two spaces.
                    _set_error(
                        current,
                        "Error removing image from datastore. Retry the operation or manually remove image "
                        "source  and run the delete --force operation to completely delete the image",
                    )
                    _set_image_state(current, "ERROR")
                raise OneFailure("RM", result.info, oid)
            self._drop_image(oid, ds_id)
            self.datastore_monitor(ds_id)
        if cloning_id != -1 and self.store.read("image", cloning_id) is not None:
            self._release_cloning(cloning_id, oid)

    def _drop_image(self, oid: int, ds_id: int) -> None:
        with self.store.locked():
            self.store.delete("image", oid)
            self._datastore_images(ds_id, remove=oid)

    def _datastore_images(self, ds_id: int, add: int | None = None, remove: int | None = None) -> None:
        with self.store.edit("datastore", ds_id) as ds:
            ids = [i for i in collection_ids(ds, "IMAGES") if i != remove]
            set_collection(ds, "IMAGES", ids + ([add] if add is not None else []))

    def image_persistent(self, image: ImageRef, persistent: bool) -> Image:
        """``oneimage persistent|nonpersistent``: allowed only while no VM uses the image."""
        oid = _oid(image)
        with self.store.edit("image", oid) as root:
            state = IMAGE_STATES[integer(root, "STATE")]
            if state in ("USED", "CLONE", "USED_PERS", "LOCKED_USED", "LOCKED_USED_PERS"):
                raise OneFailure("one.image.persistent", f"Image cannot be in state {state}.", oid)
            ds_root = self._read("datastore", integer(root, "DATASTORE_ID"))
            if not persistent and self._persistent_only(ds_root):
                raise OneFailure(
                    "one.image.persistent", "This Datastore only accepts persistent images.", oid
                )
            set_text(root, "PERSISTENT", int(persistent))
        return self.image(oid)

    # ----------------------------------------------------------------------------------------------
    # Virtual machines: creation and deployment
    # ----------------------------------------------------------------------------------------------

    def vm_deploy(
        self,
        disks: Sequence[DiskRef],
        host: str,
        *,
        context: bool = True,
        name: str | None = None,
        system_ds: int = SYSTEM_DS_ID,
    ) -> VirtualMachine:
        """``onevm create`` + ``onevm deploy``: acquire the images, prolog on ``host``, boot.

        Raises OneFailure("one.vm.allocate"/"one.vm.deploy", ...) for refused requests (a VM refused at
        deploy stays PENDING, holding its images, as in OpenNebula) and OneFailure("TRANSFER", info, vm)
        for a failed prolog (the VM is left in PROLOG_FAILURE).
        """
        oid = self.store.next_id("vm")
        context_disk = vector_element("CONTEXT", {"DISK_ID": str(len(disks))}) if context else None
        vm_disks = self._build_disks(oid, disks, system_ds, context_disk)
        attributes: list[tmpl.Attribute] = [("CPU", "1"), ("MEMORY", "128"), ("VMID", str(oid))]
        root = vm_document(oid, name or f"vm-{oid}", attributes)
        template_node = root.find("TEMPLATE")
        assert template_node is not None
        for disk in [*vm_disks, *([context_disk] if context_disk is not None else [])]:
            template_node.append(disk)
        _sort_template(template_node)
        for disk in vm_disks:
            self._inherit_snapshots(root, disk)
        with self.store.locked():
            self.store.write("vm", oid, root)
        self._deploy(oid, host, system_ds)
        return self.vm(oid)

    def _inherit_snapshots(self, vm: ET.Element, disk: ET.Element) -> None:
        """A persistent image's snapshots become its disk's (``ImagePool::acquire_disk``)."""
        if vector_get(disk, "PERSISTENT") != "YES":
            return
        image = self._read("image", int(vector_get(disk, "IMAGE_ID")))
        snapshots = image.find("SNAPSHOTS")
        if snapshots is None or not snapshots.findall("SNAPSHOT"):
            return
        copy = parse_xml(to_string(snapshots))
        for node in copy.findall("DISK_ID"):
            copy.remove(node)
        position = [child.tag for child in copy].index("NEXT_SNAPSHOT")
        copy.insert(position, element("DISK_ID", vector_get(disk, "DISK_ID")))
        vm.append(copy)
        update_disk(vm, disk, copy)

    def _build_disks(
        self, vmid: int, disks: Sequence[DiskRef], system_ds: int, context: ET.Element | None
    ) -> list[ET.Element]:
        """``VirtualMachineDisks::get_images``: acquire each image, fill in the DISK attributes and
        assign TARGETs: the first OS disk first, then CD-ROMs and the context CD, then the rest."""
        result: list[ET.Element] = []
        acquired: list[int] = []
        queues: dict[str, list[tuple[str, ET.Element]]] = {"os": [], "cdrom": [], "datablock": []}
        used: set[str] = set()
        try:
            for disk_id, spec in enumerate(disks):
                image_spec = spec if isinstance(spec, DiskSpec) else DiskSpec(spec)
                disk, image_type = self._image_disk(vmid, disk_id, image_spec)
                acquired.append(_oid(image_spec.image))
                kind = {"OS": "os", "CDROM": "cdrom"}.get(image_type, "datablock")
                if kind == "os" and queues["os"]:
                    kind = "datablock"
                target = vector_get(disk, "TARGET")
                if target:
                    if target in used:
                        raise OneFailure(
                            "one.vm.allocate", f"Two disks have defined the same target {target}"
                        )
                    used.add(target)
                else:
                    queues[kind].append((vector_get(disk, "DEV_PREFIX"), disk))
                result.append(disk)
        except OneFailure:
            for image_id in acquired:
                self._release_image(vmid, image_id, failed=False)
            raise
        if context is not None:
            queues["cdrom"].append((self.conf.default_cdrom_device_prefix, context))
        for kind in ("os", "cdrom", "datablock"):
            for prefix, disk in queues[kind]:
                vector_set(disk, "TARGET", _next_target(prefix, used))
        return result

    def _image_disk(self, vmid: int, disk_id: int, spec: DiskSpec) -> tuple[ET.Element, str]:
        """Acquire the image (``ImageManager::acquire_image``) and compose the DISK
        (``Image::disk_attribute`` + ``Datastore::disk_attribute``)."""
        image_id = _oid(spec.image)
        api = "one.vm.allocate"
        with self.store.locked():
            image = self.store.read("image", image_id)
            if image is None:
                raise OneFailure(api, f"DISK {disk_id}: Image with ID: {image_id} does not exist")
            image_type = IMAGE_TYPES[integer(image, "TYPE")]
            if image_type not in ("OS", "DATABLOCK", "CDROM"):
                raise OneFailure(
                    api,
                    f"DISK {disk_id}: Image {image_id} ({text(image, 'NAME')}) of type {image_type} "
                    "cannot be used as DISK.",
                )
            problem = _acquire(image, vmid)
            if problem:
                raise OneFailure(api, f"DISK {disk_id}: {problem}")
            self.store.write("image", image_id, image)
        ds = self._read("datastore", integer(image, "DATASTORE_ID"))
        node = image.find("TEMPLATE")
        own = template_get(node, "DEV_PREFIX") if node is not None else ""
        default = (
            self.conf.default_cdrom_device_prefix
            if image_type == "CDROM"
            else self.conf.default_device_prefix
        )
        persistent = text(image, "PERSISTENT") == "1"
        image_format = text(image, "FORMAT").lower()
        values: dict[str, str] = {
            "DISK_ID": str(disk_id),
            "DEV_PREFIX": spec.dev_prefix or own or default,
            "IMAGE": text(image, "NAME"),
            "IMAGE_ID": str(image_id),
            "IMAGE_UID": text(image, "UID"),
            "IMAGE_UNAME": text(image, "UNAME"),
            "SOURCE": text(image, "SOURCE"),
            "ORIGINAL_SIZE": text(image, "SIZE"),
            "SIZE": str(spec.size_mb) if spec.size_mb is not None else text(image, "SIZE"),
            "DISK_SNAPSHOT_TOTAL_SIZE": "0",
            "IMAGE_STATE": text(image, "STATE"),
            "TYPE": "CDROM"
            if image_type == "CDROM"
            else next((n for n, c in DISK_TYPES.items() if c == integer(image, "DISK_TYPE")), "FILE"),
            "DATASTORE": text(ds, "NAME"),
            "DATASTORE_ID": text(ds, "ID"),
            "TM_MAD": text(ds, "TM_MAD"),
            "CLUSTER_ID": "0",
        }
        if image_format:
            values["DRIVER"] = values["FORMAT"] = image_format
        if image_type == "CDROM":
            values.update(SAVE="NO", CLONE="NO", READONLY="YES")
        else:
            values["READONLY"] = (
                "YES" if node is not None and template_get(node, "READONLY").upper() == "YES" else "NO"
            )
            if persistent:
                values.update(PERSISTENT="YES", CLONE="NO", SAVE="YES")
            else:
                values.update(CLONE="YES", SAVE="NO")
        target = spec.target or (template_get(node, "TARGET") if node is not None else "")
        if target:
            values["TARGET"] = target
        ds_template = ds.find("TEMPLATE")
        if ds_template is not None:
            for name in ("CLONE_TARGET", "LN_TARGET"):
                value = template_get(ds_template, name)
                if value:
                    values[name] = value
        if integer(image, "STATE") in (
            IMAGE_STATES.index(s) for s in ("LOCKED", "LOCKED_USED", "LOCKED_USED_PERS")
        ):
            values["CLONING"] = "YES"
        return vector_element("DISK", values), image_type

    def _check_tm_mad(self, disk: ET.Element, system_tm: str) -> str:
        """``check_tm_mad_disks`` for one DISK: TM_MAD_SYSTEM modes of its image datastore ('' if fine)."""
        tm_mad = vector_get(disk, "TM_MAD")
        if not vector_get(disk, "IMAGE_ID") or tm_mad == system_tm:
            return ""
        ds = self._read("datastore", int(vector_get(disk, "DATASTORE_ID")))
        node = ds.find("TEMPLATE")
        mode = system_tm.strip().upper()
        values = [
            template_get(node, f"{n}_{mode}") if node is not None else ""
            for n in ("CLONE_TARGET", "LN_TARGET", "DISK_TYPE")
        ]
        if not all(values):
            return f"Image Datastore does not support transfer mode: {system_tm}"
        clone_target, ln_target, disk_type = values
        vector_set(disk, "CLONE_TARGET", clone_target)
        vector_set(disk, "LN_TARGET", ln_target)
        vector_set(disk, "TYPE", disk_type)
        vector_set(disk, "DISK_TYPE", disk_type)
        vector_set(disk, "TM_MAD_SYSTEM", system_tm)
        return ""

    def _deploy(self, vmid: int, host: str, system_ds: int) -> None:
        """``one.vm.deploy`` then PROLOG and boot."""
        host_id = self._host_id(host)
        ds = self._read("datastore", system_ds)
        system_tm = text(ds, "TM_MAD")
        with self.store.edit("vm", vmid) as root:
            template = root.find("TEMPLATE")
            assert template is not None
            for disk in template.findall("DISK"):
                problem = self._check_tm_mad(disk, system_tm)
                if problem:
                    raise OneFailure("one.vm.deploy", problem, vmid)
            template_set(template, "TM_MAD_SYSTEM", system_tm)
            history = root.find("HISTORY_RECORDS")
            assert history is not None
            seq = len(history.findall("HISTORY"))
            record = history_element(
                vmid,
                seq,
                hostname=host,
                host_id=host_id,
                tm_mad=system_tm,
                ds_id=system_ds,
                now=int(time.time()),
            )
            history.append(record)
            _set_vm_state(root, "ACTIVE", "PROLOG")
        self._host_vms(host, add=vmid)
        root = self._read("vm", vmid)
        context = root.find("TEMPLATE/CONTEXT")
        context_file = self._write_context(vmid, context) if context is not None else None
        try:
            lines = self.lines.prolog(root, context_file)
        except OneFailure:
            self._set_state(vmid, "ACTIVE", "PROLOG_FAILURE")
            raise
        result = self._transfer(vmid, "prolog", lines)
        if not result.success:
            self._transfer_failed(vmid, "PROLOG_FAILURE", result)
        self._set_state(vmid, "ACTIVE", "BOOT")
        self._boot(vmid)

    def _boot(self, vmid: int, restore: bool = False) -> None:
        root = self._read("vm", vmid)
        place = self.lines.place(root)
        host, folder, seq = place.host, place.folder, place.seq
        if restore:
            self.hypervisor.restore(host, folder)
        self.hypervisor.boot(host, folder, seq, f"<domain><name>one-{vmid}</name></domain>\n".encode())
        with self.store.edit("vm", vmid) as current:
            set_text(current, "DEPLOY_ID", f"one-{vmid}")
            _set_vm_state(current, "ACTIVE", "RUNNING")

    # ----------------------------------------------------------------------------------------------
    # Transfer files (TransferManager.cc) and the VMM driver's TM steps
    # ----------------------------------------------------------------------------------------------

    def _write_context(self, vmid: int, context: ET.Element) -> str:
        """``generate_context``: vms/<id>/context.sh on the frontend; returns the drivers' view of it."""
        content = "# Context variables generated by OpenNebula\n" + "".join(
            f"{child.tag}='{child.text or ''}'\n" for child in context
        )
        self.files.write(self.runner.var_lib_one / "vms" / str(vmid) / "context.sh", content.encode())
        return f"{self.runner.driver_var_lib_one}/vms/{vmid}/context.sh"

    def _transfer(self, vmid: int, op: str, lines: list[str]) -> DriverResult:
        """Write ``vms/<id>/transfer.<seq>.<op>`` and send TRANSFER to the transfer manager."""
        root = self._read("vm", vmid)
        seq = self.lines.place(root).seq
        name = f"transfer.{seq}.{op}"
        local = self.runner.var_lib_one / "vms" / str(vmid) / name
        self.files.write(local, "".join(f"{line}\n" for line in lines).encode())
        result = self.transfer_manager.transfer(
            vmid, local, f"{self.runner.driver_var_lib_one}/vms/{vmid}/{name}"
        )
        self.exchanges.append(result)
        return result

    def _tm_step(
        self, vmid: int, command: str, stdin: bytes | None = None, *, vmm_action: str
    ) -> DriverResult:
        """A TM command run by the VMM driver as a step of ``vmm_action`` (ATTACHDISK, MIGRATE...).

        The result carries ``vmm_action``: a failing step fails that VMM action, not a TRANSFER.
        """
        step = self.transfer_manager.command(vmid, command.split(), stdin)
        self.exchanges.append(step)
        return DriverResult(**{**step.__dict__, "action": vmm_action, "steps": (step,)})

    def _transfer_failed(self, vmid: int, lcm_state: str, result: DriverResult) -> None:
        """TransferManagerProtocol: the ERROR attribute, the failure state, and the exception."""
        with self.store.edit("vm", vmid) as root:
            if result.info and not result.info.startswith("-"):
                _set_vm_error(root, f"Error executing image transfer script: {result.info}")
            _set_vm_state(root, "ACTIVE", lcm_state)
        raise OneFailure(result.action, result.info, vmid)

    def transfer_file(self, vm: VmRef, op: str, seq: int | None = None) -> str:
        """The text of a transfer file oned wrote for ``vm`` (``op`` = prolog, epilog, migrate...)."""
        vmid = _oid(vm)
        if seq is None:
            seq = self.lines.place(self._read("vm", vmid)).seq
        return (self.runner.var_lib_one / "vms" / str(vmid) / f"transfer.{seq}.{op}").read_text(
            encoding="utf-8"
        )

    # ----------------------------------------------------------------------------------------------
    # Virtual machines: life cycle
    # ----------------------------------------------------------------------------------------------

    def _state(self, vmid: int) -> tuple[str, str]:
        view = self.vm(vmid)
        return view.state, view.lcm_state

    def _set_state(self, vmid: int, state: str, lcm: str = "LCM_INIT") -> None:
        with self.store.edit("vm", vmid) as root:
            _set_vm_state(root, state, lcm)

    def _refuse(self, api: str, vmid: int) -> OneFailure:
        state, lcm = self._state(vmid)
        shown = lcm if state == "ACTIVE" else state
        return OneFailure(api, f"This action is not available for state {shown}", vmid)

    def vm_terminate(self, vm: VmRef) -> None:
        """``onevm terminate``: shutdown, then EPILOG (MVDS saved disks, DELETE the rest and the folder)."""
        vmid = _oid(vm)
        state, lcm = self._state(vmid)
        if state in ("PENDING", "HOLD"):
            self._done(vmid)
            return
        if not ((state == "ACTIVE" and lcm == "RUNNING") or state == "POWEROFF"):
            raise self._refuse("one.vm.terminate", vmid)
        if lcm == "RUNNING":
            self._set_state(vmid, "ACTIVE", "SHUTDOWN")
        self._set_state(vmid, "ACTIVE", "EPILOG")
        result = self._transfer(vmid, "epilog", self.lines.epilog(self._read("vm", vmid)))
        if not result.success:
            self._transfer_failed(vmid, "EPILOG_FAILURE", result)
        self._done(vmid)

    def vm_recover_delete(self, vm: VmRef) -> DriverResult:
        """``onevm recover --delete``: DELETE every disk and the folder (nothing saved), VM DONE."""
        vmid = _oid(vm)
        root = self._read("vm", vmid)
        result = None
        if root.find("HISTORY_RECORDS/HISTORY") is not None:
            self._set_state(vmid, "ACTIVE", "CLEANUP_DELETE")
            result = self._transfer(vmid, "delete", self.lines.deletes(self._read("vm", vmid)))
        self._done(vmid)
        return result or DriverResult("TRANSFER", vmid, True, "-")

    def vm_recover_retry(self, vm: VmRef) -> None:
        """``onevm recover --retry`` of a failed prolog or epilog: the same transfer file is run again,
        then the VM boots (prolog) or is DONE (epilog)."""
        vmid = _oid(vm)
        state, lcm = self._state(vmid)
        steps = {"PROLOG_FAILURE": ("prolog", "PROLOG"), "EPILOG_FAILURE": ("epilog", "EPILOG")}
        if state != "ACTIVE" or lcm not in steps:
            raise self._refuse("one.vm.recover", vmid)
        op, running = steps[lcm]
        self._set_state(vmid, "ACTIVE", running)
        name = f"transfer.{self.lines.place(self._read('vm', vmid)).seq}.{op}"
        result = self.transfer_manager.transfer(
            vmid,
            self.runner.var_lib_one / "vms" / str(vmid) / name,
            f"{self.runner.driver_var_lib_one}/vms/{vmid}/{name}",
        )
        self.exchanges.append(result)
        if not result.success:
            self._transfer_failed(vmid, lcm, result)
        if op == "epilog":
            self._done(vmid)
            return
        self._set_state(vmid, "ACTIVE", "BOOT")
        self._boot(vmid)

    def _done(self, vmid: int) -> None:
        """DONE: release every image (``release_images``) and leave the host."""
        root = self._read("vm", vmid)
        for disk in root.findall("TEMPLATE/DISK"):
            self._release_disk(vmid, disk)
        records = root.findall("HISTORY_RECORDS/HISTORY")
        if records:
            self._host_vms(text(records[-1], "HOSTNAME"), remove=vmid)
        with self.store.edit("vm", vmid) as current:
            _set_vm_state(current, "DONE", "LCM_INIT")
            set_text(current, "ETIME", int(time.time()))

    def _release_disk(self, vmid: int, disk: ET.Element, failed: bool = False) -> None:
        image_id = vector_get(disk, "IMAGE_ID")
        if not image_id:
            return
        size, original = int(vector_get(disk, "SIZE") or 0), int(vector_get(disk, "ORIGINAL_SIZE") or 0)
        vm = self.store.read("vm", vmid)
        disk_snapshots = None
        for node in vm.findall("SNAPSHOTS") if vm is not None else []:
            if text(node, "DISK_ID") == vector_get(disk, "DISK_ID"):
                disk_snapshots = node
        with self.store.locked():
            image = self.store.read("image", int(image_id))
            if image is None:
                return
            if IMAGE_STATES[integer(image, "STATE")] == "USED_PERS":
                if size > original:
                    set_text(image, "SIZE", size)
                set_image_snapshots(image, disk_snapshots)
            self.store.write("image", int(image_id), image)
        self._release_image(vmid, int(image_id), failed)

    def _release_image(self, vmid: int, image_id: int, failed: bool) -> None:
        """``ImageManager::release_image``."""
        with self.store.locked():
            image = self.store.read("image", image_id)
            if image is None:
                return
            state = IMAGE_STATES[integer(image, "STATE")]
            vms = [i for i in collection_ids(image, "VMS") if i != vmid]
            if state in ("USED", "USED_PERS", "LOCKED_USED", "LOCKED_USED_PERS"):
                set_collection(image, "VMS", vms)
                set_text(image, "RUNNING_VMS", len(vms))
                idle = not vms and (state.endswith("PERS") or integer(image, "CLONING_OPS") == 0)
                if failed and state.endswith("PERS"):
                    _set_image_state(image, "ERROR")
                elif idle:
                    _set_image_state(image, "LOCKED" if state.startswith("LOCKED") else "READY")
            self.store.write("image", image_id, image)

    def vm_poweroff(self, vm: VmRef) -> None:
        """``onevm poweroff``: the hypervisor stops the VM; no transfer."""
        vmid = _oid(vm)
        if self._state(vmid) != ("ACTIVE", "RUNNING"):
            raise self._refuse("one.vm.poweroff", vmid)
        self._set_state(vmid, "ACTIVE", "SHUTDOWN_POWEROFF")
        self._set_state(vmid, "POWEROFF")

    def vm_migrate(self, vm: VmRef, host: str, *, live: bool = False) -> None:
        """``onevm migrate [--live]``: cold = save, MV lines, restore; live = the VMM driver's
        PREMIGRATE, hypervisor migration (FAILMIGRATE on failure), POSTMIGRATE."""
        vmid = _oid(vm)
        state, lcm = self._state(vmid)
        running = (state, lcm) == ("ACTIVE", "RUNNING")
        if not (running or (state == "POWEROFF" and not live)):
            raise self._refuse("one.vm.migrate", vmid)
        root = self._read("vm", vmid)
        place = self.lines.place(root)
        previous_host, folder = place.host, place.folder
        if live:
            self._new_history(vmid, host)
            self._set_state(vmid, "ACTIVE", "MIGRATE")
            self._live_migrate(vmid, previous_host, host)
            return
        if running:
            self._set_state(vmid, "ACTIVE", "SAVE_MIGRATE")
            self.hypervisor.save(previous_host, folder)
        self._new_history(vmid, host)
        lcm_state = "PROLOG_MIGRATE" if running else "PROLOG_MIGRATE_POWEROFF"
        self._set_state(vmid, "ACTIVE", lcm_state)
        result = self._transfer(vmid, "migrate", self.lines.moves(self._read("vm", vmid)))
        if not result.success:
            self._transfer_failed(vmid, f"{lcm_state}_FAILURE", result)
        if running:
            self._set_state(vmid, "ACTIVE", "BOOT_MIGRATE")
            self._boot(vmid, restore=True)
        else:
            self._set_state(vmid, "POWEROFF")

    def _new_history(self, vmid: int, host: str) -> None:
        """A new HISTORY record on ``host`` (same system datastore), moving the VM between hosts."""
        host_id = self._host_id(host)
        with self.store.edit("vm", vmid) as root:
            records = root.findall("HISTORY_RECORDS/HISTORY")
            last = records[-1]
            history = root.find("HISTORY_RECORDS")
            assert history is not None
            record = history_element(
                vmid,
                len(records),
                hostname=host,
                host_id=host_id,
                tm_mad=text(last, "TM_MAD"),
                ds_id=integer(last, "DS_ID"),
                now=int(time.time()),
            )
            history.append(record)
            previous = text(last, "HOSTNAME")
        self._host_vms(previous, remove=vmid)
        self._host_vms(host, add=vmid)

    def _live_migrate(self, vmid: int, source: str, target: str) -> None:
        root = self._read("vm", vmid)
        folder = self.lines.place(root).folder
        command = self.lines.migrate(root)
        stdin = _b64(to_string(root)).encode()
        result = self._tm_step(vmid, f"PRE{command}", stdin, vmm_action="MIGRATE")
        if result.success:
            try:
                self.hypervisor.migrate(source, target, folder)
            except OSError as exc:
                self._tm_step(vmid, f"FAIL{command}", stdin, vmm_action="MIGRATE")
                result = DriverResult("MIGRATE", vmid, False, f"hypervisor migration failed: {exc}")
        if not result.success:
            self._new_history(vmid, source)
            self._set_state(vmid, "ACTIVE", "RUNNING")
            raise OneFailure("MIGRATE", result.info, vmid)
        self._tm_step(vmid, f"POST{command}", stdin, vmm_action="MIGRATE")
        self._set_state(vmid, "ACTIVE", "RUNNING")

    def _host_vms(self, name: str, add: int | None = None, remove: int | None = None) -> None:
        try:
            host_id = self._host_id(name)
        except OneFailure:
            return
        with self.store.edit("host", host_id) as root:
            ids = [i for i in collection_ids(root, "VMS") if i != remove] + ([add] if add is not None else [])
            set_collection(root, "VMS", ids)
            set_text(root, "HOST_SHARE/RUNNING_VMS", len(set(ids)))

    # ----------------------------------------------------------------------------------------------
    # Disks of a VM: save as, snapshots
    # ----------------------------------------------------------------------------------------------

    def disk_saveas(self, vm: VmRef, disk_id: int, name: str, *, snapshot_id: int = -1) -> Image:
        """``onevm disk-saveas``: a new image (MKFS placeholder, FORMAT ``save_as``), then CPDS into it."""
        vmid = _oid(vm)
        state, lcm = self._state(vmid)
        saveas = {
            ("ACTIVE", "RUNNING"): "HOTPLUG_SAVEAS",
            ("POWEROFF", "LCM_INIT"): "HOTPLUG_SAVEAS_POWEROFF",
            ("SUSPENDED", "LCM_INIT"): "HOTPLUG_SAVEAS_SUSPENDED",
        }.get((state, lcm))
        if saveas is None:
            raise self._refuse("one.vm.disksaveas", vmid)
        root = self._read("vm", vmid)
        disk = _find_disk(root, disk_id)
        original = self._read("image", int(vector_get(disk, "IMAGE_ID")))
        ds_id = int(vector_get(disk, "DATASTORE_ID"))
        size = int(vector_get(disk, "SIZE") or 0)
        self._check_capacity(self._read("datastore", ds_id), size)
        attributes: list[tmpl.Attribute] = [
            ("SAVED_DISK_ID", str(disk_id)),
            ("SAVED_IMAGE_ID", vector_get(disk, "IMAGE_ID")),
            ("SAVED_SNAPSHOT_ID", str(snapshot_id)),
            ("SAVED_VM_ID", str(vmid)),
            ("SAVE_AS_HOT", "YES"),
        ]
        oid = self.store.next_id("image")
        with self.store.locked():
            image = image_document(
                oid,
                name,
                datastore=self._read("datastore", ds_id),
                image_type=integer(original, "TYPE"),
                image_format="save_as",
                size_mb=size,
                attributes=attributes,
            )
            self.store.write("image", oid, image)
            self._datastore_images(ds_id, add=oid)
        self._set_state(vmid, "ACTIVE", saveas)
        restore = (state, lcm)
        try:
            self._register_image(oid, ds_id)
        except OneFailure:
            self._set_state(vmid, *restore)
            raise
        source = self.image(oid).source
        with self.store.edit("vm", vmid) as current:
            node = _find_disk(current, disk_id)
            for key, value in (
                ("HOTPLUG_SAVE_AS", oid),
                ("HOTPLUG_SAVE_AS_ACTIVE", "YES"),
                ("HOTPLUG_SAVE_AS_SNAPSHOT_ID", snapshot_id),
                ("HOTPLUG_SAVE_AS_SOURCE", source),
            ):
                vector_set(node, key, value)
            image_format = vector_get(node, "FORMAT") or vector_get(node, "DRIVER")
        if not image_format:
            problem = (
                "Image created to save as a disk but VM disk does not contains either FORMAT or DRIVER "
                "attribute."
            )
            with self.store.edit("image", oid) as new:
                _set_error(new, problem)
                _set_image_state(new, "ERROR")
            self._end_saveas(vmid, disk_id, restore)
            raise OneFailure("MKFS", problem, oid)
        host = self.lines.place(root).host
        line = self.lines.saveas(root, disk, host, source, snapshot_id)
        result = self._transfer(vmid, "disk_saveas", [line])
        with self.store.edit("image", oid) as new:
            set_text(new, "FORMAT", image_format)
            if result.success:
                _unlock(new)
            else:
                _set_error(new, _error_text("Error saving image", result.info))
                _set_image_state(new, "ERROR")
        self._end_saveas(vmid, disk_id, restore)
        self.datastore_monitor(ds_id)
        if not result.success:
            raise OneFailure("TRANSFER", result.info, vmid)
        return self.image(oid)

    def _end_saveas(self, vmid: int, disk_id: int, restore: tuple[str, str]) -> None:
        """``clear_saveas_disk`` + ``clear_saveas_state``: the VM back in the state it was in."""
        with self.store.edit("vm", vmid) as current:
            node = _find_disk(current, disk_id)
            for key in ("ACTIVE", "SNAPSHOT_ID", "SOURCE"):
                vector_remove(node, f"HOTPLUG_SAVE_AS_{key}")
            vector_remove(node, "HOTPLUG_SAVE_AS")
            _set_vm_state(current, *restore)

    def disk_snapshot_create(self, vm: VmRef, disk_id: int, name: str = "") -> int:
        """``onevm disk-snapshot-create`` of a powered-off VM: SNAP_CREATE in a transfer file."""
        vmid = _oid(vm)
        state, _ = self._state(vmid)
        if state not in ("POWEROFF", "SUSPENDED"):
            raise self._refuse("one.vm.disksnapshotcreate", vmid)
        root = self._read("vm", vmid)
        disk = _find_disk(root, disk_id)
        with self.store.edit("vm", vmid) as current:
            allow_orphans = vector_get(_find_disk(current, disk_id), "ALLOW_ORPHANS") or "NO"
            snapshots = disk_snapshots(current, disk_id, allow_orphans)
            snapshot_id = create_snapshot(snapshots, name, int(vector_get(disk, "SIZE") or 0))
            _set_vm_state(current, "ACTIVE", f"DISK_SNAPSHOT_{state}")
        line = self.lines.snapshot(root, disk, "SNAP_CREATE", snapshot_id)
        result = self._transfer(vmid, "disk_snapshot", [line])
        with self.store.edit("vm", vmid) as current:
            snapshots = disk_snapshots(current, disk_id, "NO")
            if result.success:
                activate_snapshot(snapshots, snapshot_id)
            else:
                snapshot = find_snapshot(snapshots, snapshot_id)
                if snapshot is not None:
                    snapshots.remove(snapshot)
            update_disk(current, _find_disk(current, disk_id), snapshots)
            _set_vm_state(current, state, "LCM_INIT")
        if not result.success:
            raise OneFailure(result.action, result.info, vmid)
        return snapshot_id


# --------------------------------------------------------------------------------------------------
# Helpers on documents
# --------------------------------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _error_text(prefix: str, info: str) -> str:
    """oned appends the driver's info unless it is empty or starts with ``-``."""
    return f"{prefix}: {info}" if info and not info.startswith("-") else prefix


def _next_target(prefix: str, used: set[str]) -> str:
    for index in range(26):
        target = f"{prefix}{chr(ord('a') + index)}"
        if target not in used:
            used.add(target)
            return target
    return f"{prefix}z"


def _sort_template(node: ET.Element) -> None:
    children = sorted(list(node), key=lambda child: child.tag)
    for child in list(node):
        node.remove(child)
    node.extend(children)


def _set_error(root: ET.Element, message: str) -> None:
    node = root.find("TEMPLATE")
    assert node is not None
    template_set(node, "ERROR", f"{log_time()}: {message}")


def _set_vm_error(root: ET.Element, message: str) -> None:
    node = root.find("USER_TEMPLATE")
    assert node is not None
    template_set(node, "ERROR", f"{log_time()}: {message}")


def _set_image_state(root: ET.Element, state: str) -> None:
    set_text(root, "PREV_STATE", text(root, "STATE"))
    set_text(root, "STATE", IMAGE_STATES.index(state))


def _unlock(root: ET.Element) -> None:
    """``Image::set_state_unlock``: only the LOCKED states change (an ERROR stays)."""
    unlocked = {"LOCKED": "READY", "LOCKED_USED": "USED", "LOCKED_USED_PERS": "USED_PERS"}
    state = IMAGE_STATES[integer(root, "STATE")]
    if state in unlocked:
        _set_image_state(root, unlocked[state])


def _acquire(image: ET.Element, vmid: int) -> str:
    """``ImageManager::acquire_image``; returns the refusal ('' when acquired)."""
    oid = text(image, "ID")
    state = IMAGE_STATES[integer(image, "STATE")]
    persistent = text(image, "PERSISTENT") == "1"
    node = image.find("TEMPLATE")
    shareable = node is not None and template_get(node, "PERSISTENT_TYPE").upper() == "SHAREABLE"
    if state in ("USED_PERS", "LOCKED_USED_PERS") and not shareable:
        return f"Cannot acquire image {oid}, it is persistent and already in use"
    if state == "READY":
        _set_image_state(image, "USED_PERS" if persistent else "USED")
    elif state == "LOCKED":
        _set_image_state(image, "LOCKED_USED_PERS" if persistent else "LOCKED_USED")
    elif state not in ("USED", "USED_PERS", "LOCKED_USED", "LOCKED_USED_PERS"):
        return f"Cannot acquire image {oid}, it is in state: {state}"
    vms = [*collection_ids(image, "VMS"), vmid]
    set_collection(image, "VMS", vms)
    set_text(image, "RUNNING_VMS", len(set(vms)))
    return ""


def _set_vm_state(root: ET.Element, state: str, lcm: str = "LCM_INIT") -> None:
    set_text(root, "PREV_STATE", text(root, "STATE"))
    set_text(root, "PREV_LCM_STATE", text(root, "LCM_STATE"))
    set_text(root, "STATE", VM_STATES[state])
    set_text(root, "LCM_STATE", LCM_STATES[lcm])


def _find_disk(root: ET.Element, disk_id: int) -> ET.Element:
    for disk in root.findall("TEMPLATE/DISK"):
        if vector_get(disk, "DISK_ID") == str(disk_id):
            return disk
    raise OneFailure(
        "one.vm.info", f"VM {text(root, 'ID')} has no DISK with ID {disk_id}", integer(root, "ID")
    )
