"""The transfer driver (TM_MAD ``ipfs``): one function per action in oned's transfer files, and the table.

Actions run on the frontend with oned's argument lists; whatever touches a disk runs on its host
through the channel to the hosts (``hosts``), and whatever touches an image's recorded content goes
through the image store the datastore driver holds its content in (``image_store``), so a saved disk is
a new version of the image held exactly like an imported one.
"""

from __future__ import annotations

import base64
import binascii
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from one_ipfs import image_store
from one_ipfs.config import DatastoreConfig, load_config, read_defaults, remotes_dir
from one_ipfs.defaults import HOST_CALL_SLACK
from one_ipfs.errors import ImmutableImage, InvalidInput, NotSupported, OneIpfsError, StorageError
from one_ipfs.host import protocol
from one_ipfs.hosts import calls as hosts
from one_ipfs.hosts.calls import host_cache, host_node
from one_ipfs.images import ImageHandle, ImageSnapshots, ImageVersions
from one_ipfs.ipfs.paths import parse_ipfs_path
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.documents import ImageTemplate, VmDisk, parse_vm_xml, read_ds_action
from one_ipfs.opennebula.location import Location, disk_id_of
from one_ipfs.opennebula.output import dispatch, log_info

SUFFIXES = ("ssh", "shared", "local", "qcow2", "fs_lvm", "fs_lvm_ssh")
# System datastores whose hosts report disk sizes themselves, from a ``.monitor`` marker.
LOCALLY_MONITORED = ("ssh", "local")
MAX_VM_XML = 16 << 20
DISK_FORMATS = ("raw", "qcow2")
GONE_STATES = (4, 6, 9)
"""VM states (STOPPED, DONE, UNDEPLOYED) whose disks are on no host, whatever the last host was."""
HOTPLUG_RESIZE = 62
"""The LCM state of a running VM while one of its disks grows."""
Awaited = TypeVar("Awaited", protocol.Deployed, protocol.Stored, protocol.Removed)
"""The results that list the VMs whose announced disks have not arrived."""


@dataclass(frozen=True)
class TmCall:
    """One transfer-file line as the action sees it: its arguments, its stdin, and the system
    datastore's driver that the action name's suffix (``clone.ssh``) tells."""

    args: list[str]
    stdin: BinaryIO
    system_tm: str = ""


@dataclass(frozen=True)
class DiskRequest:
    """What a deploy-time action (clone, ln) knows: where the image is and where the disk goes."""

    source: str
    disk: Location
    vm_id: int
    datastore_id: int


def integer_argument(value: str, what: str) -> int:
    """An id or size oned sent as a word: digits only, refused as one line before anything is asked."""
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise InvalidInput(f"{what} must be a non-negative integer, not {value[:40]!r}")
    return int(value)


def _snapshot_id(value: str) -> int:
    return -1 if value == "-1" else integer_argument(value, "the snapshot id")


def arguments(args: list[str], count: int, usage: str) -> list[str]:
    """oned's argument list for an action, refused whole (one line naming the usage) when it has not
    ``count`` words."""
    if len(args) != count:
        raise InvalidInput(f"expected {count} arguments ({usage}), got {len(args)}")
    return args


def _source_of(text: str) -> str:
    """oned prefixes ``<frontend>:`` to a SOURCE without a colon; drop it to get SOURCE back."""
    return text.split(":", 1)[1] if ":" in text else text


def datastore_config(datastore_id: int) -> DatastoreConfig:
    """The IPFS settings of a datastore, from oned's template of it over ``ipfs.conf``'s defaults."""
    return load_config(oned.show_datastore(datastore_id).attributes)


def _disk_id(location: Location) -> int:
    disk_id = disk_id_of(location.path)
    if disk_id is None:
        raise InvalidInput(f"{location.path[:200]} is not a VM disk path (…/<vmid>/disk.<n>)")
    return disk_id


def _disk(vm_id: int, location: Location) -> VmDisk:
    disk_id = _disk_id(location)
    for disk in oned.show_vm(vm_id).disks:
        if disk.disk_id == disk_id:
            return disk
    raise InvalidInput(f"VM {vm_id} has no disk {disk_id}")


