"""The deploy engine of a host: its node comes to hold a CID, and the CID's base file is written once,
which the disks of that content are then copies of, or overlays on.

``commands`` calls it for every command that needs content here (fetch, prefetch, warm); it fetches
through ``one_ipfs.ipfs.fetching`` from the fleet and accounts for what it holds in ``cache``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from one_ipfs.errors import InvalidInput, IpfsTimeout, OneIpfsError
from one_ipfs.host import disks, log_info
from one_ipfs.host.cache import (
    CACHE_PIN_PREFIX,
    CacheEntry,
    DiskUse,
    HostCache,
    cache_pin_name,
    pin_owner,
    unpin_cache_pin,
)
from one_ipfs.host.disks import COPY, OVERLAY, DiskRecord
from one_ipfs.host.sparse import SparseFile, Written, copy_file, grow, persist, remove_file
from one_ipfs.ipfs.fetching import (
    SCATTER_WORKERS,
    BlockSink,
    FileLayout,
    Leaf,
    file_layout,
    pin_with_progress,
    scatter_fetch,
    stat_patiently,
)
from one_ipfs.ipfs.gateway import BlockReader, block_reader
from one_ipfs.ipfs.rpc import FileStat, KuboClient


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
    """Where its leaves lie, when ``hold`` had to read it."""
    assembled: bool = False
    """The content was also written into the files given to ``hold``, block by block as it came."""


@dataclass(frozen=True)
class Base:
    """The read-only file overlays of one CID are made on, and the bytes written to make it now."""

    path: Path
    content: disks.ContentFormat
    stored: int


@contextmanager
def entry_kept(
    client: KuboClient, cache: HostCache, cid: str, deadline: Deadline, cache_max_mb: int
) -> Iterator[None]:
    """The frame every command that holds content runs in (fetch, prefetch, warm): the CID's lock is
    held throughout; if the command fails, a cache entry it created goes again with its pin and base,
    and once it succeeds the cache is trimmed to its size (never evicting what the command made)."""
    cache.prepare()
    with cache.content_lock(cid, deadline.left()):
        new_entry = cache.entry(cid) is None
        try:
            yield
        except BaseException:
            if new_entry:
                _let_go(client, cache, cid)
            raise
    trim(client, cache, cache_max_mb, deadline)


def hold(
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
    info = root_stat(client, cid, deadline, stall_timeout)
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


def held_base(
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
        holding = hold(client, cache, cid, deadline, stall_timeout)
        return holding, _checked_base(existing, image_format, 0, [existing]), None
    path = boot_local if copy_to is not None and boot_local is not None else durable
    with ExitStack() as files:
        outs = [
            files.enter_context(SparseFile(target, mode)) for target, mode in _base_targets(path, copy_to)
        ]
        holding = hold(client, cache, cid, deadline, stall_timeout, into=outs)
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
                    remove_file(out.target)
            raise
    base = _checked_base(path, image_format, written[0].stored, [out.target for out in outs])
    log_info(f"wrote the base file of {cid}: {holding.size >> 20} MiB, {base.stored >> 20} MiB of it data")
    return holding, base, written[1] if copy_to is not None else None


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


def root_stat(client: KuboClient, cid: str, deadline: Deadline, stall_timeout: float) -> FileStat:
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


def _base_targets(base: Path, disk: Path | None) -> list[tuple[Path, int]]:
    return [(base, 0o444), *([(disk, 0o644)] if disk is not None else [])]


def _checked_base(path: Path, image_format: str | None, stored: int, made: list[Path]) -> Base:
    """The base with its format; a base that is not ``image_format`` goes, with the files ``made`` with it."""
    try:
        content = disks.content_format(path, image_format)
    except InvalidInput:
        for target in made:
            remove_file(target)
        raise
    return Base(path, content, stored)


def deploy_copy(
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
        remove_file(disk)
        raise
    log_info(f"wrote {disk}: {written.size >> 20} MiB, {written.stored >> 20} MiB of it data")
    return DiskRecord(cid, base.content.format, COPY)


def deploy_converted(
    base: Base, cid: str, disk: Path, disk_format: str, *, size_mb: int, deadline: Deadline
) -> DiskRecord:
    """The disk is the base converted to the format the hypervisor will be told (a raw image of an
    OVERLAY datastore, whose FORMAT is qcow2, deployed as a persistent copy)."""
    size = max(size_mb << 20, base.content.virtual_size)
    log_info(f"converting the {base.content.format} base of {cid} into the {disk_format} disk {disk}")
    disks.convert_disk(base.path, base.content.format, disk, disk_format, size, timeout=deadline.left())
    return DiskRecord(cid, disk_format, COPY)


def deploy_overlay(base: Base, cid: str, disk: Path, *, size_mb: int, deadline: Deadline) -> DiskRecord:
    wanted = size_mb << 20
    size = wanted if wanted > base.content.virtual_size else None
    disks.create_overlay(base.path, base.content.format, disk, size, timeout=deadline.left())
    return DiskRecord(cid, "qcow2", OVERLAY)


def used_by(
    disk: Path, vm: int | None, stored: int, *, holds: bool, expected: bool = False
) -> Callable[[CacheEntry], None]:
    """The change to an entry when ``disk`` is made from it; ``holds`` if the disk needs it to stay."""

    def change(entry: CacheEntry) -> None:
        entry.stored = max(entry.stored, stored)
        if holds:
            known = entry.uses.get(str(disk))
            entry.uses[str(disk)] = DiskUse(vm if vm is not None or known is None else known.vm, expected)

    return change


@contextmanager
def _stream(chunks: Iterator[bytes]) -> Iterator[Iterator[bytes]]:
    """Close a Kubo stream however its reading ends: closing cancels the read in Kubo."""
    try:
        yield chunks
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def trim(client: KuboClient, cache: HostCache, cache_max_mb: int, deadline: Deadline) -> None:
    """Keep the cache within its size; a failure here never fails the command that came before."""
    try:
        cache.evict(client, cache_max_mb << 20, gc_timeout=deadline.left())
    except OneIpfsError as exc:
        log_info(f"the host cache was not trimmed: {exc}")
