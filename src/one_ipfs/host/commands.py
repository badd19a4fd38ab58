"""The host commands: one plain function each; ``__main__`` only parses arguments and calls them.

Every command is bounded in time, leaves nothing half done on failure (no partial disk, no pin
the cache does not account for) and is safe to repeat, because OpenNebula retries. The commands
that need content here get it from the deploy engine (``deploy``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from one_ipfs.errors import ContentNotFound, InvalidInput, IpfsTimeout, StorageError
from one_ipfs.host import disks, log_info
from one_ipfs.host import protocol as p
from one_ipfs.host.cache import CACHE_PIN_PREFIX, CacheEntry, HostCache, cache_pin_name, pin_owner
from one_ipfs.host.deploy import (
    Deadline,
    deploy_converted,
    deploy_copy,
    deploy_overlay,
    entry_kept,
    held_base,
    hold,
    root_stat,
    trim,
    used_by,
)
from one_ipfs.host.disks import COPY, OVERLAY
from one_ipfs.host.sparse import allocated, copy_file, grow, part_path, remove_file
from one_ipfs.ipfs.fetching import PROGRESS_EVERY
from one_ipfs.ipfs.rpc import KuboClient

MODES = (COPY, OVERLAY)


def fetch(client: KuboClient, cache: HostCache, request: p.Fetch) -> p.Deployed:
    """Deploy a disk from IPFS: the host's node pins the CID and writes its base file (once per
    host), then the disk is a sparse copy of the base (copy) or a qcow2 overlay on it (overlay).

    ``format`` is what the content's bytes are, ``disk_format`` what the hypervisor will be told the
    disk is (oned's DISK/DRIVER): a copy whose base is in another format is converted to it.
    """
    cid, disk = request.cid, request.disk
    if request.mode == OVERLAY and request.disk_format not in (None, "qcow2"):
        raise InvalidInput(f"an overlay is a qcow2 file, but {disk} is to be {request.disk_format}")
    if request.monitor_tm:
        _mark_monitored(disk.parent, request.monitor_tm)
    deployed = disks.read_record(disk) if disk.is_file() else None
    if deployed is not None and (deployed.cid, deployed.mode) == (cid, request.mode):
        # oned retrying a deploy that succeeded: the guest may have written to the disk since.
        log_info(f"{disk} is already deployed from {cid}: kept as it is")
        return p.Deployed(cid, request.mode, deployed.format)
    deadline = Deadline(request.timeout, f"deploying {cid} to {disk}")
    _make_folder(disk.parent)
    with entry_kept(client, cache, cid, deadline, request.cache.max_mb):
        _, base, written = held_base(
            client,
            cache,
            cid,
            request.format,
            deadline,
            stall_timeout=request.stall_timeout,
            copy_to=disk if request.mode == COPY and request.disk_format in (None, request.format) else None,
        )
        if request.mode == OVERLAY:
            record = deploy_overlay(base, cid, disk, size_mb=request.size_mb, deadline=deadline)
        elif request.disk_format not in (None, base.content.format):
            record = deploy_converted(
                base,
                cid,
                disk,
                request.disk_format,
                size_mb=request.size_mb,
                deadline=deadline,
            )
        else:
            record = deploy_copy(base, cid, disk, size_mb=request.size_mb, deadline=deadline, written=written)
        try:
            disks.write_record(disk, record)
            cache.record(cid, used_by(disk, request.vm, base.stored, holds=request.mode == OVERLAY))
        except BaseException:
            remove_file(disk)
            disks.remove_record(disk)
            raise
        log_info(f"{disk} is ready ({request.mode} of {cid}, {record.format})")
    return p.Deployed(cid, request.mode, record.format)


def prefetch(client: KuboClient, cache: HostCache, request: p.Prefetch) -> p.Stored:
    """Before a disk moves here (migration): hold its content and, for overlays, its base file.

    The overlay disk arrives later, so its use is kept until released even while the disk
    file is still missing.
    """
    cid, disk = request.cid, request.disk
    deadline = Deadline(request.timeout, f"fetching {cid} ahead of {disk}")
    with entry_kept(client, cache, cid, deadline, request.cache.max_mb):
        if request.mode == OVERLAY:
            holding, base, _ = held_base(
                client, cache, cid, request.format, deadline, stall_timeout=request.stall_timeout
            )
            stored = base.stored
        else:
            holding, stored = hold(client, cache, cid, deadline, request.stall_timeout), 0
        cache.record(
            cid,
            used_by(disk, request.vm, stored, holds=request.mode == OVERLAY, expected=True),
        )
    return p.Stored(cid, holding.size)


def warm(client: KuboClient, cache: HostCache, request: p.Warm) -> p.Held:
    """Hold ``cid`` before any disk needs it (``one-ipfs prefetch`` ahead of a deploy storm).

    No disk uses the entry and it counts at the content's full size: it stays while the cache has
    room for it and goes least recently used first like any other, never pushing out a disk's base.
    """
    cid, room = request.cid, request.cache.max_mb
    deadline = Deadline(request.timeout, f"warming the host cache with {cid}")
    size = root_stat(client, cid, deadline, request.stall_timeout).size
    if size > room << 20:
        raise StorageError(
            f"{cid} ({size >> 20} MiB) is larger than the host cache (IPFS_HOST_CACHE_MB={room})"
        )
    with entry_kept(client, cache, cid, deadline, room):
        holding = hold(client, cache, cid, deadline, request.stall_timeout)

        def counted(entry: CacheEntry) -> None:
            entry.stored = max(entry.stored, holding.size)

        cache.record(cid, counted)
    if cache.entry(cid) is None:
        raise StorageError(
            f"{cid} ({size >> 20} MiB) does not fit in the host cache (IPFS_HOST_CACHE_MB={room})"
            " next to the content its disks use"
        )
    log_info(f"{cid} is held in the host cache")
    return p.Held(cid, holding.size)


def save(client: KuboClient, cache: HostCache, request: p.Save) -> p.Stored:
    """Add a disk (or a snapshot of it) to the host's node as a self-contained image of ``format``.

    The disk file is what its deploy recorded or, where no deploy on this host recorded it (the disk
    came by a live migration, which carries disks but not our records), ``disk_format``: oned's
    DRIVER, which the hypervisor opened and migrated it as. The result stays pinned as a cache entry
    the disk uses, so the datastore's node can fetch it from here until the disk is deleted.
    """
    disk = request.disk
    deadline = Deadline(request.timeout, f"saving {disk}")
    if not disk.is_file():
        raise StorageError(f"{disk} does not exist on this host")
    cache.prepare()
    with _self_contained(
        cache, disk, request.disk_format or request.format, request.format, deadline
    ) as source:
        size = source.stat().st_size
        log_info(f"adding {disk} ({size >> 20} MiB, {request.format}) to this host's IPFS node")
        with cache.adding(deadline.left()):
            added = client.add(
                source,
                settings=request.settings,
                pin=False,
                progress=_add_progress(size),
                timeout=deadline.left(),
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
                    used_by(disk, request.vm, stored, holds=True)(entry)

                cache.record(added.cid, saved)
    log_info(f"{disk} is {added.cid}")
    return p.Stored(added.cid, added.size)


def delete_disk(client: KuboClient, cache: HostCache, request: p.DeleteDisk) -> p.Removed:
    """Remove a disk with its snapshots and leftovers, and release what it held in the cache.

    A disk that is already gone is a success: OpenNebula repeats deletes.
    """
    disk = request.disk
    found = remove_file(disk)
    for leftover in (part_path(disk), disks.saving_path(disk)):
        remove_file(leftover)
    _remove_tree(disks.snapshots_dir(disk))
    disks.remove_record(disk)
    cache.prepare()
    snapshots = f"{disks.snapshots_dir(disk)}/"
    cache.release(lambda key, use: key == str(disk) or key.startswith(snapshots))
    owner = f" of VM {request.vm}" if request.vm is not None else ""
    log_info(f"removed {disk}{owner}" if found else f"{disk}{owner} was already removed")
    trim(client, cache, request.cache.max_mb, Deadline(request.timeout, f"deleting {disk}"))
    return p.Removed()


def delete_folder(client: KuboClient, cache: HostCache, request: p.DeleteFolder) -> p.Removed:
    """Remove a VM's folder (disks, snapshots, records) and release every cache use inside it."""
    _remove_tree(request.dir)
    cache.prepare()
    inside = f"{request.dir}/"
    cache.release(lambda key, use: key.startswith(inside))
    log_info(f"removed {request.dir}")
    trim(client, cache, request.cache.max_mb, Deadline(request.timeout, f"deleting {request.dir}"))
    return p.Removed()


def release(client: KuboClient, cache: HostCache, request: p.Release) -> p.Done:
    """A VM left this host (migrated, or its migration here failed): drop its disks' cache uses."""
    cache.prepare()
    touched = cache.release(lambda key, use: use.vm == request.vm)
    log_info(f"released {len(touched)} cached image(s) of VM {request.vm}")
    trim(client, cache, request.cache.max_mb, Deadline(request.timeout, f"releasing VM {request.vm}"))
    return p.Done()


def has(client: KuboClient, request: p.Has) -> p.Presence:
    """How much of ``cid`` this node holds, asked offline so that asking fetches nothing; content it cannot
    even describe counts as absent."""
    try:
        info = client.files_stat(
            f"/ipfs/{request.cid}", with_local=True, offline=True, timeout=request.timeout
        )
    except (ContentNotFound, IpfsTimeout):
        return p.Presence(local=False, size_local=0)
    return p.Presence(bool(info.local), info.size_local or 0, info.size)


def snapshot_create(request: p.SnapshotCreate) -> p.Done:
    """A full sparse copy in ``disk.<n>.snap/<id>``, as OpenNebula's ssh driver keeps them."""
    _require_disk(request.disk)
    folder = disks.snapshots_dir(request.disk)
    _make_folder(folder)
    copy_file(request.disk, folder / str(request.snap_id))
    log_info(f"created snapshot {request.snap_id} of {request.disk}")
    return p.Done()


def snapshot_create_live(request: p.SnapshotCreateLive) -> p.Done:
    """A snapshot of a running VM's disk, taken by its hypervisor as OpenNebula's ssh driver has KVM take it
    (``virsh blockcopy --wait --finish``): what the guest sees, in a file of the disk's format with no
    backing file, in ``disk.<n>.snap/<id>``; the guest goes on writing to its disk. A failed copy leaves
    no snapshot file."""
    _require_disk(request.disk)
    folder = disks.snapshots_dir(request.disk)
    _make_folder(folder)
    snapshot = folder / str(request.snap_id)
    args = [
        "-q",
        "-c",
        request.libvirt_uri,
        "blockcopy",
        request.domain,
        "--path",
        str(request.disk),
        "--dest",
        str(snapshot),
    ]
    try:
        snapshot.touch()
        disks.run_tool(
            "virsh",
            [*args, "--wait", "--finish"],
            timeout=request.timeout,
            doing=f"snapshot {request.snap_id}",
        )
    except BaseException:
        remove_file(snapshot)
        raise
    log_info(f"created snapshot {request.snap_id} of {request.disk} while {request.domain} runs")
    return p.Done()


def snapshot_revert(request: p.SnapshotCreate) -> p.Done:
    """The disk becomes a copy of the snapshot; the snapshot stays."""
    _require_disk(request.disk)
    snapshot = disks.snapshots_dir(request.disk) / str(request.snap_id)
    if not snapshot.is_file():
        raise StorageError(f"snapshot {request.snap_id} of {request.disk} does not exist")
    copy_file(snapshot, request.disk)
    log_info(f"reverted {request.disk} to snapshot {request.snap_id}")
    return p.Done()


def snapshot_delete(request: p.SnapshotCreate) -> p.Done:
    snapshot = disks.snapshots_dir(request.disk) / str(request.snap_id)
    if remove_file(snapshot):
        log_info(f"deleted snapshot {request.snap_id} of {request.disk}")
    else:
        log_info(f"snapshot {request.snap_id} of {request.disk} was already deleted")
    return p.Done()


def resize(request: p.Resize) -> p.Done:
    """Grow a disk to ``size_mb`` MiB (raw: a hole at the end; qcow2: qemu-img). Disks never shrink."""
    _require_disk(request.disk)
    record = disks.read_record(request.disk)
    disk_format = record.format if record is not None else request.format or disks.probe_format(request.disk)
    current = disks.qcow2_size(request.disk) if disk_format == "qcow2" else request.disk.stat().st_size
    wanted = request.size_mb << 20
    if wanted < current:
        raise InvalidInput(
            f"{request.disk} is {current >> 20} MiB and cannot shrink to {request.size_mb} MiB"
        )
    if wanted == current:
        return p.Done()
    if disk_format == "qcow2":
        disks.resize_qcow2(request.disk, wanted, timeout=request.timeout)
    else:
        grow(request.disk, wanted)
    log_info(f"resized {request.disk} to {request.size_mb} MiB")
    return p.Done()


def monitor_marker(request: p.MonitorMarker) -> p.Done:
    _mark_monitored(request.dir, request.tm)
    return p.Done()


def _mark_monitored(folder: Path, tm_name: str) -> None:
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


def cache_status(cache: HostCache) -> p.CacheListing:
    cache.prepare()
    statuses = cache.status()
    entries = [
        {**status.entry.to_json(), "base_bytes": status.base_bytes, "cost": status.cost}
        for status in sorted(statuses, key=lambda s: s.entry.last_used, reverse=True)
    ]
    return p.CacheListing(str(cache.folder), sum(s.cost for s in statuses), tuple(entries))


def cache_evict(client: KuboClient, cache: HostCache, request: p.CacheEvict) -> p.Evicted:
    """Trim the cache to ``keep_mb`` MiB now; entries a disk uses stay whatever their size."""
    cache.prepare()
    evicted = cache.evict(client, request.keep_mb << 20, gc_timeout=request.timeout)
    return p.Evicted(tuple(evicted), sum(status.cost for status in cache.status()))


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
        remove_file(temporary)


def _add_progress(total: int) -> Callable[[int], None]:
    last = [time.monotonic()]

    def report(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            log_info(f"added {done >> 20} of {total >> 20} MiB")

    return report


def _require_disk(disk: Path) -> None:
    if not disk.is_file():
        raise StorageError(f"{disk} does not exist on this host")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {folder}: {exc.strerror}") from None


def _remove_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot remove {path}: {exc.strerror}") from None
