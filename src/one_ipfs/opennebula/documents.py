"""What OpenNebula hands the drivers, parsed once into dataclasses: the datastore and marketplace driver
actions (``DS_DRIVER_ACTION_DATA``, ``MARKET_DRIVER_ACTION_DATA``) and the VM, image, datastore and user XML
oned answers over XML-RPC.

All of it carries values users wrote into templates, so it is hostile input: the payload is capped,
base64 is decoded strictly, the XML parser refuses DTDs and entities, and every number is checked
before use. The XML itself is never logged: oned decrypts datastore templates before sending them,
so they may hold credentials.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, replace
from typing import BinaryIO
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_xml  # type: ignore[import-untyped,unused-ignore]
from defusedxml import DefusedXmlException  # type: ignore[import-untyped,unused-ignore]

from one_ipfs.errors import InvalidInput

MAX_PAYLOAD = 16 << 20
MAX_ID = 2**31 - 1
MAX_INCREMENTS = 1024
MAX_SIZE_MB = 1 << 24  # 16 TiB: the most a host deploys (host.inputs.MAX_SIZE_MB)
UNSET = "-1"
# Image TYPE as Image::to_xml writes it (enum Image::ImageType).
IMAGE_TYPES = ("OS", "CDROM", "DATABLOCK", "KERNEL", "RAMDISK", "CONTEXT", "BACKUP")
_UNSIGNED = re.compile(r"[0-9]{1,19}")
_ID_ARGUMENT = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True)
class DatastoreTemplate:
    """A datastore as ``Datastore::to_xml`` writes it; ``attributes`` are its TEMPLATE's simple values."""

    id: int
    name: str
    ds_mad: str
    tm_mad: str
    type: int | None
    base_path: str
    attributes: dict[str, str]


@dataclass(frozen=True)
class ImageTemplate:
    """An image as ``Image::to_xml`` writes it. STAT's minimal IMAGE has only PATH, hence the Nones.

    ``template`` holds the image TEMPLATE's simple values (MD5, SHA1, IPFS_CID, ...).
    """

    id: int | None
    source: str
    path: str
    size_mb: int | None
    format: str
    fs: str
    type: str
    persistent: bool
    cloning_id: int | None
    target_snapshot: int | None
    template: dict[str, str]
    name: str = ""
    datastore_id: int | None = None


@dataclass(frozen=True)
class DsAction:
    """One datastore driver action; ``image`` is None for MONITOR."""

    image: ImageTemplate | None
    datastore: DatastoreTemplate
    raw: Element


@dataclass(frozen=True)
class MarketplaceTemplate:
    """A marketplace as ``MarketPlace::to_xml`` writes it; ``attributes`` are its TEMPLATE's simple values."""

    id: int
    name: str
    market_mad: str
    attributes: dict[str, str]


@dataclass(frozen=True)
class MarketAppTemplate:
    """An app as ``MarketPlaceApp::to_xml`` writes it."""

    id: int
    name: str
    source: str
    md5: str
    size_mb: int | None
    format: str
    description: str
    version: str
    apptemplate64: str


@dataclass(frozen=True)
class ImportInfo:
    """What the image's datastore ``export`` answered, which one_market adds to an IMPORT action."""

    source: str
    md5: str
    size_mb: int | None
    format: str


@dataclass(frozen=True)
class MarketAction:
    """One marketplace driver action; ``app`` is None for MONITOR; ``imported`` and ``datastore`` (the
    image's) are set only for IMPORT."""

    marketplace: MarketplaceTemplate
    app: MarketAppTemplate | None
    imported: ImportInfo | None
    datastore: DatastoreTemplate | None


@dataclass(frozen=True)
class VmDisk:
    """One ``VM/TEMPLATE/DISK``: what a TM action needs to know about the disk it handles."""

    disk_id: int
    image_id: int | None
    source: str
    datastore_id: int | None
    tm_mad: str
    size_mb: int | None
    original_size_mb: int | None
    format: str
    persistent: bool
    clone: bool
    type: str
    snapshot_ids: tuple[int, ...] = ()
    """The disk's snapshots oned knows (``VM/SNAPSHOTS[DISK_ID]/SNAPSHOT/ID``)."""


