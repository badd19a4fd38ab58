"""The transfer driver as a system datastore's TM (``TM_MAD=ipfs`` on a ``SYSTEM_DS``): VM folder actions.

A VM folder on a host is laid out as OpenNebula's ``ssh`` and ``local`` TMs lay it out, so the steps that
build it (context ISO, volatile disks) and the backup steps run OpenNebula's own ``ssh`` TM, which every
installation ships. What differs is where a folder goes when its VM leaves its host (stop, undeploy):
each disk file is added to the host's own IPFS node and pinned on the datastore's node, peer to peer, and
the frontend's copy of the folder is a manifest of CIDs; ``resume`` on any host fetches the disks from
IPFS, moving only the blocks that host lacks. Disk lines (``disk.<n>``) go to ``transfer.actions``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from one_ipfs import image_store
from one_ipfs.config import DatastoreConfig, remotes_dir
from one_ipfs.defaults import UPSTREAM_TIMEOUT
from one_ipfs.errors import InvalidInput, InvalidIpfsPath, OpenNebulaError, StorageError
from one_ipfs.ipfs.paths import parse_cid
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.documents import VmTemplate
from one_ipfs.opennebula.location import Location, disk_id_of
from one_ipfs.opennebula.output import log_info, relay_log
from one_ipfs.transfer import actions
from one_ipfs.transfer.actions import DISK_FORMATS, DiskRequest, TmCall

MANIFEST = "one-ipfs-folder.json"
"""The frontend's copy of a VM folder that left its host: which CID each disk file is."""
UPSTREAM_TM = "ssh"
CHECKPOINT = "checkpoint"
CHECKPOINT_STATES = (8, 10)
"""LCM states (PROLOG_MIGRATE, EPILOG_STOP) in which the hypervisor saved the VM's memory in its folder."""
FOLDER_FILE = re.compile(rf"^(?:disk\.[0-9]{{1,9}}(?:\.snap/[0-9]{{1,9}})?|{CHECKPOINT})$")


@dataclass(frozen=True)
class FolderFile:
    """One disk file of a VM folder in IPFS: its path inside the folder, CID, size and format."""

    name: str
    cid: str
    size: int
    format: str


def mv(call: TmCall) -> None:
    """A disk line is the image TM's (``transfer.actions.mv``); the folder line moves the VM's disks
    through IPFS: to the frontend (stop, undeploy), from it (resume), or between hosts."""
    source, target, vm_id, ds_id = actions.arguments(
        call.args, 4, "src_host:dir[/disk.i] dst_host:dir[/disk.i] vmid dsid"
    )
    src, dst = Location.parse(source), Location.parse(target)
    if disk_id_of(dst.path) is not None or disk_id_of(src.path) is not None:
        actions.mv(call)
        return
    vm, datastore_id = _ids(vm_id, ds_id)
    for location in (src, dst):
        _vm_folder(location, vm, datastore_id)
    if src.host == dst.host and src.path == dst.path:
        log_info(f"{src.path} stays on {src.host}")
        return
    if actions.is_frontend(src.host):
        files = _read_manifest(Path(src.path))  # checked before anything is asked of a node
        _unpark(files, Path(src.path), dst, vm, actions.datastore_config(datastore_id))
        return
    config = actions.datastore_config(datastore_id)
    if actions.is_frontend(dst.host):
        _park(src, dst, vm, config)
    else:
        files = _add_folder(src, oned.show_vm(vm), config)
        _fetch_folder(files, dst, vm, config)
        actions.delete_on_host(src, vm, config)


def delete(call: TmCall) -> None:
    """A VM folder on the frontend is a manifest: its pins are released and it is removed; a disk in it
    is nothing to remove. Anything on a host is ``transfer.actions.delete``'s."""
    target, vm_id, ds_id = actions.arguments(call.args, 3, "host:remote_system_ds[/disk.i] vmid dsid")
    location = Location.parse(target)
    if not actions.is_frontend(location.host):
        actions.delete(call)
        return
    disk = disk_id_of(location.path) is not None
    folder = Path(location.path).parent if disk else Path(location.path)
    if not (folder / MANIFEST).is_file():
        actions.delete(call)
        return
    if disk:
        log_info(f"{location.path} is in IPFS with its VM folder: the folder's delete releases it")
        return
    vm, datastore_id = _ids(vm_id, ds_id)
    _vm_folder(location, vm, datastore_id)
    config = actions.datastore_config(datastore_id)
    _release_folder(_read_manifest(folder), vm, config)
    shutil.rmtree(folder)
    log_info(f"removed {folder}")


