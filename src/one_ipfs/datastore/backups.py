"""The IPFS backup datastore: a datastore of DS_MAD ``ipfs`` created with ``TYPE=BACKUP_DS``.

Each backup, and each increment of an incremental one, is one IPFS directory (the VM's ``vm.xml`` and a
``disk.<id>.<increment>`` per disk, as OpenNebula's prebackup wrote them on the host): the host's own node
adds it, the frontend's node pins it peer to peer, and its SOURCE names it. Backups share every block
they have in common, whichever VM they are of, so an unchanged disk costs nothing the second time;
deleting a backup (``rm``, and oned's KEEP_LAST) releases its hold, and Kubo's pin rules keep exactly
the blocks a remaining backup uses. Increments are put back together by ``backup_chain``.
The argument and output formats are those of OpenNebula's own ``rsync`` driver (docs/backups.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import BinaryIO, NoReturn

from one_ipfs import image_store
from one_ipfs.config import DatastoreConfig, load_config
from one_ipfs.datastore import backup_chain, content
from one_ipfs.datastore.backup_chain import BackupId
from one_ipfs.defaults import BACKUP_CANCEL_WAIT, HOST_CALL_SLACK
from one_ipfs.errors import Cancelled, InvalidInput, NotSupported, OneIpfsError
from one_ipfs.host import protocol
from one_ipfs.hosts import calls as hosts
from one_ipfs.hosts.calls import host_node
from one_ipfs.ipfs.paths import parse_cid
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.documents import (
    MAX_PAYLOAD,
    BackedUpVm,
    DsAction,
    backup_increments,
    backup_request,
    parse_backed_up_vm,
    parse_ds_action,
    restore_request,
)
from one_ipfs.opennebula.output import log_info

BACKUP_DS = 3
"""``Datastore::DatastoreType`` BACKUP_DS, as ``Datastore::to_xml`` writes TYPE."""
BACKUP_FORMAT = "raw"
"""What a backup's FORMAT tells OpenNebula's restore tools: plain files, not Ceph's rbd exports."""
MIB = 1 << 20
MAX_VM_XML = 16 << 20
_VM_UUID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_INCREMENT = re.compile(r"^(?:-1|[0-9]{1,9})$")
_BACKUP_SCRIPTS = ("prebackup", "prebackup_live")


def backup(args: list[str], stdin: BinaryIO) -> str:
    """``backup host:vm_folder disk_ids vm_uuid bj_id vm_id ds_id`` (the VM manager runs it on the frontend
    after prebackup): ``<backup id> <size MB> <format>``."""
    if len(args) != 6:
        raise InvalidInput(
            f"backup expects host:folder, disks, VM UUID, job, VM and datastore ids, not {len(args)} words"
        )
    host, _, folder = args[0].partition(":")
    if not host or not folder.startswith("/"):
        raise InvalidInput(f"backup expects host:/vm/folder, not {args[0][:200]!r}")
    if os.environ.get("BACKUP_BASE_PATH"):
        raise NotSupported(
            "the ipfs backup datastore reads backups from the VM folder: BACKUP_BASE_PATH is not supported"
        )
    action = _plain_action(stdin)
    _require_backup_datastore(action)
    request = backup_request(action)
    config = load_config(action.datastore.attributes, backup=True)
    host = request.last_bridge or host
    with _cancellable():
        backup_id, size = _store(host, folder, request.vm_id, config)
    log_info(f"backup {backup_id} of VM {request.vm_id}: {size >> 20} MiB of files")
    return f"{backup_id} {max(1, math.ceil(size / MIB))} {BACKUP_FORMAT}"


def _store(host: str, folder: str, vm_id: int, config: DatastoreConfig) -> tuple[BackupId, int]:
    """The host adds the backup folder, the frontend pins it; on any failure (a cancel included) neither
    keeps a pin of it."""
    token = secrets.token_hex(6)
    backup_id: BackupId | None = None
    try:
        request = protocol.BackupAdd(
            dir=Path(folder),
            token=token,
            settings=config.import_settings,
            node=host_node(config),
            timeout=config.transfer_timeout,
        )
        added = _on_host(host, request, config)
        parse_cid(added.cid)
        backup_id = BackupId(token, added.cid)
        size = added.size
        log_info(f"pinning the backup of VM {vm_id} ({backup_id.cid}) from {host}")
        image_store.hold(backup_id.cid, backup_id.hold_name, config, total_bytes=size or None)
    except BaseException:
        if backup_id is not None:
            _let_go(backup_id, config)
        raise
    finally:
        _release_on_host(host, token, config)
    return backup_id, size


