"""OpenNebula objects as the XML documents ``one{image,datastore,vm} show -x`` and ``onehost list -x`` print.

The simulator keeps these documents themselves as its state (not a model rendered on demand), so what a
driver reads through the simulator's XML-RPC API is byte for byte what the simulator reasons about. Element
names and order follow ``Image::to_xml``, ``Datastore::to_xml``, ``VirtualMachine::to_xml_extended``,
``History::to_xml`` (OpenNebula/one master); template sections are sorted by name as oned's multimap sorts
them, and vector attributes (``DISK``) by key. Values are plain escaped text where oned writes CDATA:
the same characters for any XML parser.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from defusedxml.ElementTree import fromstring

from testbed.one import template as tmpl

IMAGE_STATES = (
    "INIT",
    "READY",
    "USED",
    "DISABLED",
    "LOCKED",
    "ERROR",
    "CLONE",
    "DELETE",
    "USED_PERS",
    "LOCKED_USED",
    "LOCKED_USED_PERS",
)
IMAGE_TYPES = ("OS", "CDROM", "DATABLOCK", "KERNEL", "RAMDISK", "CONTEXT", "BACKUP")
DISK_TYPES = {"FILE": 0, "CDROM": 1, "BLOCK": 2, "RBD": 3}
DATASTORE_TYPES = ("IMAGE_DS", "SYSTEM_DS", "FILE_DS", "BACKUP_DS")
VM_STATES = {
    "INIT": 0,
    "PENDING": 1,
    "HOLD": 2,
    "ACTIVE": 3,
    "STOPPED": 4,
    "SUSPENDED": 5,
    "DONE": 6,
    "POWEROFF": 8,
    "UNDEPLOYED": 9,
    "CLONING": 10,
    "CLONING_FAILURE": 11,
}
LCM_STATES = {
    "LCM_INIT": 0,
    "PROLOG": 1,
    "BOOT": 2,
    "RUNNING": 3,
    "MIGRATE": 4,
    "SAVE_STOP": 5,
    "SAVE_SUSPEND": 6,
    "SAVE_MIGRATE": 7,
    "PROLOG_MIGRATE": 8,
    "PROLOG_RESUME": 9,
    "EPILOG_STOP": 10,
    "EPILOG": 11,
    "SHUTDOWN": 12,
    "CLEANUP_RESUBMIT": 15,
    "UNKNOWN": 16,
    "HOTPLUG": 17,
    "SHUTDOWN_POWEROFF": 18,
    "BOOT_UNKNOWN": 19,
    "BOOT_POWEROFF": 20,
    "BOOT_SUSPENDED": 21,
    "BOOT_STOPPED": 22,
    "CLEANUP_DELETE": 23,
    "HOTPLUG_SNAPSHOT": 24,
    "HOTPLUG_NIC": 25,
    "HOTPLUG_SAVEAS": 26,
    "HOTPLUG_SAVEAS_POWEROFF": 27,
    "HOTPLUG_SAVEAS_SUSPENDED": 28,
    "SHUTDOWN_UNDEPLOY": 29,
    "EPILOG_UNDEPLOY": 30,
    "PROLOG_UNDEPLOY": 31,
    "BOOT_UNDEPLOY": 32,
    "HOTPLUG_PROLOG_POWEROFF": 33,
    "HOTPLUG_EPILOG_POWEROFF": 34,
    "BOOT_MIGRATE": 35,
    "BOOT_FAILURE": 36,
    "BOOT_MIGRATE_FAILURE": 37,
    "PROLOG_MIGRATE_FAILURE": 38,
    "PROLOG_FAILURE": 39,
    "EPILOG_FAILURE": 40,
    "EPILOG_STOP_FAILURE": 41,
    "EPILOG_UNDEPLOY_FAILURE": 42,
    "PROLOG_MIGRATE_POWEROFF": 43,
    "PROLOG_MIGRATE_POWEROFF_FAILURE": 44,
    "PROLOG_MIGRATE_SUSPEND": 45,
    "PROLOG_MIGRATE_SUSPEND_FAILURE": 46,
    "BOOT_UNDEPLOY_FAILURE": 47,
    "BOOT_STOPPED_FAILURE": 48,
    "PROLOG_RESUME_FAILURE": 49,
    "PROLOG_UNDEPLOY_FAILURE": 50,
    "DISK_SNAPSHOT_POWEROFF": 51,
    "DISK_SNAPSHOT_REVERT_POWEROFF": 52,
    "DISK_SNAPSHOT_DELETE_POWEROFF": 53,
    "DISK_SNAPSHOT_SUSPENDED": 54,
    "DISK_SNAPSHOT_REVERT_SUSPENDED": 55,
    "DISK_SNAPSHOT_DELETE_SUSPENDED": 56,
    "DISK_SNAPSHOT": 57,
    "DISK_SNAPSHOT_DELETE": 59,
    "PROLOG_MIGRATE_UNKNOWN": 60,
    "PROLOG_MIGRATE_UNKNOWN_FAILURE": 61,
    "DISK_RESIZE": 62,
    "DISK_RESIZE_POWEROFF": 63,
    "DISK_RESIZE_UNDEPLOYED": 64,
    "HOTPLUG_NIC_POWEROFF": 65,
    "HOTPLUG_RESIZE": 66,
    "HOTPLUG_SAVEAS_UNDEPLOYED": 67,
    "HOTPLUG_SAVEAS_STOPPED": 68,
    "BACKUP": 69,
    "BACKUP_POWEROFF": 70,
    "RESTORE": 71,
}
HOST_MONITORED = 2
ONEADMIN = (0, 0, "oneadmin", "oneadmin")


def log_time() -> str:
    """``one_util::log_time()``: the stamp oned puts in front of ERROR attributes."""
    return time.strftime("%a %b %d %H:%M:%S %Y")


# --------------------------------------------------------------------------------------------------
# Element helpers
# --------------------------------------------------------------------------------------------------


def element(tag: str, text: object = None, children: list[ET.Element] | None = None) -> ET.Element:
    node = ET.Element(tag)
    if text is not None:
        node.text = str(text)
    for child in children or []:
        node.append(child)
    return node


def leaves(**values: object) -> list[ET.Element]:
    """Child elements in keyword order (Python keeps it), the way oned streams them."""
    return [element(tag, value) for tag, value in values.items()]


def parse_xml(text: str | bytes) -> ET.Element:
    root: ET.Element = fromstring(text)
    return root


def to_string(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


def text(root: ET.Element, path: str, default: str = "") -> str:
    node = root.find(path)
    if node is None:
        return default
    return node.text or ""


def set_text(root: ET.Element, path: str, value: object) -> None:
    node = root.find(path)
    if node is None:
        raise KeyError(f"{root.tag} has no {path}")
    node.text = str(value)


def integer(root: ET.Element, path: str, default: int = 0) -> int:
    value = text(root, path)
    try:
        return int(value)
    except ValueError:
        return default


def permissions(owner: str = "110", group: str = "000", other: str = "000") -> ET.Element:
    bits: dict[str, object] = {}
    for who, mask in (("OWNER", owner), ("GROUP", group), ("OTHER", other)):
        for letter, bit in zip("UMA", mask, strict=True):
            bits[f"{who}_{letter}"] = bit
    return element("PERMISSIONS", children=leaves(**bits))


def id_collection(tag: str, ids: list[int]) -> ET.Element:
    return element(tag, children=[element("ID", i) for i in ids])


def collection_ids(root: ET.Element, tag: str) -> list[int]:
    node = root.find(tag)
    return [] if node is None else [int(child.text or "0") for child in node.findall("ID")]


def set_collection(root: ET.Element, tag: str, ids: list[int]) -> None:
    node = root.find(tag)
    if node is None:
        raise KeyError(f"{root.tag} has no {tag}")
    for child in list(node):
        node.remove(child)
    for i in sorted(set(ids)):
        node.append(element("ID", i))


# --------------------------------------------------------------------------------------------------
# Template sections: sorted by attribute name; vectors sorted by key
# --------------------------------------------------------------------------------------------------


def vector_element(name: str, values: dict[str, str]) -> ET.Element:
    return element(name, children=[element(key, values[key]) for key in sorted(values)])


def template_element(tag: str, attributes: list[tmpl.Attribute]) -> ET.Element:
    node = element(tag)
    fill_template(node, attributes)
    return node


def fill_template(node: ET.Element, attributes: list[tmpl.Attribute]) -> None:
    for child in list(node):
        node.remove(child)
    for name, value in sorted(attributes, key=lambda item: item[0]):
        if isinstance(value, dict):
            node.append(vector_element(name, value))
        else:
            node.append(element(name, value))


def template_attributes(node: ET.Element | None) -> list[tmpl.Attribute]:
    if node is None:
        return []
    result: list[tmpl.Attribute] = []
    for child in node:
        if len(child):
            result.append((child.tag, {sub.tag: sub.text or "" for sub in child}))
        else:
            result.append((child.tag, child.text or ""))
    return result


def template_get(node: ET.Element, name: str) -> str:
    for child in node.findall(name):
        if not len(child):
            return child.text or ""
    return ""


def template_set(node: ET.Element, name: str, value: tmpl.Value) -> None:
    """``Template::replace``: drop every attribute called ``name`` and add this one, keeping the order."""
    attributes = [(n, v) for n, v in template_attributes(node) if n != name]
    attributes.append((name, value))
    fill_template(node, attributes)


def vector_get(vector: ET.Element, key: str) -> str:
    return text(vector, key)


def vector_set(vector: ET.Element, key: str, value: object) -> None:
    """``VectorAttribute::replace``: set ``key`` keeping the keys sorted as oned's map does."""
    existing = vector.find(key)
    if existing is not None:
        existing.text = str(value)
        return
    new = element(key, value)
    for index, child in enumerate(list(vector)):
        if child.tag > key:
            vector.insert(index, new)
            return
    vector.append(new)