def _host_timeout(config: DatastoreConfig) -> float:
    return config.transfer_timeout + HOST_CALL_SLACK


def _deploy_facts(request: DiskRequest) -> tuple[DatastoreConfig, VmDisk, image_store.Content]:
    """The datastore's settings, the VM's disk and the image's content, asked at once: each is a
    request to oned of its own, and a deploy should not wait for them one after the other."""
    handle = ImageHandle.parse(request.source)
    with ThreadPoolExecutor(max_workers=3) as pool:
        config = pool.submit(datastore_config, request.datastore_id)
        disk = pool.submit(_disk, request.vm_id, request.disk)
        if handle is not None:
            held = pool.submit(image_store.recorded_content, handle)
        else:
            held = pool.submit(lambda: image_store.current_content(request.source, config.result()))
        return config.result(), disk.result(), held.result()


def _formats(held: image_store.Content, disk: VmDisk) -> tuple[str | None, str | None]:
    """The formats a host deploys with: what the content's bytes are, and what oned tells the hypervisor
    the disk is (DISK/DRIVER, forced to the image's FORMAT), which the disk file must be."""
    asked = disk.format if disk.format in DISK_FORMATS else None
    return (held.format if held.format in DISK_FORMATS else asked), asked


def _deploy_mode(config: DatastoreConfig, disk: VmDisk) -> str:
    """The datastore's IPFS_DEPLOY_MODE, but an overlay is a qcow2 file: a disk oned calls raw (a raw
    datablock, an image registered before OVERLAY datastores announced qcow2) is deployed as a copy."""
    return "overlay" if config.deploy_mode == "OVERLAY" and disk.format in ("qcow2", "") else "copy"


def _fetch(request: DiskRequest, *, mode: str | None, system_tm: str) -> None:
    """Deploy the disk; ``mode`` None takes the datastore's IPFS_DEPLOY_MODE (``_deploy_mode``)."""
    config, disk, held = _deploy_facts(request)
    mode = mode or _deploy_mode(config, disk)
    log_info(f"deploying {held.cid} to {request.disk.host}:{request.disk.path}")
    fetch_on_host(
        request,
        request.disk.path,
        config,
        cid=held.cid,
        size_mb=max(disk.size_mb or 0, disk.original_size_mb or 0),
        formats=_formats(held, disk),
        mode=mode,
        monitor_tm=(system_tm or "ssh") if system_tm in ("", *LOCALLY_MONITORED) else None,
    )
    _fetch_snapshots(request, disk, held, config)


def fetch_on_host(
    request: DiskRequest,
    path: str,
    config: DatastoreConfig,
    *,
    cid: str,
    formats: tuple[str | None, str | None],
    mode: str,
    size_mb: int = 0,
    monitor_tm: str | None = None,
) -> None:
    """The host's ``fetch`` of content into ``path`` (the disk, or a snapshot of it) for the request's VM."""
    fetch = protocol.Fetch(
        cid=cid,
        disk=Path(path),
        mode=mode,
        format=formats[0],
        disk_format=formats[1],
        size_mb=size_mb,
        monitor_tm=monitor_tm,
        vm=request.vm_id,
        node=host_node(config),
        timeout=config.transfer_timeout,
        stall_timeout=config.stall_timeout,
        cache=host_cache(config),
    )
    _on_host(request.disk.host, fetch, config, request.vm_id)


def _fetch_snapshots(
    request: DiskRequest, disk: VmDisk, held: image_store.Content, config: DatastoreConfig
) -> None:
    """The snapshots oned lists for a disk it deploys (those a save-back recorded in its persistent image)
    are fetched beside it, as copies, from what that save-back added (``_save_snapshots``)."""
    handle = ImageHandle.parse(request.source)
    if handle is None or not disk.snapshot_ids:
        return
    recorded = ImageSnapshots.from_template(oned.show_image(handle.image_id).template)
    for snapshot_id in disk.snapshot_ids:
        cid = recorded.cid(snapshot_id)
        if cid is None:
            log_info(
                f"snapshot {snapshot_id} of image {handle.image_id} was never saved to IPFS: not deployed"
            )
            continue
        path = f"{request.disk.path}.snap/{snapshot_id}"
        formats = _formats(image_store.Content(cid, held.format), disk)
        fetch_on_host(request, path, config, cid=cid, formats=formats, mode="copy")


