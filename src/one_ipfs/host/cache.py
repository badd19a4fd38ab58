"""The host cache: what this host's node holds for deployed disks, and who still needs it.

Layout of the cache folder (default ``/var/lib/one/datastores/.one-ipfs-cache``)::

    entries/<cid>.json   one entry per CID: size, bytes held, last use, whether the cache owns
                         the pin, and its uses (``refs``: disk path -> VM id) by the disks made from it
    bases/<cid>          the image as a read-only file, which copy and overlay disks are made from
                         (written once per host; it counts toward the cache's size)
    bases/<cid>.boot-<id>  the same, written for copies only and never synced: trusted in the boot
                         that wrote it (the page cache holds what the disk may not), dropped after
    locks/<cid>.lock     held while one CID is fetched or evicted: concurrent deploys fetch once
    index.lock           held while entries change (short)
    gc.lock              shared while content is added and not yet pinned, exclusive for repo/gc

Entries are separate files so that deploys of different CIDs never wait for one another. The
cache pins content as ``one-cache-<cid>``; a CID some other party pinned first is used but never
unpinned. Eviction removes only entries no disk uses, least recently used first, so a disk never
loses the base it is an overlay of.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from one_ipfs.errors import CommandFailed, ContentNotFound, IpfsTimeout, StorageError
from one_ipfs.host import log_info
from one_ipfs.host.sparse import allocated, sync_folder
from one_ipfs.ipfs.rpc import KuboClient

CACHE_PIN_PREFIX = "one-cache-"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
BOOT_SUFFIX = ".boot-"
INDEX_LOCK_TIMEOUT = 120.0
GC_LOCK_WAIT = 2.0
"""Seconds an eviction waits for fetches and additions under way before it postpones the collection of what
it unpinned: a deploy that trims the cache does not wait for another deploy's fetch."""
LOCK_POLL = 0.1


def cache_pin_name(cid: str) -> str:
    return CACHE_PIN_PREFIX + cid


@dataclass
class DiskUse:
    """A disk made from (or saved as) a cached CID uses its entry: the entry stays while it does.

    ``expected`` marks a disk announced before its file arrives (a migration target): its use is kept
    until released, while other uses lapse once their disk file is gone (moved away).
    """

    vm: int | None
    expected: bool = False