def vector_remove(vector: ET.Element, key: str) -> None:
    for child in vector.findall(key):
        vector.remove(child)


# --------------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------------


def datastore_document(
    oid: int,
    name: str,
    *,
    ds_mad: str,
    tm_mad: str,
    base_path: str,
    ds_type: int,
    disk_type: int,
    attributes: list[tmpl.Attribute],
) -> ET.Element:
    uid, gid, uname, gname = ONEADMIN
    return element(
        "DATASTORE",
        children=[
            *leaves(ID=oid, UID=uid, GID=gid, UNAME=uname, GNAME=gname, NAME=name),
            permissions("110", "100", "000"),
            *leaves(DS_MAD=ds_mad, TM_MAD=tm_mad, BASE_PATH=base_path, TYPE=ds_type, DISK_TYPE=disk_type),
            *leaves(STATE=0),
            id_collection("CLUSTERS", [0]),
            *leaves(TOTAL_MB=0, FREE_MB=0, USED_MB=0),
            id_collection("IMAGES", []),
            template_element("TEMPLATE", attributes),
        ],
    )


def image_document(
    oid: int,
    name: str,
    *,
    datastore: ET.Element,
    image_type: int = 0,
    persistent: bool = False,
    source: str = "",
    path: str = "",
    image_format: str = "",
    fs: str = "",
    size_mb: int = 0,
    state: int = 4,
    attributes: list[tmpl.Attribute] | None = None,
    cloning_id: int = -1,
) -> ET.Element:
    uid, gid, uname, gname = ONEADMIN
    return element(
        "IMAGE",
        children=[
            *leaves(ID=oid, UID=uid, GID=gid, UNAME=uname, GNAME=gname, NAME=name),
            permissions("110"),
            *leaves(
                TYPE=image_type,
                DISK_TYPE=integer(datastore, "DISK_TYPE"),
                PERSISTENT=int(persistent),
                REGTIME=int(time.time()),
                SOURCE=source,
                PATH=path,
                FORMAT=image_format,
                FS=fs,
                SIZE=size_mb,
                STATE=state,
                PREV_STATE=state,
                RUNNING_VMS=0,
                CLONING_OPS=0,
                CLONING_ID=cloning_id,
                TARGET_SNAPSHOT=-1,
                DATASTORE_ID=text(datastore, "ID"),
                DATASTORE=text(datastore, "NAME"),
            ),
            id_collection("VMS", []),
            id_collection("CLONES", []),
            id_collection("APP_CLONES", []),
            template_element("TEMPLATE", attributes or []),
            snapshots_document(-1, "NO"),
            element("BACKUP_INCREMENTS"),
            id_collection("BACKUP_DISK_IDS", []),
        ],
    )