@dataclass(frozen=True)
class VmHistory:
    """The VM's last history record: the host it is (or was last) on and its system datastore."""

    hostname: str
    datastore_id: int


@dataclass(frozen=True)
class VmTemplate:
    """A VM as ``onevm show -x`` prints it, reduced to what the transfer driver uses."""

    id: int
    state: int
    lcm_state: int
    disks: list[VmDisk]
    history: VmHistory | None
    deploy_id: str = ""
    """The hypervisor's name for the running VM (libvirt's domain), empty before the first deploy."""


@dataclass(frozen=True)
class BackupRequest:
    """What a backup datastore's ``backup`` needs of the VM oned sends with it (``VM/BACKUPS``)."""

    vm_id: int
    mode: str
    """``FULL`` or ``INCREMENT`` as the VM's BACKUP_CONFIG says (empty: OpenNebula's default, FULL)."""
    last_bridge: str


@dataclass(frozen=True)
class RestoreRequest:
    """What ``oneimage restore`` asked for, beside the backup image: where the disks go and as whom."""

    destination_datastore: int
    username: str
    name: str
    disk_id: int | None


@dataclass(frozen=True)
class BackupIncrements:
    """A backup image's increments as oned records them (``BACKUP_INCREMENTS``), oldest first, each
    ``(increment id, SOURCE)``; a backup taken in FULL mode is the one increment 0, the image's SOURCE."""

    sources: tuple[tuple[int, str], ...]
    keep_last: int
    """What ``increment_flatten`` keeps (``EXTRA_DATA/KEEP_LAST``; 0 in other actions)."""
    restore_up_to: int | None
    """The last increment a restore asked for (``TEMPLATE/INCREMENT_ID``); None: the whole chain."""


@dataclass(frozen=True)
class BackedUpVm:
    """The VM as its backup's ``vm.xml`` holds it: what a restore makes images and a template of."""

    id: int
    name: str
    disk_ids: tuple[int, ...]
    capacity: dict[str, str]
    """CPU, VCPU and MEMORY as the VM had them (those it had)."""


def backup_request(action: DsAction) -> BackupRequest:
    vm = action.raw.find("VM")
    if vm is None:
        raise InvalidInput("the backup action carries no VM")
    return BackupRequest(
        vm_id=_required(vm, "ID"),
        mode=_text(vm, "BACKUPS/BACKUP_CONFIG/MODE").upper(),
        last_bridge=_text(vm, "BACKUPS/BACKUP_CONFIG/LAST_BRIDGE"),
    )


def restore_request(action: DsAction) -> RestoreRequest:
    destination = _number(action.raw, "DESTINATION_DS_ID")
    if destination is None:
        raise InvalidInput("the restore action names no DESTINATION_DS_ID")
    return RestoreRequest(
        destination_datastore=destination,
        username=_text(action.raw, "TEMPLATE/USERNAME"),
        name=_text(action.raw, "TEMPLATE/NAME"),
        disk_id=_number(action.raw, "TEMPLATE/DISK_ID", unset=UNSET),
    )


def backup_increments(action: DsAction) -> BackupIncrements:
    image = action.raw.find("IMAGE")
    if image is None:
        raise InvalidInput("the driver action carries no IMAGE")
    sources = [
        (_required(increment, "ID"), _text(increment, "SOURCE"))
        for increment in image.findall("BACKUP_INCREMENTS/INCREMENT")[: MAX_INCREMENTS + 1]
    ] or [(0, _text(image, "SOURCE"))]
    if len(sources) > MAX_INCREMENTS:
        raise InvalidInput(f"a backup of more than {MAX_INCREMENTS} increments is not one oned keeps")
    ids = [increment_id for increment_id, _ in sources]
    if ids != sorted(set(ids)):
        raise InvalidInput(f"the backup's increments are not listed oldest first, each once: {ids[:20]}")
    return BackupIncrements(
        sources=tuple(sources),
        keep_last=_number(action.raw, "EXTRA_DATA/KEEP_LAST") or 0,
        restore_up_to=_number(action.raw, "TEMPLATE/INCREMENT_ID", unset=UNSET),
    )


