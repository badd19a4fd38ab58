"""The host commands: one plain function each; ``__main__`` only parses arguments and calls them.

Every command is bounded in time, leaves nothing half done on failure (no partial disk, no pin
the cache does not account for) and is safe to repeat, because OpenNebula retries.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from one_ipfs.errors import ContentNotFound, InvalidInput, IpfsTimeout, OneIpfsError, StorageError
from one_ipfs.host import disks, log_info
from one_ipfs.host.cache import (
    CACHE_PIN_PREFIX,
    CacheEntry,
    HostCache,
    Reference,
    cache_pin_name,
    pin_owner,
    unpin_cache_pin,
)
from one_ipfs.host.disks import COPY, OVERLAY, DiskRecord
from one_ipfs.host.sparse import SparseFile, Written, allocated, copy_file, grow, part_path, persist
from one_ipfs.ipfs.gateway import BlockReader, block_reader
from one_ipfs.ipfs.pinning import (
    PROGRESS_EVERY,
    SCATTER_WORKERS,
    BlockSink,
    FileLayout,
    Leaf,
    file_layout,
    pin_with_progress,
    scatter_fetch,
    stat_patiently,
)
from one_ipfs.ipfs.rpc import FileStat, ImportSettings, KuboClient

MODES = (COPY, OVERLAY)


class Deadline:
    """The time one command may take in all, shared out among its steps."""

    def __init__(self, seconds: float, action: str) -> None:
        self.seconds = seconds
        self.action = action
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise IpfsTimeout(f"{self.action} did not finish within {self.seconds:g} s")
        return left


@dataclass(frozen=True)
class Holding:
    """Content this host's node holds completely, for the command that holds its lock."""

    cid: str
    size: int
    layout: FileLayout | None = None
    """Where its leaves lie, when ``_hold`` had to read it."""
    assembled: bool = False
    """The content was also written into the files given to ``_hold``, block by block as it came."""


@dataclass(frozen=True)
class Base:
    """The read-only file overlays of one CID are made on, and the bytes written to make it now."""

    path: Path
    content: disks.ContentFormat
    stored: int


def fetch(
    client: KuboClient,
    cache: HostCache,
    cid: str,
    disk: Path,
    *,
    size_mb: int = 0,
    mode: str = COPY,
    image_format: str | None = None,
    disk_format: str | None = None,
    vm: int | None = None,
    timeout: float,
    stall_timeout: float,
    cache_max_mb: int,
) -> dict[str, Any]:
    """Deploy a disk from IPFS: the host's node pins the CID and writes its base file (once per
    host), then the disk is a sparse copy of the base (copy) or a qcow2 overlay on it (overlay).

    ``image_format`` is what the content's bytes are, ``disk_format`` what the hypervisor will be told
    the disk is (oned's DISK/DRIVER): a copy whose base is in another format is converted to it.
    """
    if mode not in MODES:
        raise InvalidInput(f"the deploy mode must be copy or overlay, not {mode[:40]!r}")
    if mode == OVERLAY and disk_format not in (None, "qcow2"):
        raise InvalidInput(f"an overlay is a qcow2 file, but {disk} is to be {disk_format}")
    deployed = disks.read_record(disk) if disk.is_file() else None
    if deployed is not None and (deployed.cid, deployed.mode) == (cid, mode):
        # oned retrying a deploy that succeeded: the guest may have written to the disk since.
        log_info(f"{disk} is already deployed from {cid}: kept as it is")
        return {"cid": cid, "mode": mode, "format": deployed.format}
    deadline = Deadline(timeout, f"deploying {cid} to {disk}")
    cache.prepare()
    _make_folder(disk.parent)
    with cache.content_lock(cid, deadline.left()):
        new_entry = cache.entry(cid) is None
        created = False
        try:
            _, base, written = _held_base(
                client,
                cache,
                cid,
                image_format,
                deadline,
                stall_timeout=stall_timeout,
                copy_to=disk if mode == COPY and disk_format in (None, image_format) else None,
            )
            if mode == OVERLAY:
                record = _deploy_overlay(base, cid, disk, size_mb=size_mb, deadline=deadline)
            elif disk_format not in (None, base.content.format):
                record = _deploy_converted(base, cid, disk, disk_format, size_mb=size_mb, deadline=deadline)
            else:
                record = _deploy_copy(base, cid, disk, size_mb=size_mb, deadline=deadline, written=written)
            created = True
            disks.write_record(disk, record)
            cache.record(cid, _used_by(disk, vm, base.stored, holds=mode == OVERLAY))
        except BaseException:
            if created:
                _remove_file(disk)
                disks.remove_record(disk)
            if new_entry:
                _let_go(client, cache, cid)
            raise
    log_info(f"{disk} is ready ({mode} of {cid}, {record.format})")
    _trim(client, cache, cache_max_mb, deadline)
    return {"cid": cid, "mode": mode, "format": record.format}