def snapshots_document(disk_id: int, allow_orphans: str) -> ET.Element:
    """``Snapshots::to_xml``: a template named SNAPSHOTS (hence sorted) with one SNAPSHOT vector each."""
    children = [element("ALLOW_ORPHANS", allow_orphans), element("CURRENT_BASE", -1)]
    if disk_id != -1:
        children.append(element("DISK_ID", disk_id))
    children.append(element("NEXT_SNAPSHOT", 0))
    return element("SNAPSHOTS", children=children)


def history_element(
    vm_id: int, seq: int, *, hostname: str, host_id: int, tm_mad: str, ds_id: int, now: int
) -> ET.Element:
    uid, gid, _, _ = ONEADMIN
    return element(
        "HISTORY",
        children=leaves(
            OID=vm_id,
            SEQ=seq,
            HOSTNAME=hostname,
            HID=host_id,
            CID=0,
            STIME=now,
            ETIME=0,
            VM_MAD="kvm",
            TM_MAD=tm_mad,
            DS_ID=ds_id,
            PSTIME=0,
            PETIME=0,
            RSTIME=0,
            RETIME=0,
            ESTIME=0,
            EETIME=0,
            ACTION=0,
            UID=uid,
            GID=gid,
            REQUEST_ID=-1,
        ),
    )