def parse_backed_up_vm(xml: bytes | str) -> BackedUpVm:
    """Parse a backup's ``vm.xml`` once decoded (prebackup writes the VM's XML base64-encoded)."""
    vm = _parse_xml(xml, "VM")
    disk_ids = (_required(disk, "DISK_ID") for disk in vm.findall("TEMPLATE/DISK"))
    capacity = {
        name: _text(vm, f"TEMPLATE/{name}")
        for name in ("CPU", "VCPU", "MEMORY")
        if _text(vm, f"TEMPLATE/{name}")
    }
    return BackedUpVm(_required(vm, "ID"), _text(vm, "NAME"), tuple(sorted(disk_ids)), capacity)


def read_ds_action(argv: list[str], stdin: BinaryIO) -> tuple[DsAction, str]:
    """The action and the id argument, in either calling convention of the DS driver manager.

    OpenNebula >= 6.8 runs ``<action> <id>`` with the base64 action on stdin; older releases ran
    ``<action> <base64> <id>`` and left stdin alone, so it is only read in the first case.
    """
    xml, object_id = _read_payload(argv, stdin)
    return parse_ds_action(xml), object_id


def read_market_action(argv: list[str], stdin: BinaryIO) -> MarketAction:
    """A marketplace action: one_market runs ``<action> <base64> <id>`` (both versions), the datastore's
    calling convention of old, so either is taken."""
    xml, _ = _read_payload(argv, stdin)
    return parse_market_action(xml)


def parse_market_action(xml: bytes | str) -> MarketAction:
    """Parse a decoded ``MARKET_DRIVER_ACTION_DATA`` document."""
    root = _parse_xml(xml, "MARKET_DRIVER_ACTION_DATA")
    market = root.find("MARKETPLACE")
    if market is None:
        raise InvalidInput("the marketplace action has no MARKETPLACE")
    app = root.find("MARKETPLACEAPP")
    datastore = root.find("DATASTORE")
    imported = None
    if root.find("IMPORT_SOURCE") is not None:
        imported = ImportInfo(
            source=_text(root, "IMPORT_SOURCE"),
            md5=_text(root, "MD5"),
            size_mb=_number(root, "SIZE", MAX_SIZE_MB),
            format=_text(root, "FORMAT"),
        )
    return MarketAction(
        marketplace=MarketplaceTemplate(
            id=_required(market, "ID"),
            name=_text(market, "NAME"),
            market_mad=_text(market, "MARKET_MAD"),
            attributes=_attributes(market.find("TEMPLATE")),
        ),
        app=None if app is None else _app(app),
        imported=imported,
        datastore=None if datastore is None else _datastore(datastore),
    )


def _read_payload(argv: list[str], stdin: BinaryIO) -> tuple[bytes, str]:
    """The decoded XML and the object id, from stdin or from the first argument."""
    if len(argv) == 1:
        object_id, where = argv[0], "on stdin"
        encoded = stdin.read(MAX_PAYLOAD + 1)
    elif len(argv) == 2:
        object_id, where = argv[1], "in the first argument"
        encoded = os.fsencode(argv[0])
    else:
        raise InvalidInput(
            "expected the object id with the base64 driver action on stdin (OpenNebula 6.8 and later) "
            f"or the base64 driver action and the object id as arguments, got {len(argv)} arguments"
        )
    if not _ID_ARGUMENT.fullmatch(object_id):
        raise InvalidInput(f"the object id must be a non-negative whole number, not {_shown(object_id)}")
    return _decode_base64(encoded, where), object_id


def parse_ds_action(xml: bytes | str) -> DsAction:
    """Parse a decoded ``DS_DRIVER_ACTION_DATA`` document (backup drivers get it in plain XML)."""
    root = _parse_xml(xml, "DS_DRIVER_ACTION_DATA")
    datastore = root.find("DATASTORE")
    if datastore is None:
        raise InvalidInput("the driver action has no DATASTORE")
    image = root.find("IMAGE")
    return DsAction(None if image is None else _image(image), _datastore(datastore), root)


def parse_image_xml(xml: bytes | str) -> ImageTemplate:
    """Parse ``one.image.info``'s answer (what ``oneimage show -x`` prints)."""
    return _image(_parse_xml(xml, "IMAGE"))