@dataclass
class CacheEntry:
    cid: str
    size: int = 0
    stored: int = 0
    owns_pin: bool = False
    last_used: float = 0.0
    uses: dict[str, DiskUse] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "cid": self.cid,
            "size": self.size,
            "stored": self.stored,
            "owns_pin": self.owns_pin,
            "last_used": self.last_used,
            # Stored under "refs", the key entries have always had, so that caches on hosts read unchanged.
            "refs": {key: {"vm": use.vm, "expected": use.expected} for key, use in sorted(self.uses.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CacheEntry:
        uses = {
            str(key): DiskUse(
                None if value.get("vm") is None else int(value["vm"]), bool(value.get("expected"))
            )
            for key, value in dict(data.get("refs", {})).items()
        }
        return cls(
            cid=str(data["cid"]),
            size=int(data.get("size", 0)),
            stored=int(data.get("stored", 0)),
            owns_pin=bool(data.get("owns_pin", False)),
            last_used=float(data.get("last_used", 0.0)),
            uses=uses,
        )


@dataclass(frozen=True)
class EntryStatus:
    """An entry as reported by ``cache-status``: with its base and what it costs the host."""

    entry: CacheEntry
    base_bytes: int

    @property
    def cost(self) -> int:
        return self.entry.stored + self.base_bytes


class HostCache:
    """The cache folder of this host (see the module docstring for its layout)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.entries_dir = folder / "entries"
        self.bases_dir = folder / "bases"
        self.locks_dir = folder / "locks"

    def prepare(self) -> None:
        try:
            for path in (self.folder, self.entries_dir, self.bases_dir, self.locks_dir):
                path.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the IPFS cache folder {self.folder}: {exc.strerror}") from None

    def base_path(self, cid: str) -> Path:
        """The base on stable storage: overlays need one that survives a reboot."""
        return self.bases_dir / cid

    def boot_base_path(self, cid: str) -> Path | None:
        """A base this boot may write without syncing it (copies are made from it, then synced
        themselves); None where the boot cannot be told apart."""
        boot = boot_id()
        return self.bases_dir / f"{cid}{BOOT_SUFFIX}{boot}" if boot else None

    def drop_stale_bases(self, cid: str) -> None:
        """Bases of ``cid`` left unsynced by an earlier boot: their bytes may never have reached the disk."""
        current = self.boot_base_path(cid)
        for path in self._boot_bases(cid):
            if path != current:
                _unlink(path)

    def base_bytes(self, cid: str) -> int:
        return sum(allocated(path) for path in (self.base_path(cid), *self._boot_bases(cid)))

    def _boot_bases(self, cid: str) -> list[Path]:
        """The unsynced bases of ``cid``, of this boot and of earlier ones."""
        return list(self.bases_dir.glob(f"{cid}{BOOT_SUFFIX}*"))

    @contextmanager
    def content_lock(self, cid: str, timeout: float) -> Iterator[None]:
        """One fetch or eviction of ``cid`` at a time on this host, waiting at most ``timeout``."""
        with _flock(self.locks_dir / f"{cid}.lock", fcntl.LOCK_EX, timeout, f"the cache lock of {cid}"):
            yield

    @contextmanager
    def adding(self, timeout: float) -> Iterator[None]:
        """Content fetched or added but not pinned yet must not meet a garbage collection."""
        with _flock(self.folder / "gc.lock", fcntl.LOCK_SH, timeout, "the IPFS cache's collection lock"):
            yield

    def entry(self, cid: str) -> CacheEntry | None:
        return self._load(self._entry_path(cid))

    def record(self, cid: str, change: Callable[[CacheEntry], None]) -> CacheEntry:
        """Apply ``change`` to the entry of ``cid`` (created if new) and mark it used now."""
        with self._index():
            entry = self.entry(cid) or CacheEntry(cid)
            change(entry)
            entry.last_used = time.time()
            self._save(entry)
            return entry

    def forget(self, cid: str) -> None:
        """Drop an entry and its base; the caller holds the content lock and has dealt with the pin."""
        with self._index():
            self._drop(cid)

    def release(self, matches: Callable[[str, DiskUse], bool]) -> list[str]:
        """Remove every use ``matches`` selects; return the CIDs that lost one."""
        touched: list[str] = []
        with self._index():
            for entry in self._all():
                kept = {key: use for key, use in entry.uses.items() if not matches(key, use)}
                if len(kept) != len(entry.uses):
                    entry.uses = kept
                    self._save(entry)
                    touched.append(entry.cid)
        return touched

    def awaiting(self) -> list[int]:
        """VMs with a use for a disk announced here that has not arrived (a migration target):
        only oned can tell whether the VM is still coming, so the frontend asks it."""
        with self._index():
            return sorted(
                {
                    use.vm
                    for entry in self._all()
                    for key, use in entry.uses.items()
                    if use.expected and use.vm is not None and not os.path.lexists(key)
                }
            )

    def status(self) -> list[EntryStatus]:
        with self._index():
            return [EntryStatus(entry, self.base_bytes(entry.cid)) for entry in self._all()]

    def evict(self, client: KuboClient, keep_bytes: int, *, gc_timeout: float) -> list[str]:
        """Evict entries no disk uses, least recently used first, until the cache holds ``keep_bytes``.

        Uses whose disk file is gone (the VM moved away) lapse first. Content the cache
        unpinned is collected by ``repo/gc`` afterwards, unless an addition is still running.
        """
        evicted: list[str] = []
        unpinned = False
        with self._index():
            statuses = [EntryStatus(entry, self.base_bytes(entry.cid)) for entry in self._all()]
            for status in statuses:
                self._lapse_stale_uses(status.entry)
            total = sum(status.cost for status in statuses)
            for status in sorted(statuses, key=lambda s: s.entry.last_used):
                if total <= keep_bytes:
                    break
                if status.entry.uses:
                    continue
                with _try_flock(self.locks_dir / f"{status.entry.cid}.lock") as locked:
                    if not locked:
                        continue
                    if status.entry.owns_pin:
                        unpinned = unpin_cache_pin(client, status.entry.cid) or unpinned
                    self._drop(status.entry.cid)
                    (self.locks_dir / f"{status.entry.cid}.lock").unlink(missing_ok=True)
                total -= status.cost
                evicted.append(status.entry.cid)
                log_info(f"evicted {status.entry.cid} from the host cache ({status.cost >> 20} MiB)")
        if unpinned:
            self._collect(client, gc_timeout)
        return evicted

    def _collect(self, client: KuboClient, timeout: float) -> None:
        """repo/gc, unless a fetch or an addition is under way: then what was unpinned is collected after
        a later eviction."""
        wait = min(GC_LOCK_WAIT, timeout)
        try:
            with _flock(self.folder / "gc.lock", fcntl.LOCK_EX, wait, "the IPFS cache's collection lock"):
                client.repo_gc(timeout=timeout)
        except IpfsTimeout as exc:
            log_info(f"garbage collection postponed: {exc}")

    def _lapse_stale_uses(self, entry: CacheEntry) -> None:
        kept = {key: use for key, use in entry.uses.items() if use.expected or os.path.lexists(key)}
        if len(kept) != len(entry.uses):
            entry.uses = kept
            self._save(entry)

    def _entry_path(self, cid: str) -> Path:
        return self.entries_dir / f"{cid}.json"

    @contextmanager
    def _index(self) -> Iterator[None]:
        with _flock(
            self.folder / "index.lock", fcntl.LOCK_EX, INDEX_LOCK_TIMEOUT, "the IPFS cache index lock"
        ):
            yield

    def _all(self) -> list[CacheEntry]:
        entries = []
        for path in sorted(self.entries_dir.glob("*.json")):
            entry = self._load(path)
            if entry is not None:
                entries.append(entry)
        return entries

    def _load(self, path: Path) -> CacheEntry | None:
        try:
            return CacheEntry.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise StorageError(f"the IPFS cache entry {path} is damaged: remove it and retry") from None

    def _save(self, entry: CacheEntry) -> None:
        path = self._entry_path(entry.cid)
        temporary = path.with_name(path.name + ".tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(entry.to_json(), handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            raise StorageError(f"cannot record the IPFS cache entry {path}: {exc.strerror}") from None
        sync_folder(self.entries_dir)

    def _drop(self, cid: str) -> None:
        for path in (self.base_path(cid), *self._boot_bases(cid), self._entry_path(cid)):
            _unlink(path)


def boot_id() -> str | None:
    """This boot's identity, or None where the kernel does not tell it."""
    try:
        value = BOOT_ID.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value if value and all(c in "0123456789abcdef-" for c in value) else None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot remove {path} from the IPFS cache: {exc.strerror}") from None


def pin_owner(client: KuboClient, cid: str) -> str | None:
    """The name of the recursive pin on ``cid`` ("" if unnamed), or None when it is not pinned."""
    try:
        pins = client.pin_ls(cid)
    except (ContentNotFound, CommandFailed):
        return None
    for pin in pins:
        if pin.type == "recursive":
            return pin.name
    return None


def unpin_cache_pin(client: KuboClient, cid: str) -> bool:
    """Unpin only a pin that is still the cache's: another party may have pinned the CID since."""
    name = pin_owner(client, cid)
    if name is None or not name.startswith(CACHE_PIN_PREFIX):
        return False
    try:
        client.pin_rm(cid)
    except (ContentNotFound, CommandFailed):
        return False
    return True


@contextmanager
def _flock(path: Path, mode: int, timeout: float, what: str) -> Iterator[None]:
    """flock with a bounded wait; a lock file replaced while waiting is locked again."""
    deadline = time.monotonic() + timeout
    while True:
        fd = _open_lock(path)
        try:
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise IpfsTimeout(
                            f"waited {timeout:g} s for {what}: another action still holds it"
                        ) from None
                    time.sleep(LOCK_POLL)
            if _same_file(fd, path):
                yield
                return
        finally:
            os.close(fd)


@contextmanager
def _try_flock(path: Path) -> Iterator[bool]:
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield _same_file(fd, path)
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open the lock file {path}: {exc.strerror}") from None


def _same_file(fd: int, path: Path) -> bool:
    """False when the lock file was removed (by an eviction) after it was opened here."""
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False