def _deploy_request(args: list[str]) -> DiskRequest:
    source, disk, vm_id, ds_id = arguments(args, 4, "fe:SOURCE host:remote_system_ds/disk.i vmid dsid")
    request = DiskRequest(
        _source_of(source),
        Location.parse(disk),
        integer_argument(vm_id, "the VM id"),
        integer_argument(ds_id, "the datastore id"),
    )
    if ImageHandle.parse(request.source) is None:
        parse_ipfs_path(request.source)
    return request


def clone(call: TmCall) -> None:
    """Non-persistent disk: the host's node fetches the image and writes a private, sparse copy."""
    _fetch(_deploy_request(call.args), mode=None, system_tm=call.system_tm)


def ln(call: TmCall) -> None:
    """Persistent disk: like clone, but only images this driver created can take changes back."""
    request = _deploy_request(call.args)
    if ImageHandle.parse(request.source) is None:
        raise ImmutableImage(
            f"{request.source[:200]} names fixed IPFS content and cannot be a persistent disk: "
            "import it with a PATH (oneimage create --path) or clone it to get an image that can be saved"
        )
    _fetch(request, mode="copy", system_tm=call.system_tm)


Parked = Mapping[str, tuple[str, int, str]]
"""Disk files a system datastore put into IPFS (``transfer.system``): path -> (CID, size, format)."""


def _save(
    disk: Location,
    target_source: str,
    vm_id: int,
    datastore_id: int,
    snapshot_id: int,
    *,
    parked: Parked | None = None,
) -> None:
    """Add a disk on its host (or take its ``parked`` CID), pin it on the datastore's node, then record
    it as the image's next version."""
    handle = ImageHandle.parse(target_source)
    if handle is None:
        raise ImmutableImage(
            f"{target_source[:200]} names fixed IPFS content: a disk cannot be saved into it"
        )
    config = datastore_config(datastore_id)
    image = oned.show_image(handle.image_id)
    versions = ImageVersions.from_template(image.template)
    vm_disk = _disk(vm_id, disk)
    saved_format = _saved_format(image, vm_disk)
    path = disk.path if snapshot_id < 0 else f"{disk.path}.snap/{snapshot_id}"
    cid, saved = _added(
        disk.host, path, saved_format=saved_format, vm_disk=vm_disk, vm_id=vm_id, config=config, parked=parked
    )
    if versions.current_cid == cid:
        log_info(f"disk {disk.path} is unchanged ({cid}): image {handle.image_id} keeps its current version")
        return
    updated = versions.with_version(cid)
    number = updated.entries[-1][0]
    log_info(f"pinning {cid} from {disk.host} on the datastore's node as version {number}")
    image_store.hold(cid, handle.hold_name(number), config, total_bytes=saved or None)
    try:
        oned.update_image(
            handle.image_id,
            {
                **updated.attributes(),
                **image_store.import_attributes(config),
                **image_store.format_attributes(saved_format),
            },
        )
    except Exception:
        image_store.release(cid, handle.hold_name(number), config)
        raise
    log_info(f"image {handle.image_id} is now version {number}: {cid}")


def _added(
    host: str,
    path: str,
    *,
    saved_format: str,
    vm_disk: VmDisk,
    vm_id: int,
    config: DatastoreConfig,
    parked: Parked | None,
) -> tuple[str, int]:
    """(CID, size) of a disk file as ``saved_format``: added on its host, or as an ipfs system datastore
    parked it."""
    if parked is None:
        return add_on_host(
            host, path, saved_format=saved_format, disk_format=_driver(vm_disk), vm_id=vm_id, config=config
        )
    if path not in parked:
        raise StorageError(f"{path[:200]} is not in its VM folder's manifest: it was never put into IPFS")
    cid, size, stored_format = parked[path]
    if stored_format != saved_format:
        raise NotSupported(
            f"{path[:200]} is {stored_format} in IPFS, its image {saved_format}: resume the VM to save it"
        )
    return cid, size