def parse_datastore_xml(xml: bytes | str) -> DatastoreTemplate:
    """Parse ``one.datastore.info``'s answer (what ``onedatastore show -x`` prints)."""
    return _datastore(_parse_xml(xml, "DATASTORE"))


def parse_image_pool(xml: bytes | str) -> list[ImageTemplate]:
    """Parse ``one.imagepool.info``'s answer (what ``oneimage list -x`` prints)."""
    return [_image(image) for image in _parse_xml(xml, "IMAGE_POOL").findall("IMAGE")]


def parse_datastore_pool(xml: bytes | str) -> list[DatastoreTemplate]:
    """Parse ``one.datastorepool.info``'s answer (what ``onedatastore list -x`` prints)."""
    return [_datastore(datastore) for datastore in _parse_xml(xml, "DATASTORE_POOL").findall("DATASTORE")]


def parse_host_names(xml: bytes | str) -> list[str]:
    """Each host's name, from ``one.hostpool.info``'s answer (what ``onehost list -x`` prints)."""
    return [name for host in _parse_xml(xml, "HOST_POOL").findall("HOST") if (name := _text(host, "NAME"))]


def parse_user_ids(xml: bytes | str) -> dict[str, int]:
    """Each user's ID by name, from ``one.userpool.info``'s answer."""
    users = _parse_xml(xml, "USER_POOL").findall("USER")
    return {_text(user, "NAME"): _required(user, "ID") for user in users}


def parse_vm_xml(xml: bytes | str) -> VmTemplate:
    """Parse ``one.vm.info``'s answer (what ``onevm show -x`` prints; also what live-migration steps get
    base64-encoded on stdin)."""
    vm = _parse_xml(xml, "VM")
    records = vm.findall("HISTORY_RECORDS/HISTORY")
    history = None
    if records:
        last = records[-1]
        history = VmHistory(_text(last, "HOSTNAME"), _required(last, "DS_ID"))
    return VmTemplate(
        id=_required(vm, "ID"),
        state=_required(vm, "STATE"),
        lcm_state=_required(vm, "LCM_STATE"),
        disks=[_with_snapshots(_disk(disk), vm) for disk in vm.findall("TEMPLATE/DISK")],
        history=history,
        deploy_id=_text(vm, "DEPLOY_ID"),
    )


def _shown(text: str) -> str:
    return ascii(text[:40]) + ("..." if len(text) > 40 else "")


def _decode_base64(encoded: bytes, where: str) -> bytes:
    if len(encoded) > MAX_PAYLOAD:
        raise InvalidInput(f"the driver action {where} is larger than {MAX_PAYLOAD >> 20} MiB")
    compact = b"".join(encoded.split())
    if not compact:
        raise InvalidInput(f"no driver action {where}: OpenNebula sends it base64-encoded")
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error:
        raise InvalidInput(f"the driver action {where} is not valid base64") from None


def _parse_xml(xml: bytes | str, root_tag: str) -> Element:
    if len(xml) > MAX_PAYLOAD:
        raise InvalidInput(f"the {root_tag} document is larger than {MAX_PAYLOAD >> 20} MiB")
    try:
        root: Element = safe_xml.fromstring(xml, forbid_dtd=True)
    except DefusedXmlException:
        raise InvalidInput(f"the {root_tag} document declares a DTD or entities, which are refused") from None
    except ParseError as exc:
        raise InvalidInput(f"the {root_tag} document is not well-formed XML: {exc}") from None
    if root.tag != root_tag:
        raise InvalidInput(f"expected a {root_tag} document, got {_shown(str(root.tag))}")
    return root


def _text(element: Element, tag: str) -> str:
    child = element.find(tag)
    return "" if child is None or child.text is None else child.text


def _number(element: Element, tag: str, maximum: int = MAX_ID, unset: str = "") -> int | None:
    """A non-negative integer, or None when absent, empty or the ``unset`` marker OpenNebula uses."""
    text = _text(element, tag)
    if text in ("", unset):
        return None
    if not _UNSIGNED.fullmatch(text) or int(text) > maximum:
        raise InvalidInput(
            f"{element.tag}/{tag} must be a whole number from 0 to {maximum}, not {_shown(text)}"
        )
    return int(text)