def mvds(call: TmCall) -> None:
    """A persistent disk of a VM whose folder is in IPFS (terminated while UNDEPLOYED or STOPPED) is saved
    from its parked CID; anywhere else it is ``transfer.actions.mvds``'s."""
    disk, source, vm_id, ds_id = actions.arguments(
        call.args, 4, "host:remote_system_ds/disk.i SOURCE vmid dsid"
    )
    location = Location.parse(disk)
    folder = Path(location.path).parent
    if not actions.is_frontend(location.host) or not (folder / MANIFEST).is_file():
        actions.mvds(call)
        return
    vm, datastore_id = _ids(vm_id, ds_id)
    if folder.name != str(vm):
        raise InvalidInput(f"{location.path[:200]} is not a disk of VM {vm}'s folder")
    parked = {f"{folder}/{file.name}": (file.cid, file.size, file.format) for file in _read_manifest(folder)}
    actions.save_back(location, source, vm, datastore_id, parked)


def _park(src: Location, dst: Location, vm: int, config: DatastoreConfig) -> None:
    """Host to frontend: the disks go into IPFS, pinned on the datastore's node; the frontend keeps
    only the manifest. A failure on the way releases what was pinned and leaves the host's folder."""
    files = _add_folder(src, oned.show_vm(vm), config)
    held: list[FolderFile] = []
    try:
        for file in files:
            log_info(f"pinning {file.name} of VM {vm} ({file.cid}) from {src.host} on the datastore's node")
            image_store.hold(file.cid, _pin_name(vm, file), config, total_bytes=file.size or None)
            held.append(file)
        _write_manifest(Path(dst.path), files)
    except BaseException:
        _release_folder(held, vm, config)
        raise
    actions.delete_on_host(src, vm, config)
    log_info(
        f"VM {vm}'s folder is in IPFS: {sum(file.size for file in files) >> 20} MiB in {len(files)} file(s)"
    )


def _unpark(files: list[FolderFile], folder: Path, dst: Location, vm: int, config: DatastoreConfig) -> None:
    """Frontend to host: the host fetches every disk from IPFS; then the frontend lets its copy go."""
    _fetch_folder(files, dst, vm, config)
    _release_folder(files, vm, config)
    shutil.rmtree(folder)


def _add_folder(src: Location, vm: VmTemplate, config: DatastoreConfig) -> list[FolderFile]:
    """Add each file of the VM's folder that it needs back (``_disk_files``) to its host's node."""
    files = []
    for name, disk_format in _disk_files(vm):
        path = f"{src.path}/{name}"
        cid, size = actions.add_on_host(
            src.host, path, saved_format=disk_format, disk_format=disk_format, vm_id=vm.id, config=config
        )
        files.append(FolderFile(name, cid, size, disk_format))
    return files


def _disk_files(vm: VmTemplate) -> list[tuple[str, str]]:
    """(name in the folder, format) of every file a VM needs back where it resumes: its disks (the format
    oned tells the hypervisor; a swap is raw), their snapshots, and a saved VM's memory. Not the context
    ISO: oned has it made anew before every deploy and restore."""
    files = []
    for disk in vm.disks:
        if disk.type.lower() == "filesystem":
            continue
        disk_format = disk.format if disk.format in DISK_FORMATS else "raw"
        files.append((f"disk.{disk.disk_id}", disk_format))
        files += [(f"disk.{disk.disk_id}.snap/{snap}", disk_format) for snap in disk.snapshot_ids]
    if vm.lcm_state in CHECKPOINT_STATES:
        files.append((CHECKPOINT, "raw"))
    return files