def prefetch(
    client: KuboClient,
    cache: HostCache,
    cid: str,
    disk: Path,
    *,
    mode: str = COPY,
    image_format: str | None = None,
    vm: int | None = None,
    timeout: float,
    stall_timeout: float,
    cache_max_mb: int,
) -> dict[str, Any]:
    """Before a disk moves here (migration): hold its content and, for overlays, its base file.

    The overlay disk arrives later, so its reference is kept until released even while the disk
    file is still missing.
    """
    if mode not in MODES:
        raise InvalidInput(f"the deploy mode must be copy or overlay, not {mode[:40]!r}")
    deadline = Deadline(timeout, f"fetching {cid} ahead of {disk}")
    cache.prepare()
    with cache.content_lock(cid, deadline.left()):
        new_entry = cache.entry(cid) is None
        try:
            if mode == OVERLAY:
                holding, base, _ = _held_base(
                    client, cache, cid, image_format, deadline, stall_timeout=stall_timeout
                )
                stored = base.stored
            else:
                holding, stored = _hold(client, cache, cid, deadline, stall_timeout), 0
            cache.record(cid, _used_by(disk, vm, stored, holds=mode == OVERLAY, expected=True))
        except BaseException:
            if new_entry:
                _let_go(client, cache, cid)
            raise
    _trim(client, cache, cache_max_mb, deadline)
    return {"cid": cid, "size": holding.size}


def warm(
    client: KuboClient,
    cache: HostCache,
    cid: str,
    *,
    timeout: float,
    stall_timeout: float,
    cache_max_mb: int,
) -> dict[str, Any]:
    """Hold ``cid`` before any disk needs it (``one-ipfs prefetch`` ahead of a deploy storm).

    The entry has no reference and counts at the content's full size: it stays while the cache has
    room for it and goes least recently used first like any other, never pushing out a disk's base.
    """
    deadline = Deadline(timeout, f"warming the host cache with {cid}")
    size = _root_stat(client, cid, deadline, stall_timeout).size
    if size > cache_max_mb << 20:
        raise StorageError(
            f"{cid} ({size >> 20} MiB) is larger than the host cache (IPFS_HOST_CACHE_MB={cache_max_mb})"
        )
    cache.prepare()
    with cache.content_lock(cid, deadline.left()):
        new_entry = cache.entry(cid) is None
        try:
            holding = _hold(client, cache, cid, deadline, stall_timeout)

            def counted(entry: CacheEntry) -> None:
                entry.stored = max(entry.stored, holding.size)

            cache.record(cid, counted)
        except BaseException:
            if new_entry:
                _let_go(client, cache, cid)
            raise
    _trim(client, cache, cache_max_mb, deadline)
    if cache.entry(cid) is None:
        raise StorageError(
            f"{cid} ({size >> 20} MiB) does not fit in the host cache (IPFS_HOST_CACHE_MB={cache_max_mb})"
            " next to the content its disks use"
        )
    log_info(f"{cid} is held in the host cache")
    return {"cid": cid, "size": holding.size}