def _driver(disk: VmDisk) -> str | None:
    """The format oned tells the hypervisor a disk is, if it is one a disk file can be."""
    return disk.format if disk.format in DISK_FORMATS else None


def add_on_host(
    host: str, path: str, *, saved_format: str, disk_format: str | None, vm_id: int, config: DatastoreConfig
) -> tuple[str, int]:
    """(CID, size) of a disk file (or a snapshot of one) added to its host's node as ``saved_format``;
    ``disk_format`` is what the file is where no deploy on that host recorded it."""
    save = protocol.Save(
        disk=Path(path),
        format=saved_format,
        disk_format=disk_format,
        settings=config.import_settings,
        vm=vm_id,
        node=host_node(config),
        timeout=config.transfer_timeout,
    )
    saved = _on_host(host, save, config, vm_id)
    return saved.cid, saved.size


def _save_snapshots(
    disk: Location, source: str, vm_id: int, datastore_id: int, parked: Parked | None = None
) -> None:
    """A persistent disk's snapshots go into IPFS with it: oned records them in the image at save-back
    and lists them in the next VM's disk, which ``_fetch_snapshots`` then puts beside it."""
    handle = ImageHandle.parse(source)
    if handle is None:
        return
    vm_disk = _disk(vm_id, disk)
    image = oned.show_image(handle.image_id)
    before = ImageSnapshots.from_template(image.template)
    if not vm_disk.snapshot_ids and not before.entries:
        return
    config = datastore_config(datastore_id)
    saved_format = _saved_format(image, vm_disk)
    entries = []
    for snapshot_id in vm_disk.snapshot_ids:
        path = f"{disk.path}.snap/{snapshot_id}"
        cid, size = _added(
            disk.host,
            path,
            saved_format=saved_format,
            vm_disk=vm_disk,
            vm_id=vm_id,
            config=config,
            parked=parked,
        )
        image_store.hold(cid, handle.snapshot_hold_name(snapshot_id), config, total_bytes=size or None)
        entries.append((snapshot_id, cid))
    oned.update_image(handle.image_id, ImageSnapshots(tuple(entries)).attributes())
    for snapshot_id, cid in before.entries:
        if (snapshot_id, cid) not in entries:
            image_store.release(cid, handle.snapshot_hold_name(snapshot_id), config)
    log_info(f"image {handle.image_id} keeps {len(entries)} disk snapshot(s) in IPFS")


def _saved_format(image: ImageTemplate, disk: VmDisk) -> str:
    """The format the saved content gets: the one the image's content has, or for a save-as
    placeholder the disk's, which oned makes the new image's FORMAT."""
    stored = image_store.stored_format(image)
    if stored in DISK_FORMATS:
        return stored
    return disk.format if disk.format in DISK_FORMATS else "raw"


def mvds(call: TmCall) -> None:
    """Save a persistent disk back into its image as a new version; the previous one stays intact."""
    disk, source, vm_id, ds_id = arguments(call.args, 4, "host:remote_system_ds/disk.i SOURCE vmid dsid")
    location, vm, datastore_id = (
        Location.parse(disk),
        integer_argument(vm_id, "the VM id"),
        integer_argument(ds_id, "the datastore id"),
    )
    save_back(location, source, vm, datastore_id)


def save_back(
    location: Location, source: str, vm: int, datastore_id: int, parked: Parked | None = None
) -> None:
    """A persistent disk and its snapshots become the image's next version."""
    _save(location, source, vm, datastore_id, -1, parked=parked)
    _save_snapshots(location, source, vm, datastore_id, parked)


def cpds(call: TmCall) -> None:
    """Save-as: the disk (or one of its snapshots) becomes the content of the image mkfs created."""
    disk, source, snap_id, vm_id, ds_id = arguments(
        call.args, 5, "host:remote_system_ds/disk.i SOURCE snap_id vmid dsid"
    )
    _save(
        Location.parse(disk),
        source,
        integer_argument(vm_id, "the VM id"),
        integer_argument(ds_id, "the datastore id"),
        _snapshot_id(snap_id),
    )