def _fetch_folder(files: list[FolderFile], dst: Location, vm: int, config: DatastoreConfig) -> None:
    """The host fetches each file of the folder from IPFS, as ``clone`` fetches an image: sparse, checked,
    from any peer that holds its blocks."""
    request = DiskRequest("", dst, vm, -1)
    for file in files:
        path = f"{dst.path}/{file.name}"
        log_info(f"fetching {file.name} of VM {vm} ({file.cid}) to {dst.host}")
        actions.fetch_on_host(
            request,
            path,
            config,
            cid=file.cid,
            formats=(file.format, file.format),
            mode="copy",
            monitor_tm=UPSTREAM_TM,
        )


def _release_folder(files: list[FolderFile], vm: int, config: DatastoreConfig) -> None:
    for file in files:
        image_store.release(file.cid, _pin_name(vm, file), config)


def _pin_name(vm: int, file: FolderFile) -> str:
    return f"one-ipfs-vm{vm}-{file.name.replace('/', '-')}"


def _ids(vm_id: str, ds_id: str) -> tuple[int, int]:
    """The VM id and the system datastore id of an action's arguments."""
    return actions.integer_argument(vm_id, "the VM id"), actions.integer_argument(ds_id, "the datastore id")


def _vm_folder(location: Location, vm: int, datastore_id: int) -> None:
    """oned's VM folder: ``<location>/<system datastore id>/<vm id>``, nothing else."""
    path = Path(location.path)
    if path.name != str(vm) or path.parent.name != str(datastore_id) or len(path.parts) < 4:
        raise InvalidInput(f"{location.path[:200]} is not the folder of VM {vm} in datastore {datastore_id}")


def _write_manifest(folder: Path, files: list[FolderFile]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"files": [asdict(file) for file in files]}, indent=1)
    fd, temporary = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text + "\n")
    os.replace(temporary, folder / MANIFEST)


def _read_manifest(folder: Path) -> list[FolderFile]:
    path = folder / MANIFEST
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["files"]
        files = [FolderFile(**entry) for entry in entries]
    except FileNotFoundError:
        raise StorageError(f"{path} does not exist: the VM folder was never put into IPFS") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{path} cannot be read: {exc}") from None
    for file in files:
        if not FOLDER_FILE.fullmatch(file.name) or file.format not in DISK_FORMATS:
            raise StorageError(f"{path} names {file.name[:80]!r} ({file.format[:20]!r}), not a disk file")
        try:
            parse_cid(file.cid)
        except InvalidIpfsPath as exc:
            raise StorageError(f"{path}: {file.name}'s {exc}") from None
    return files


def upstream(action: str) -> Callable[[TmCall], str | None]:
    """An action that runs OpenNebula's own ``ssh`` TM, which lays VM folders out as this driver does."""

    def step(call: TmCall) -> str | None:
        script = remotes_dir() / "tm" / UPSTREAM_TM / action
        if not script.is_file():
            raise StorageError(f"{script} does not exist: this OpenNebula lacks its {UPSTREAM_TM} TM")
        result = subprocess.run(
            [str(script), *call.args],
            stdin=call.stdin,
            capture_output=True,
            timeout=UPSTREAM_TIMEOUT,
            check=False,
        )
        plain = [
            line.strip()
            for line in result.stderr.decode(errors="replace").splitlines()
            if line.strip() and not relay_log(line) and "ERROR MESSAGE" not in line
        ]
        if result.returncode != 0:
            raise OpenNebulaError(
                plain[-1] if plain else f"{UPSTREAM_TM}'s {action} failed ({result.returncode})"
            )
        return result.stdout.decode(errors="replace") or None

    step.__doc__ = (
        f"OpenNebula's ``{UPSTREAM_TM}`` TM's ``{action}``: the VM folder is laid out as it lays it out."
    )
    return step


ACTIONS: dict[str, Callable[[TmCall], str | None]] = {
    "mv": mv,
    "mvds": mvds,
    "delete": delete,
    **{
        action: upstream(action)
        for action in (
            "context",
            "mkimage",
            "mkswap",
            "prebackup",
            "prebackup_live",
            "postbackup",
            "postbackup_live",
            "restore",
        )
    },
}
"""The system datastore's actions beside the image TM's (``transfer.actions.ACTIONS``)."""