def save(
    client: KuboClient,
    cache: HostCache,
    disk: Path,
    *,
    image_format: str,
    disk_format: str | None = None,
    settings: ImportSettings,
    vm: int | None = None,
    timeout: float,
) -> dict[str, Any]:
    """Add a disk (or a snapshot of it) to the host's node as a self-contained ``image_format`` image.

    The disk file is what its deploy recorded or, where no deploy on this host recorded it (the disk
    came by a live migration, which carries disks but not our records), ``disk_format``: oned's
    DRIVER, which the hypervisor opened and migrated it as. The result stays pinned as a cache entry
    referenced by the disk, so the datastore's node can fetch it from here until the disk is deleted.
    """
    for given in (image_format, disk_format or image_format):
        if given not in disks.FORMATS:
            raise InvalidInput(f"a format must be raw or qcow2, not {given[:40]!r}")
    deadline = Deadline(timeout, f"saving {disk}")
    if not disk.is_file():
        raise StorageError(f"{disk} does not exist on this host")
    cache.prepare()
    with _self_contained(cache, disk, disk_format or image_format, image_format, deadline) as source:
        size = source.stat().st_size
        log_info(f"adding {disk} ({size >> 20} MiB, {image_format}) to this host's IPFS node")
        with cache.adding(deadline.left()):
            added = client.add(
                source, settings=settings, pin=False, progress=_add_progress(size), timeout=deadline.left()
            )
            with cache.content_lock(added.cid, deadline.left()):
                owner = pin_owner(client, added.cid)
                if owner is None:
                    client.pin_add(added.cid, name=cache_pin_name(added.cid), timeout=deadline.left())
                owns = owner is None or owner.startswith(CACHE_PIN_PREFIX)
                stored = allocated(source)

                def saved(entry: CacheEntry) -> None:
                    entry.size = added.size
                    entry.owns_pin = owns
                    _used_by(disk, vm, stored, holds=True)(entry)

                cache.record(added.cid, saved)
    log_info(f"{disk} is {added.cid}")
    return {"cid": added.cid, "size": added.size}


def delete_disk(
    client: KuboClient,
    cache: HostCache,
    disk: Path,
    *,
    vm: int | None = None,
    timeout: float,
    cache_max_mb: int,
) -> None:
    """Remove a disk with its snapshots and leftovers, and release what it held in the cache.

    A disk that is already gone is a success: OpenNebula repeats deletes.
    """
    found = _remove_file(disk)
    for leftover in (part_path(disk), disks.saving_path(disk)):
        _remove_file(leftover)
    _remove_tree(disks.snapshots_dir(disk))
    disks.remove_record(disk)
    cache.prepare()
    snapshots = f"{disks.snapshots_dir(disk)}/"
    cache.release(lambda key, ref: key == str(disk) or key.startswith(snapshots))
    owner = f" of VM {vm}" if vm is not None else ""
    log_info(f"removed {disk}{owner}" if found else f"{disk}{owner} was already removed")
    _trim(client, cache, cache_max_mb, Deadline(timeout, f"deleting {disk}"))


def delete_folder(
    client: KuboClient, cache: HostCache, folder: Path, *, timeout: float, cache_max_mb: int
) -> None:
    """Remove a VM's folder (disks, snapshots, records) and release every cache reference inside it."""
    _remove_tree(folder)
    cache.prepare()
    inside = f"{folder}/"
    cache.release(lambda key, ref: key.startswith(inside))
    log_info(f"removed {folder}")
    _trim(client, cache, cache_max_mb, Deadline(timeout, f"deleting {folder}"))


def release(client: KuboClient, cache: HostCache, vm: int, *, timeout: float, cache_max_mb: int) -> None:
    """A VM left this host (migrated, or its migration here failed): drop its cache references."""
    cache.prepare()
    touched = cache.release(lambda key, ref: ref.vm == vm)
    log_info(f"released {len(touched)} cached image(s) of VM {vm}")
    _trim(client, cache, cache_max_mb, Deadline(timeout, f"releasing VM {vm}"))


def has(client: KuboClient, cid: str, *, timeout: float) -> dict[str, Any]:
    """How much of ``cid`` this node holds, asked offline so that asking fetches nothing; content it cannot
    even describe counts as absent."""
    try:
        info = client.files_stat(f"/ipfs/{cid}", with_local=True, offline=True, timeout=timeout)
    except (ContentNotFound, IpfsTimeout):
        return {"local": False, "size_local": 0, "size": None}
    return {"local": bool(info.local), "size_local": info.size_local or 0, "size": info.size}


def snapshot_create(disk: Path, snap_id: int) -> None:
    """A full sparse copy in ``disk.<n>.snap/<id>``, as OpenNebula's ssh driver keeps them."""
    _require_disk(disk)
    folder = disks.snapshots_dir(disk)
    _make_folder(folder)
    copy_file(disk, folder / str(snap_id))
    log_info(f"created snapshot {snap_id} of {disk}")