def delete(call: TmCall) -> None:
    """Remove a disk (or a VM folder) from its host and release its use of the host's cache."""
    target, vm_id, ds_id = arguments(call.args, 3, "host:remote_system_ds[/disk.i] vmid dsid")
    location = Location.parse(target)
    vm = integer_argument(vm_id, "the VM id")
    delete_on_host(location, vm, datastore_config(integer_argument(ds_id, "the datastore id")))


def delete_on_host(location: Location, vm: int, config: DatastoreConfig) -> None:
    """Remove a disk or a VM folder from its host; the host releases their uses of its cache (its
    node keeps the blocks until its cache is trimmed, so a later fetch there moves next to nothing)."""
    node, path, cache = host_node(config), Path(location.path), host_cache(config)
    removal: protocol.DeleteDisk | protocol.DeleteFolder = (
        protocol.DeleteDisk(disk=path, vm=vm, node=node, cache=cache)
        if disk_id_of(location.path) is not None
        else protocol.DeleteFolder(dir=path, node=node, cache=cache)
    )
    _on_host(location.host, removal, config, vm)


def mv(call: TmCall) -> None:
    """Stop, undeploy, resume, cold migrate: the system datastore moves the folder; an overlay's base
    is fetched on the target from IPFS rather than carried from the source host."""
    source, target, vm_id, ds_id = arguments(
        call.args, 4, "src_host:dir[/disk.i] dst_host:dir[/disk.i] vmid dsid"
    )
    src, dst = Location.parse(source), Location.parse(target)
    vm, datastore_id = integer_argument(vm_id, "the VM id"), integer_argument(ds_id, "the datastore id")
    if disk_id_of(dst.path) is None or src.host == dst.host:
        return
    config = datastore_config(datastore_id)
    if config.deploy_mode != "OVERLAY" or is_frontend(dst.host):
        return
    disk = _disk(vm, dst)
    if _deploy_mode(config, disk) == "overlay":
        _prefetch(dst.host, dst.path, disk, vm, config)


def is_frontend(host: str) -> bool:
    """oned names the frontend by its hostname in MV lines to and from it (stop, undeploy, resume)."""
    return host in ("localhost", socket.gethostname(), socket.getfqdn())


def _prefetch(host: str, path: str, disk: VmDisk, vm_id: int, config: DatastoreConfig) -> None:
    """Have ``host`` hold what the disk at ``path`` is made of before the disk itself arrives."""
    if not disk.source:
        return
    held = image_store.current_content(disk.source, config)
    prefetch = protocol.Prefetch(
        cid=held.cid,
        disk=Path(path),
        format=_formats(held, disk)[0],
        mode=_deploy_mode(config, disk),
        vm=vm_id,
        node=host_node(config),
        timeout=config.transfer_timeout,
        stall_timeout=config.stall_timeout,
    )
    _on_host(host, prefetch, config, vm_id)