def backup_cancel(args: list[str], stdin: BinaryIO) -> None:
    """``backup_cancel host:vm_folder vm_uuid``: stop this VM's backup under way (ours, and the TM's
    prebackup) and wait until it has released what it stored."""
    if len(args) != 2 or not _VM_UUID.fullmatch(args[1]):
        raise InvalidInput("backup_cancel expects host:folder and the VM's UUID")
    stopped = [pid for pid, argv in _processes() if _is_backup_of(argv, args[1])]
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    log_info(f"stopping {len(stopped)} backup process(es) of VM {args[1]}")
    end = time.monotonic() + BACKUP_CANCEL_WAIT
    while any(Path(f"/proc/{pid}").exists() for pid in stopped) and time.monotonic() < end:
        time.sleep(0.1)


def rm(action: DsAction, config: DatastoreConfig) -> None:
    """Delete a backup, each of its increments (by hand, or oned's KEEP_LAST): their blocks stay only where
    another backup or an image holds them."""
    for link in backup_chain.chain(backup_increments(action)):
        image_store.release(link.backup.cid, link.backup.hold_name, config)
        log_info(f"released backup {link.backup}")


def restore(action: DsAction, config: DatastoreConfig) -> str:
    """``oneimage restore``: an image per disk in the destination datastore, and a VM template of them
    unless one disk was asked for: ``<template id> <image id>...`` (``-1`` for no template)."""
    increments = backup_increments(action)
    links = backup_chain.chain(increments, increments.restore_up_to)
    last = links[-1].backup
    request = restore_request(action)
    destination = oned.show_datastore(request.destination_datastore)
    vm = _backed_up_vm(last, config)
    disk_ids = [d for d in vm.disk_ids if request.disk_id in (None, d)]
    if not disk_ids:
        raise InvalidInput(f"backup {last} holds no disk {request.disk_id}")
    base_name = request.name or f"{vm.id}-{last.token}"
    images: list[int] = []
    try:
        for disk_id in disk_ids:
            cid = backup_chain.disk_cid(links, disk_id, config)
            path = _restored_path(cid, destination.ds_mad, config)
            images.append(_restored_image(disk_id, base_name, path, action.datastore.id, destination.id))
            log_info(f"disk {disk_id} of increment {links[-1]} is image {images[-1]} ({path})")
            _give(request.username, "image", images[-1])
        template = -1
        if request.disk_id is None:
            template = oned.create_vm_template(_vm_template(base_name, vm, images))
            _give(request.username, "template", template)
    except BaseException:
        for image in images:
            oned.delete_image(image)
        raise
    return " ".join(str(number) for number in [template, *images])


def ls(args: list[str], stdin: BinaryIO) -> str:
    """``ls [-i increment]`` (a system datastore's restore of a VM in place): ``{"<disk id>": "<url>"}``,
    each disk as of that increment (-1: the last) on the frontend node's gateway, which OpenNebula's
    ``downloader.sh`` reads."""
    up_to = _increment_argument(args)
    action = _plain_action(stdin)
    _require_backup_datastore(action)
    config = load_config(action.datastore.attributes, backup=True)
    links = backup_chain.chain(backup_increments(action), up_to)
    vm = _backed_up_vm(links[-1].backup, config)
    disks = {
        str(d): content.gateway_url(backup_chain.disk_cid(links, d, config), config) for d in vm.disk_ids
    }
    return json.dumps(disks)


def increment_flatten(action: DsAction, config: DatastoreConfig) -> str | None:
    """oned's KEEP_LAST on incremental backups: the oldest increments, up to the first one kept, become one
    backup in its place: ``<its size MB> <the chain oned keeps>`` (``<id>:<SOURCE>,...``)."""
    increments = backup_increments(action)
    links = backup_chain.chain(increments)
    if increments.keep_last < 1 or len(links) <= increments.keep_last:
        return None
    first_kept = len(links) - increments.keep_last
    merged, kept = links[: first_kept + 1], links[first_kept + 1 :]
    vm = _backed_up_vm(merged[-1].backup, config)
    backup_id = backup_chain.merge(merged, vm.disk_ids, config)
    try:
        size = image_store.client(config).files_stat(f"/ipfs/{backup_id.cid}", timeout=config.stall_timeout)
    except BaseException:
        _let_go(backup_id, config)
        raise
    for link in merged:  # oned keeps the merged backup now: a release that fails keeps blocks, loses none
        _let_go(link.backup, config)
    first = backup_chain.Increment(merged[-1].id, backup_id)
    chain = ",".join(str(link) for link in [first, *kept])
    return f"{max(1, math.ceil(size.cumulative_size / MIB))} {chain}"


ACTIONS: dict[str, Callable[[DsAction, DatastoreConfig], str | None]] = {
    "rm": rm,
    "restore": restore,
    "increment_flatten": increment_flatten,
}
"""The image actions a backup datastore answers differently from an image datastore."""

VM_ACTIONS: dict[str, Callable[[list[str], BinaryIO], str | None]] = {
    "backup": backup,
    "backup_cancel": backup_cancel,
    "ls": ls,
}
"""Actions called as OpenNebula's VM manager and TMs call backup drivers: arguments, plain XML on stdin."""