def _required(element: Element, tag: str) -> int:
    value = _number(element, tag)
    if value is None:
        raise InvalidInput(f"{element.tag} has no {tag}")
    return value


def _flag(element: Element, tag: str) -> bool:
    """OpenNebula writes booleans as ``1``/``0`` in object XML and ``YES``/``NO`` in templates."""
    text = _text(element, tag).upper()
    if text in ("1", "YES"):
        return True
    if text in ("", "0", "NO"):
        return False
    raise InvalidInput(f"{element.tag}/{tag} must be YES or NO, not {_shown(text)}")


def _attributes(template: Element | None) -> dict[str, str]:
    """The simple attributes of a TEMPLATE; vector attributes are skipped, the first of a name wins."""
    attributes: dict[str, str] = {}
    if template is not None:
        for child in template:
            if not len(child):
                attributes.setdefault(str(child.tag).upper(), child.text or "")
    return attributes


def _image_type(text: str) -> str:
    if text.upper() in IMAGE_TYPES or not text:
        return text.upper()
    if not _UNSIGNED.fullmatch(text):
        raise InvalidInput(
            f"IMAGE/TYPE must be a number or one of {', '.join(IMAGE_TYPES)}, not {_shown(text)}"
        )
    number = int(text)
    return IMAGE_TYPES[number] if number < len(IMAGE_TYPES) else str(number)


def _datastore(element: Element) -> DatastoreTemplate:
    return DatastoreTemplate(
        id=_required(element, "ID"),
        name=_text(element, "NAME"),
        ds_mad=_text(element, "DS_MAD"),
        tm_mad=_text(element, "TM_MAD"),
        type=_number(element, "TYPE"),
        base_path=_text(element, "BASE_PATH"),
        attributes=_attributes(element.find("TEMPLATE")),
    )


def _image(element: Element) -> ImageTemplate:
    return ImageTemplate(
        id=_number(element, "ID"),
        source=_text(element, "SOURCE"),
        path=_text(element, "PATH"),
        size_mb=_number(element, "SIZE", MAX_SIZE_MB),
        format=_text(element, "FORMAT"),
        fs=_text(element, "FS"),
        type=_image_type(_text(element, "TYPE")),
        persistent=_flag(element, "PERSISTENT"),
        cloning_id=_number(element, "CLONING_ID", unset=UNSET),
        target_snapshot=_number(element, "TARGET_SNAPSHOT", unset=UNSET),
        template=_attributes(element.find("TEMPLATE")),
        name=_text(element, "NAME"),
        datastore_id=_number(element, "DATASTORE_ID"),
    )


def _with_snapshots(disk: VmDisk, vm: Element) -> VmDisk:
    for snapshots in vm.findall("SNAPSHOTS"):
        if _number(snapshots, "DISK_ID") == disk.disk_id:
            found = (_number(snapshot, "ID") for snapshot in snapshots.findall("SNAPSHOT"))
            return replace(disk, snapshot_ids=tuple(sorted(i for i in found if i is not None)))
    return disk


def _app(element: Element) -> MarketAppTemplate:
    return MarketAppTemplate(
        id=_required(element, "ID"),
        name=_text(element, "NAME"),
        source=_text(element, "SOURCE"),
        md5=_text(element, "MD5"),
        size_mb=_number(element, "SIZE", MAX_SIZE_MB),
        format=_text(element, "FORMAT"),
        description=_text(element, "DESCRIPTION"),
        version=_text(element, "VERSION"),
        apptemplate64=_text(element, "APPTEMPLATE64"),
    )


def _disk(element: Element) -> VmDisk:
    return VmDisk(
        disk_id=_required(element, "DISK_ID"),
        image_id=_number(element, "IMAGE_ID"),
        source=_text(element, "SOURCE"),
        datastore_id=_number(element, "DATASTORE_ID"),
        tm_mad=_text(element, "TM_MAD"),
        size_mb=_number(element, "SIZE", MAX_SIZE_MB),
        original_size_mb=_number(element, "ORIGINAL_SIZE", MAX_SIZE_MB),
        format=_text(element, "FORMAT"),
        persistent=_flag(element, "PERSISTENT"),
        clone=_flag(element, "CLONE"),
        type=_text(element, "TYPE"),
    )