def vm_document(oid: int, name: str, attributes: list[tmpl.Attribute]) -> ET.Element:
    uid, gid, uname, gname = ONEADMIN
    return element(
        "VM",
        children=[
            *leaves(ID=oid, UID=uid, GID=gid, UNAME=uname, GNAME=gname, NAME=name),
            permissions("110"),
            *leaves(
                LAST_POLL=0,
                STATE=VM_STATES["PENDING"],
                LCM_STATE=LCM_STATES["LCM_INIT"],
                PREV_STATE=VM_STATES["PENDING"],
                PREV_LCM_STATE=LCM_STATES["LCM_INIT"],
                RESCHED=0,
                STIME=int(time.time()),
                ETIME=0,
                DEPLOY_ID="",
            ),
            element("MONITORING"),
            template_element("TEMPLATE", attributes),
            element("USER_TEMPLATE"),
            element("HISTORY_RECORDS"),
        ],
    )


def host_document(oid: int, name: str, vm_ids: list[int]) -> ET.Element:
    share = leaves(
        MEM_USAGE=0,
        CPU_USAGE=0,
        TOTAL_MEM=8388608,
        TOTAL_CPU=800,
        MAX_MEM=8388608,
        MAX_CPU=800,
        RUNNING_VMS=len(vm_ids),
        VMS_THREAD=0,
    )
    attributes: list[tmpl.Attribute] = [
        ("ARCH", "x86_64"),
        ("HOSTNAME", name),
        ("HYPERVISOR", "kvm"),
        ("IM_MAD", "kvm"),
        ("VM_MAD", "kvm"),
    ]
    return element(
        "HOST",
        children=[
            *leaves(ID=oid, NAME=name, STATE=HOST_MONITORED, PREV_STATE=HOST_MONITORED),
            *leaves(IM_MAD="kvm", VM_MAD="kvm", CLUSTER_ID=0, CLUSTER="default"),
            element("HOST_SHARE", children=[*share, element("DATASTORES")]),
            id_collection("VMS", vm_ids),
            template_element("TEMPLATE", attributes),
            element("MONITORING"),
        ],
    )


# --------------------------------------------------------------------------------------------------
# Views handed to tests: plain values plus the document they were read from
# --------------------------------------------------------------------------------------------------


def _single_attributes(node: ET.Element | None) -> dict[str, str]:
    return {name: value for name, value in template_attributes(node) if isinstance(value, str)}


@dataclass(frozen=True)
class Datastore:
    id: int
    name: str
    ds_mad: str
    tm_mad: str
    type: str
    base_path: str
    total_mb: int
    free_mb: int
    used_mb: int
    images: tuple[int, ...]
    template: dict[str, str]
    xml: str = field(repr=False)

    @classmethod
    def from_xml(cls, xml: str) -> Datastore:
        root = parse_xml(xml)
        return cls(
            id=integer(root, "ID"),
            name=text(root, "NAME"),
            ds_mad=text(root, "DS_MAD"),
            tm_mad=text(root, "TM_MAD"),
            type=DATASTORE_TYPES[integer(root, "TYPE")],
            base_path=text(root, "BASE_PATH"),
            total_mb=integer(root, "TOTAL_MB"),
            free_mb=integer(root, "FREE_MB"),
            used_mb=integer(root, "USED_MB"),
            images=tuple(collection_ids(root, "IMAGES")),
            template=_single_attributes(root.find("TEMPLATE")),
            xml=xml,
        )