def snapshot_create_live(disk: Path, snap_id: int, domain: str, libvirt_uri: str, *, timeout: float) -> None:
    """A snapshot of a running VM's disk, taken by its hypervisor as OpenNebula's ssh driver has KVM take it
    (``virsh blockcopy --wait --finish``): what the guest sees, in a file of the disk's format with no
    backing file, in ``disk.<n>.snap/<id>``; the guest goes on writing to its disk. A failed copy leaves
    no snapshot file."""
    _require_disk(disk)
    folder = disks.snapshots_dir(disk)
    _make_folder(folder)
    snapshot = folder / str(snap_id)
    args = ["-q", "-c", libvirt_uri, "blockcopy", domain, "--path", str(disk), "--dest", str(snapshot)]
    try:
        snapshot.touch()
        disks.run_tool("virsh", [*args, "--wait", "--finish"], timeout=timeout, doing=f"snapshot {snap_id}")
    except BaseException:
        _remove_file(snapshot)
        raise
    log_info(f"created snapshot {snap_id} of {disk} while {domain} runs")


def snapshot_revert(disk: Path, snap_id: int) -> None:
    """The disk becomes a copy of the snapshot; the snapshot stays."""
    _require_disk(disk)
    snapshot = disks.snapshots_dir(disk) / str(snap_id)
    if not snapshot.is_file():
        raise StorageError(f"snapshot {snap_id} of {disk} does not exist")
    copy_file(snapshot, disk)
    log_info(f"reverted {disk} to snapshot {snap_id}")


def snapshot_delete(disk: Path, snap_id: int) -> None:
    snapshot = disks.snapshots_dir(disk) / str(snap_id)
    if _remove_file(snapshot):
        log_info(f"deleted snapshot {snap_id} of {disk}")
    else:
        log_info(f"snapshot {snap_id} of {disk} was already deleted")


def resize(disk: Path, size_mb: int, *, image_format: str | None = None, timeout: float) -> None:
    """Grow a disk to ``size_mb`` MiB (raw: a hole at the end; qcow2: qemu-img). Disks never shrink."""
    _require_disk(disk)
    record = disks.read_record(disk)
    disk_format = record.format if record is not None else image_format or disks.probe_format(disk)
    current = disks.qcow2_size(disk) if disk_format == "qcow2" else disk.stat().st_size
    wanted = size_mb << 20
    if wanted < current:
        raise InvalidInput(f"{disk} is {current >> 20} MiB and cannot shrink to {size_mb} MiB")
    if wanted == current:
        return
    if disk_format == "qcow2":
        disks.resize_qcow2(disk, wanted, timeout=timeout)
    else:
        grow(disk, wanted)
    log_info(f"resized {disk} to {size_mb} MiB")