def _plain_action(stdin: BinaryIO) -> DsAction:
    xml = stdin.read(MAX_PAYLOAD + 1)
    if len(xml) > MAX_PAYLOAD:
        raise InvalidInput(f"the driver action on stdin is larger than {MAX_PAYLOAD >> 20} MiB")
    return parse_ds_action(xml)


def _require_backup_datastore(action: DsAction) -> None:
    if action.datastore.type != BACKUP_DS:
        raise InvalidInput(
            f"datastore {action.datastore.id} is not a backup datastore (TYPE=BACKUP_DS): it takes no backups"
        )


def _increment_argument(args: list[str]) -> int | None:
    """``ls``'s ``-i <increment>`` (``--increment``); None for the last (-1, or no option)."""
    if not args:
        return None
    if len(args) != 2 or args[0] not in ("-i", "--increment") or not _INCREMENT.fullmatch(args[1]):
        raise InvalidInput("ls takes only -i <increment id> (-1 for the last one)")
    return None if args[1] == "-1" else int(args[1])


def _on_host(host: str, request: protocol.Request[protocol.R], config: DatastoreConfig) -> protocol.R:
    return hosts.call(host, request, timeout=config.transfer_timeout + HOST_CALL_SLACK)


def _let_go(backup_id: BackupId, config: DatastoreConfig) -> None:
    """Release a backup no record keeps (one that did not finish, or increments merged into one): its
    hold, and its pin unless another backup holds it. A failure is logged: it keeps blocks, never
    loses any."""
    with _ignoring_stops():
        try:
            image_store.release(backup_id.cid, backup_id.hold_name, config)
        except OneIpfsError as exc:
            log_info(f"could not release backup {backup_id}: {exc}")


def _release_on_host(host: str, token: str, config: DatastoreConfig) -> None:
    """The host's pin goes once the frontend holds the backup (or gave up on it). Best effort: a host out of
    reach keeps a pin named ``one-ipfs-backup-<token>``, which nothing else uses."""
    with _ignoring_stops():
        try:
            _on_host(host, protocol.BackupRelease(token=token, node=host_node(config)), config)
        except OneIpfsError as exc:
            log_info(f"{host} keeps its pin of backup {token} for now: {exc}")


def _backed_up_vm(backup_id: BackupId, config: DatastoreConfig) -> BackedUpVm:
    node = image_store.client(config)
    encoded = b"".join(
        node.cat(f"/ipfs/{backup_id.cid}/vm.xml", length=MAX_VM_XML, timeout=config.stall_timeout)
    )
    try:
        return parse_backed_up_vm(base64.b64decode(b"".join(encoded.split()), validate=True))
    except binascii.Error:
        raise InvalidInput(f"the vm.xml of backup {backup_id} is not base64 as prebackup writes it") from None


def _restored_path(cid: str, ds_mad: str, config: DatastoreConfig) -> str:
    """The disk by its CID: an ipfs datastore pins it (zero copy, fetched peer to peer where it is
    deployed); any other datastore downloads it from the frontend node's gateway."""
    return f"ipfs://{cid}" if ds_mad == "ipfs" else content.gateway_url(cid, config)


def _restored_image(disk_id: int, base_name: str, path: str, backup_ds: int, destination: int) -> int:
    attributes = (
        ("NAME", f"{base_name}-disk-{disk_id}"),
        ("TYPE", "OS" if disk_id == 0 else "DATABLOCK"),
        ("PATH", path),
        ("FROM_BACKUP_DS", str(backup_ds)),
    )
    return oned.create_image(
        destination, "".join(oned.template_line(name, value) for name, value in attributes)
    )


def _vm_template(base_name: str, vm: BackedUpVm, images: list[int]) -> str:
    text = oned.template_line("NAME", base_name)
    text += "".join(oned.template_line(name, value) for name, value in vm.capacity.items())
    text += "".join(f"DISK = [ IMAGE_ID = {image} ]\n" for image in images)
    return text


def _give(username: str, kind: str, object_id: int) -> None:
    if username and username != "oneadmin":
        oned.chown(kind, object_id, username)


def _processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of this user's processes."""
    me = os.geteuid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != me:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(entry.name), [word.decode(errors="replace") for word in argv if word]


def _is_backup_of(argv: list[str], vm_uuid: str) -> bool:
    """This driver's backup of the VM, or the TM's prebackup writing its files."""
    if vm_uuid not in argv:
        return False
    ours = "one_ipfs.driver" in argv and argv[argv.index("one_ipfs.driver") + 1 :][:2] == [
        "datastore",
        "backup",
    ]
    return ours or any(word.rsplit("/", 1)[-1] in _BACKUP_SCRIPTS for word in argv)


def _stopped(signum: int, frame: FrameType | None) -> NoReturn:
    raise Cancelled("the backup was cancelled (backup_cancel); nothing of it is kept")


@contextmanager
def _cancellable() -> Iterator[None]:
    """SIGTERM (``backup_cancel``) ends the backup through its clean-up, like any failure."""
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _ignoring_stops() -> Iterator[None]:
    """A clean-up is not cut short by a second SIGTERM."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