@dataclass(frozen=True)
class Image:
    id: int
    name: str
    state: str
    type: str
    persistent: bool
    source: str
    path: str
    format: str
    size_mb: int
    datastore_id: int
    running_vms: int
    vms: tuple[int, ...]
    template: dict[str, str]
    xml: str = field(repr=False)

    @property
    def error(self) -> str:
        """The ERROR attribute oned leaves in the template after a failed action ('' if none)."""
        return self.template.get("ERROR", "")

    @classmethod
    def from_xml(cls, xml: str) -> Image:
        root = parse_xml(xml)
        return cls(
            id=integer(root, "ID"),
            name=text(root, "NAME"),
            state=IMAGE_STATES[integer(root, "STATE")],
            type=IMAGE_TYPES[integer(root, "TYPE")],
            persistent=text(root, "PERSISTENT") == "1",
            source=text(root, "SOURCE"),
            path=text(root, "PATH"),
            format=text(root, "FORMAT"),
            size_mb=integer(root, "SIZE"),
            datastore_id=integer(root, "DATASTORE_ID"),
            running_vms=integer(root, "RUNNING_VMS"),
            vms=tuple(collection_ids(root, "VMS")),
            template=_single_attributes(root.find("TEMPLATE")),
            xml=xml,
        )


@dataclass(frozen=True)
class Disk:
    """One DISK vector of a VM; ``disk["SOURCE"]`` reads any attribute ('' when absent)."""

    id: int
    attributes: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.attributes.get(key, "")


@dataclass(frozen=True)
class History:
    seq: int
    hostname: str
    ds_id: int
    tm_mad: str
    prolog_start: int
    """PSTIME: when oned ordered the prolog (it took the deploy), whole seconds since the epoch; 0 before."""
    prolog_end: int
    """PETIME: when the prolog succeeded and oned ordered the boot; 0 before."""


@dataclass(frozen=True)
class VirtualMachine:
    id: int
    name: str
    state: str
    lcm_state: str
    disks: tuple[Disk, ...]
    history: tuple[History, ...]
    user_template: dict[str, str]
    xml: str = field(repr=False)

    @property
    def hostname(self) -> str:
        """The host of the last history record, where the VM is (or last was)."""
        return self.history[-1].hostname if self.history else ""

    @property
    def error(self) -> str:
        return self.user_template.get("ERROR", "")

    def disk(self, disk_id: int) -> Disk:
        for disk in self.disks:
            if disk.id == disk_id:
                return disk
        raise KeyError(f"VM {self.id} has no DISK_ID {disk_id}")

    @classmethod
    def from_xml(cls, xml: str) -> VirtualMachine:
        root = parse_xml(xml)
        state = integer(root, "STATE")
        lcm = integer(root, "LCM_STATE")
        disks = []
        for node in root.findall("TEMPLATE/DISK"):
            attributes = {child.tag: child.text or "" for child in node}
            disks.append(Disk(int(attributes.get("DISK_ID", "-1")), attributes))
        history = tuple(
            History(
                integer(h, "SEQ"),
                text(h, "HOSTNAME"),
                integer(h, "DS_ID"),
                text(h, "TM_MAD"),
                integer(h, "PSTIME"),
                integer(h, "PETIME"),
            )
            for h in root.findall("HISTORY_RECORDS/HISTORY")
        )
        return cls(
            id=integer(root, "ID"),
            name=text(root, "NAME"),
            state=next(name for name, code in VM_STATES.items() if code == state),
            lcm_state=next(name for name, code in LCM_STATES.items() if code == lcm),
            disks=tuple(disks),
            history=history,
            user_template=_single_attributes(root.find("USER_TEMPLATE")),
            xml=xml,
        )


@dataclass(frozen=True)
class DiskSpec:
    """A DISK of a VM template that uses an image, with the options a user may add (genuine oned's)."""

    image: Image | int
    size_mb: int | None = None
    target: str | None = None
    dev_prefix: str | None = None