def monitor_marker(folder: Path, tm_name: str) -> None:
    """Mark the VM folder's system datastore for host-side monitoring, as ``enable_local_monitoring`` does:
    ``<datastore>/.monitor`` holds the name of the transfer driver whose ``monitor_ds`` reports it.

    Deploys on one host run at once, so each writes a temporary file of its own before the rename."""
    marker = folder.parent / ".monitor"
    _make_folder(folder.parent)
    try:
        if marker.is_file() and marker.read_text(encoding="utf-8").strip() == tm_name:
            return
        fd, temporary = tempfile.mkstemp(prefix=".monitor.", suffix=".tmp", dir=folder.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(f"{tm_name}\n")
            os.chmod(temporary, 0o644)
            os.replace(temporary, marker)
        except OSError:
            os.unlink(temporary)
            raise
    except OSError as exc:
        raise StorageError(f"cannot write {marker}: {exc.strerror}") from None


def cache_status(cache: HostCache) -> dict[str, Any]:
    cache.prepare()
    statuses = cache.status()
    entries = [
        {**status.entry.to_json(), "base_bytes": status.base_bytes, "cost": status.cost}
        for status in sorted(statuses, key=lambda s: s.entry.last_used, reverse=True)
    ]
    return {"folder": str(cache.folder), "total_bytes": sum(s.cost for s in statuses), "entries": entries}


def cache_evict(client: KuboClient, cache: HostCache, keep_mb: int, *, timeout: float) -> dict[str, Any]:
    """Trim the cache to ``keep_mb`` MiB now; referenced entries stay whatever their size."""
    cache.prepare()
    evicted = cache.evict(client, keep_mb << 20, gc_timeout=timeout)
    return {"evicted": evicted, "total_bytes": sum(status.cost for status in cache.status())}


def _hold(
    client: KuboClient,
    cache: HostCache,
    cid: str,
    deadline: Deadline,
    stall_timeout: float,
    *,
    into: Sequence[SparseFile] = (),
) -> Holding:
    """Make the host's node hold ``cid`` completely; the caller holds the CID's lock.

    Content pinned by another party is used as it is (pinning again would rename its pin).
    Blocks fetched before a failure stay in the blockstore, so a retry resumes where this stopped.
    With ``into``, content that has to be fetched is written into those files as its blocks arrive,
    where the DAG's layout allows (``Holding.assembled``).
    """
    info = _root_stat(client, cid, deadline, stall_timeout)
    if info.type != "file":
        raise InvalidInput(f"{cid} is a {info.type or 'non-file'}, not a disk image file")
    owner = pin_owner(client, cid)
    layout, sink = None, None
    if owner is None:
        log_info(f"fetching {cid} ({info.size >> 20} MiB) into this host's IPFS node")
        with cache.adding(deadline.left()):  # blocks fetched but not pinned yet must not meet a collection
            until = time.monotonic() + deadline.left()
            layout = file_layout(client, cid, info.size, stall_timeout=stall_timeout, deadline=until)
            if into and layout.assemblable:
                sink = _writer(into, layout, block_reader(client), deadline, stall_timeout)
            _pin(client, layout, deadline, stall_timeout, sink)
    else:
        log_info(f"{cid} is already held by this host's IPFS node")
    owns = owner is None or owner.startswith(CACHE_PIN_PREFIX)

    def held(entry: CacheEntry) -> None:
        entry.size = info.size
        entry.owns_pin = owns

    cache.record(cid, held)
    return Holding(cid, info.size, layout, assembled=sink is not None)


def _assemble(
    client: KuboClient, holding: Holding, outs: Sequence[SparseFile], deadline: Deadline, stall_timeout: float
) -> None:
    """Write held content into ``outs``: from its leaf blocks, several at once, else from Kubo's reader."""
    layout = holding.layout or file_layout(
        client,
        holding.cid,
        holding.size,
        stall_timeout=stall_timeout,
        deadline=time.monotonic() + deadline.left(),
    )
    if layout.assemblable:
        write = _writer(outs, layout, block_reader(client), deadline, stall_timeout)
        with ThreadPoolExecutor(SCATTER_WORKERS) as pool:
            for _ in pool.map(write, layout.leaves):
                pass
        for out in outs:
            out.skip(holding.size)
        return
    with _stream(client.cat(f"/ipfs/{holding.cid}", timeout=deadline.left())) as chunks:
        for chunk in chunks:
            for out in outs:
                out.write(chunk)


def _writer(
    outs: Sequence[SparseFile],
    layout: FileLayout,
    read: BlockReader,
    deadline: Deadline,
    stall_timeout: float,
) -> BlockSink:
    """Write each leaf at every offset it lies at, read from the node once it holds it unless the
    fetch brought its bytes."""

    def write(leaf: Leaf, data: bytes | None = None) -> None:
        if data is None:
            data = read(leaf.cid, min(stall_timeout, deadline.left()))
        if len(data) != leaf.size:
            raise InvalidInput(
                f"{layout.cid} is malformed: its block {leaf.cid} holds {len(data)} bytes, "
                f"its parent says {leaf.size}"
            )
        for out in outs:
            for offset in leaf.offsets:
                out.write_at(offset, data)

    return write


def _root_stat(client: KuboClient, cid: str, deadline: Deadline, stall_timeout: float) -> FileStat:
    return stat_patiently(
        client, cid, stall_timeout=stall_timeout, deadline=time.monotonic() + deadline.left()
    )


def _pin(
    client: KuboClient, layout: FileLayout, deadline: Deadline, stall_timeout: float, sink: BlockSink | None
) -> None:
    scatter_fetch(
        client,
        layout,
        log=log_info,
        timeout=deadline.left(),
        stall_timeout=stall_timeout,
        sink=sink,
        fleet=True,
    )
    pin_with_progress(
        client,
        layout.cid,
        cache_pin_name(layout.cid),
        log=log_info,
        timeout=deadline.left(),
        stall_timeout=stall_timeout,
        total_bytes=layout.size,
    )


def _let_go(client: KuboClient, cache: HostCache, cid: str) -> None:
    """Undo a failed deploy that created the cache entry: the entry goes, with its pin and base."""
    try:
        unpin_cache_pin(client, cid)
        cache.forget(cid)
    except OneIpfsError as exc:
        log_info(f"could not release {cid} after the failure: {exc}")


def _held_base(
    client: KuboClient,
    cache: HostCache,
    cid: str,
    image_format: str | None,
    deadline: Deadline,
    *,
    stall_timeout: float,
    copy_to: Path | None = None,
) -> tuple[Holding, Base, Written | None]:
    """Hold ``cid`` and the host's base file of it, which copies and overlays are made from.

    The base is written once per host (under the CID's lock): while the blocks arrive when the
    content has to be fetched, else from the node, and with ``copy_to`` that disk beside it, block
    for block (then the disk is written too: its Written is returned). The base stays in the cache
    with the content, so the next disk of the image on this host is a local copy, or an overlay.
    A base written for copies is not synced (the disk made with it is): it serves this boot only,
    until an overlay needs it, which syncs it.
    """
    cache.drop_stale_bases(cid)
    durable, boot_local = cache.base_path(cid), cache.boot_base_path(cid)
    if copy_to is None and boot_local is not None and boot_local.exists() and not durable.exists():
        persist(boot_local, durable)  # an overlay's base must survive a reboot
    existing = next((path for path in (durable, boot_local) if path is not None and path.exists()), None)
    if existing is not None:
        holding = _hold(client, cache, cid, deadline, stall_timeout)
        return holding, _checked_base(existing, image_format, 0, [existing]), None
    path = boot_local if copy_to is not None and boot_local is not None else durable
    with ExitStack() as files:
        outs = [
            files.enter_context(SparseFile(target, mode)) for target, mode in _base_targets(path, copy_to)
        ]
        holding = _hold(client, cache, cid, deadline, stall_timeout, into=outs)
        if holding.assembled:
            for out in outs:
                out.skip(holding.size)
        else:
            _assemble(client, holding, outs, deadline, stall_timeout)
        try:
            with ThreadPoolExecutor(len(outs)) as pool:  # the fsyncs of base and disk overlap
                written = list(
                    pool.map(
                        lambda out: out.commit(expected_size=holding.size, sync=out.target != boot_local),
                        outs,
                    )
                )
        except BaseException:
            for out in outs:
                if out.committed:
                    _remove_file(out.target)
            raise
    base = _checked_base(path, image_format, written[0].stored, [out.target for out in outs])
    log_info(f"wrote the base file of {cid}: {holding.size >> 20} MiB, {base.stored >> 20} MiB of it data")
    return holding, base, written[1] if copy_to is not None else None


def _base_targets(base: Path, disk: Path | None) -> list[tuple[Path, int]]:
    return [(base, 0o444), *([(disk, 0o644)] if disk is not None else [])]


def _checked_base(path: Path, image_format: str | None, stored: int, made: list[Path]) -> Base:
    """The base with its format; a base that is not ``image_format`` goes, with the files ``made`` with it."""
    try:
        content = disks.content_format(path, image_format)
    except InvalidInput:
        for target in made:
            _remove_file(target)
        raise
    return Base(path, content, stored)


def _deploy_copy(
    base: Base, cid: str, disk: Path, *, size_mb: int, deadline: Deadline, written: Written | None
) -> DiskRecord:
    """The disk is a copy of the base file, made in the kernel (a reflink on XFS and btrfs), unless it
    was ``written`` already beside the base."""
    wanted = size_mb << 20
    raw = base.content.format == "raw"
    try:
        if written is None:
            written = copy_file(base.path, disk, in_kernel=True, grow_to=wanted if raw else 0)
        elif raw:
            grow(disk, wanted)
        if not raw and wanted > base.content.virtual_size:
            disks.resize_qcow2(disk, wanted, timeout=deadline.left())
    except BaseException:
        _remove_file(disk)
        raise
    log_info(f"wrote {disk}: {written.size >> 20} MiB, {written.stored >> 20} MiB of it data")
    return DiskRecord(cid, base.content.format, COPY)


def _deploy_converted(
    base: Base, cid: str, disk: Path, disk_format: str, *, size_mb: int, deadline: Deadline
) -> DiskRecord:
    """The disk is the base converted to the format the hypervisor will be told (a raw image of an
    OVERLAY datastore, whose FORMAT is qcow2, deployed as a persistent copy)."""
    size = max(size_mb << 20, base.content.virtual_size)
    log_info(f"converting the {base.content.format} base of {cid} into the {disk_format} disk {disk}")
    disks.convert_disk(base.path, base.content.format, disk, disk_format, size, timeout=deadline.left())
    return DiskRecord(cid, disk_format, COPY)


def _deploy_overlay(base: Base, cid: str, disk: Path, *, size_mb: int, deadline: Deadline) -> DiskRecord:
    wanted = size_mb << 20
    size = wanted if wanted > base.content.virtual_size else None
    disks.create_overlay(base.path, base.content.format, disk, size, timeout=deadline.left())
    return DiskRecord(cid, "qcow2", OVERLAY)


def _used_by(
    disk: Path, vm: int | None, stored: int, *, holds: bool, expected: bool = False
) -> Callable[[CacheEntry], None]:
    """The change to an entry when ``disk`` is made from it; ``holds`` if the disk needs it to stay."""

    def change(entry: CacheEntry) -> None:
        entry.stored = max(entry.stored, stored)
        if holds:
            known = entry.refs.get(str(disk))
            entry.refs[str(disk)] = Reference(vm if vm is not None or known is None else known.vm, expected)

    return change


@contextmanager
def _self_contained(
    cache: HostCache, disk: Path, unrecorded_format: str, image_format: str, deadline: Deadline
) -> Iterator[Path]:
    """A standalone ``image_format`` file with the disk's content: the disk itself, the base of an
    overlay the guest never wrote to (so an unchanged disk keeps its CID), or a converted copy. The
    disk file is the format its record says, ``unrecorded_format`` where it has none."""
    record = disks.read_record(disk)
    disk_format = record.format if record is not None else unrecorded_format
    if record is None or record.mode == COPY:
        if disk_format == image_format:
            yield disk
            return
    else:
        base = cache.base_path(record.cid)
        content = disks.content_format(base, None) if base.is_file() else None
        if (
            content is not None
            and content.format == image_format
            and disks.overlay_untouched(disk, content, timeout=deadline.left())
        ):
            log_info(f"{disk} is unchanged: saving its base {record.cid}")
            yield base
            return
    temporary = disks.saving_path(disks.disk_of(disk))
    log_info(f"converting {disk} into a self-contained {image_format} image")
    try:
        disks.convert(disk, disk_format, temporary, image_format, timeout=deadline.left())
        yield temporary
    finally:
        _remove_file(temporary)


@contextmanager
def _stream(chunks: Iterator[bytes]) -> Iterator[Iterator[bytes]]:
    """Close a Kubo stream however its reading ends: closing cancels the read in Kubo."""
    try:
        yield chunks
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _add_progress(total: int) -> Callable[[int], None]:
    last = [time.monotonic()]

    def report(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            log_info(f"added {done >> 20} of {total >> 20} MiB")

    return report


def _trim(client: KuboClient, cache: HostCache, cache_max_mb: int, deadline: Deadline) -> None:
    """Keep the cache within its size; a failure here never fails the command that came before."""
    try:
        cache.evict(client, cache_max_mb << 20, gc_timeout=deadline.left())
    except OneIpfsError as exc:
        log_info(f"the host cache was not trimmed: {exc}")


def _require_disk(disk: Path) -> None:
    if not disk.is_file():
        raise StorageError(f"{disk} does not exist on this host")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {folder}: {exc.strerror}") from None


def _remove_file(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot remove {path}: {exc.strerror}") from None
    return True


def _remove_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot remove {path}: {exc.strerror}") from None