@dataclass(frozen=True)
class MigrationStep:
    """A live-migration step: 5 arguments (6 when another driver forwards it) and the base64 VM."""

    source_host: str
    target_host: str
    vm_dir: str
    vm_id: int
    datastore_id: int
    disks: list[VmDisk]
    forwarded_by: str
    """The system datastore's TM that forwarded the step (its sixth argument); empty when oned's VMM ran
    this driver as the system datastore's own TM."""

    @classmethod
    def parse(cls, call: TmCall) -> MigrationStep:
        args = call.args
        if len(args) not in (5, 6):
            raise InvalidInput(
                f"expected 5 or 6 arguments (src_host dst_host dir vmid dsid [tm]), got {len(args)}"
            )
        vm_dir = Location.parse(f"{args[0]}:{args[2]}")
        target = Location.parse(f"{args[1]}:{args[2]}")
        vm_id = integer_argument(args[3], "the VM id")
        datastore_id = integer_argument(args[4], "the datastore id")
        payload = call.stdin.read(MAX_VM_XML + 1)
        if len(payload) > MAX_VM_XML:
            raise InvalidInput("the VM template on stdin is too large")
        try:
            text = base64.b64decode(payload.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInput("the VM template on stdin is not base64-encoded XML") from None
        vm = parse_vm_xml(text) if text else oned.show_vm(vm_id)
        disks = [disk for disk in vm.disks if disk.tm_mad == "ipfs" and disk.datastore_id is not None]
        forwarded_by = args[5] if len(args) == 6 else ""
        return cls(vm_dir.host, target.host, vm_dir.path, vm_id, datastore_id, disks, forwarded_by)


def premigrate(call: TmCall) -> None:
    """Before a live migration the target's node fetches what the VM's disks are made of, from IPFS, so
    that it holds them as after a deploy there. The migration does not depend on it: KVM copies each disk's
    whole guest view (``--copy-storage-all``), and OpenNebula's system TMs ignore this step's status."""
    step = MigrationStep.parse(call)
    for disk in step.disks:
        assert disk.datastore_id is not None
        path = f"{step.vm_dir}/disk.{disk.disk_id}"
        _prefetch(step.target_host, path, disk, step.vm_id, datastore_config(disk.datastore_id))


def postmigrate(call: TmCall) -> None:
    """After a live migration the source host releases this VM's cache uses; as the system
    datastore's own TM, this driver also removes the folder the hypervisor left there, as OpenNebula's
    ``ssh`` and ``local`` TMs do."""
    step = MigrationStep.parse(call)
    _release_vm(step.source_host, step)
    if not step.forwarded_by and step.source_host != step.target_host:
        folder = Location(step.source_host, step.vm_dir)
        delete_on_host(folder, step.vm_id, datastore_config(step.datastore_id))


def failmigrate(call: TmCall) -> None:
    """A failed live migration: the target lets go of what premigrate fetched for this VM."""
    step = MigrationStep.parse(call)
    _release_vm(step.target_host, step)


def _release_vm(host: str, step: MigrationStep) -> None:
    if not step.disks or step.disks[0].datastore_id is None:
        return
    _release(host, step.vm_id, datastore_config(step.disks[0].datastore_id))


def _release(host: str, vm_id: int, config: DatastoreConfig) -> None:
    release = protocol.Release(vm=vm_id, node=host_node(config), cache=host_cache(config))
    hosts.call(host, release, timeout=_host_timeout(config))


def _on_host(host: str, request: protocol.Request[Awaited], config: DatastoreConfig, vm_id: int) -> Awaited:
    """Run a host command for VM ``vm_id``, then settle the cache uses the host keeps for other VMs'
    disks that never arrived (``_reconcile``)."""
    result = hosts.call(host, request, timeout=_host_timeout(config))
    for other in result.awaiting:
        if other != vm_id:
            _reconcile(host, other, config)
    return result


def _reconcile(host: str, vm_id: int, config: DatastoreConfig) -> None:
    """Drop the cache uses ``host`` keeps for VM ``vm_id``'s announced disks unless oned still places
    the VM there. OpenNebula's ssh and local TMs end a failed live migration with ``exit 0``, never
    calling this driver's failmigrate: without this, what premigrate fetched stayed pinned for good.
    Best effort: the action that asked has succeeded already."""
    try:
        vm = oned.show_vm(vm_id)
        if vm.history is not None and vm.history.hostname == host and vm.state not in GONE_STATES:
            return
        log_info(f"VM {vm_id} is not on {host} (a migration there failed): releasing what it holds there")
        _release(host, vm_id, config)
    except OneIpfsError as exc:
        log_info(f"the cache uses of VM {vm_id} on {host} were left for a later action: {exc}")


def _snapshot_step(kind: type[protocol.SnapshotCreate]) -> Callable[[TmCall], None]:
    """snap_create, snap_revert and snap_delete: each a file operation on the disk's host."""

    def step(call: TmCall) -> None:
        disk, value, vm_id, ds_id = arguments(call.args, 4, "host:remote_system_ds/disk.i snap_id vmid dsid")
        location = Location.parse(disk)
        _disk_id(location)
        snap_id = integer_argument(value, "snap_id")
        integer_argument(vm_id, "the VM id")
        config = datastore_config(integer_argument(ds_id, "the datastore id"))
        hosts.call(
            location.host, kind(disk=Path(location.path), snap_id=snap_id), timeout=_host_timeout(config)
        )

    step.__doc__ = f"``{kind.command}`` on the disk's host, as OpenNebula's ssh driver does for file disks."
    return step


def resize(call: TmCall) -> None:
    """Grow a disk on its host; a running VM's disk is left to its hypervisor, which QEMU's image lock
    makes the only one able to grow it (``virsh blockresize``, the VMM's next step)."""
    disk, size, vm_id, ds_id = arguments(call.args, 4, "host:remote_system_ds/disk.i size_mb vmid dsid")
    location = Location.parse(disk)
    _disk_id(location)
    size_mb = integer_argument(size, "size_mb")
    vm = integer_argument(vm_id, "the VM id")
    config = datastore_config(integer_argument(ds_id, "the datastore id"))
    if oned.show_vm(vm).lcm_state == HOTPLUG_RESIZE:
        log_info(f"{location.path} is the disk of running VM {vm}: its hypervisor grows it")
        return
    hosts.call(
        location.host,
        protocol.Resize(disk=Path(location.path), size_mb=size_mb),
        timeout=_host_timeout(config),
    )


KVMRC = "etc/vmm/kvm/kvmrc"
DEFAULT_LIBVIRT_URI = "qemu:///system"


def snap_create_live(call: TmCall) -> None:
    """A snapshot of a running VM's disk (oned's KVM driver runs this for the ``kvm-ipfs`` pair that
    ``one-ipfs install`` puts in LIVE_DISK_SNAPSHOTS): the host's hypervisor copies the disk while the
    guest runs, as OpenNebula's ssh driver has it do, into the same ``disk.i.snap/<id>`` that
    snap_revert and snap_delete use."""
    disk, value, vm_id, ds_id = arguments(call.args, 4, "host:remote_system_ds/disk.i snap_id vmid dsid")
    location = Location.parse(disk)
    _disk_id(location)
    snap_id = integer_argument(value, "snap_id")
    vm = oned.show_vm(integer_argument(vm_id, "the VM id"))
    if not vm.deploy_id:
        raise InvalidInput(f"VM {vm.id} has no DEPLOY_ID: it is not running on a hypervisor")
    config = datastore_config(integer_argument(ds_id, "the datastore id"))
    uri = read_defaults(remotes_dir() / KVMRC).get("LIBVIRT_URI") or DEFAULT_LIBVIRT_URI
    snapshot = protocol.SnapshotCreateLive(
        disk=Path(location.path),
        snap_id=snap_id,
        domain=vm.deploy_id,
        libvirt_uri=uri,
        timeout=config.transfer_timeout,
    )
    hosts.call(location.host, snapshot, timeout=_host_timeout(config))


def monitor(call: TmCall) -> str:
    """Capacity of the datastore's node, for a system datastore that uses this driver."""
    action, _ = read_ds_action(call.args, call.stdin)
    used, total, free = image_store.capacity_mb(load_config(action.datastore.attributes))
    return f"USED_MB={used}\nTOTAL_MB={total}\nFREE_MB={free}"


ACTIONS: dict[str, Callable[[TmCall], str | None]] = {
    "clone": clone,
    "ln": ln,
    "mvds": mvds,
    "cpds": cpds,
    "delete": delete,
    "mv": mv,
    "premigrate": premigrate,
    "postmigrate": postmigrate,
    "failmigrate": failmigrate,
    "snap_create": _snapshot_step(protocol.SnapshotCreate),
    "snap_create_live": snap_create_live,
    "snap_revert": _snapshot_step(protocol.SnapshotRevert),
    "snap_delete": _snapshot_step(protocol.SnapshotDelete),
    "resize": resize,
    "monitor": monitor,
}


def run(name: str, args: list[str], stdin: BinaryIO) -> str | None:
    """Run the action a transfer-file line names; ``clone.ssh`` and friends run ``clone``."""
    base, _, suffix = name.partition(".")
    if suffix and suffix not in SUFFIXES:
        raise NotSupported(
            f"the ipfs transfer driver does not work with system datastores of type {suffix[:40]!r}"
        )
    from one_ipfs.transfer import system  # its actions build on this module's

    return dispatch("transfer", ACTIONS | system.ACTIONS, base, lambda: (TmCall(args, stdin, suffix),))
