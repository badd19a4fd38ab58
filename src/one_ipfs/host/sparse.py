"""Writing disk files that are sparse, complete and atomic.

VM disks are mostly zeros. Zero runs are never written but skipped, so they become holes and
a disk costs only its data on the host. A file is written as ``<name>.part`` and renamed into
place only once it is complete and on stable storage: a disk path either holds the whole
content or does not exist.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from one_ipfs.errors import StorageError, StreamBroken

GRANULE = 1 << 16
WRITE_BATCH = 8 << 20
READ_SIZE = 4 << 20
ZEROS = bytes(GRANULE)
NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})
"""copy_file_range refusing a pair of files: copy through a buffer instead."""


@dataclass(frozen=True)
class Written:
    """What a file holds: its content length and the bytes that are not holes."""

    size: int
    stored: int


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


class SparseFile:
    """``<target>.part`` while being written; ``target`` after ``commit``; nothing after a failure."""

    def __init__(self, target: Path, mode: int = 0o644) -> None:
        self.target = target
        self.part = part_path(target)
        self.mode = mode
        self.offset = 0
        self.stored = 0
        self._fd = -1
        self._pending = bytearray()
        self._pending_at = 0
        self._committed = False
        self._counting = threading.Lock()

    def __enter__(self) -> SparseFile:
        try:
            self.part.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _storage_error(exc, self.part) from None
        try:
            self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.mode)
        except OSError as exc:
            raise _storage_error(exc, self.part) from None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._committed:
            remove_file(self.part)

    def write(self, data: bytes) -> None:
        """Append ``data``; granules that are all zero are skipped, so they stay holes."""
        position = 0
        while position < len(data):
            room = GRANULE - self.offset % GRANULE
            piece = data[position : position + room]
            if piece == ZEROS[: len(piece)]:
                self._flush()
            else:
                if not self._pending:
                    self._pending_at = self.offset
                self._pending += piece
                if len(self._pending) >= WRITE_BATCH:
                    self._flush()
            self.offset += len(piece)
            position += len(piece)

    @property
    def committed(self) -> bool:
        return self._committed

    def write_at(self, offset: int, data: bytes) -> None:
        """Write a piece whose place is known (blocks arriving in any order, from several threads at
        once); granules that are all zero are skipped. The append position does not move."""
        view = memoryview(data)
        start, run_at = offset, -1
        while start < offset + len(data):
            end = min(start - start % GRANULE + GRANULE, offset + len(data))
            zero = data[start - offset : end - offset] == ZEROS[: end - start]  # bytes compare fastest
            if zero and run_at >= 0:
                self._pwrite(view[run_at - offset : start - offset], run_at)
                run_at = -1
            elif not zero and run_at < 0:
                run_at = start
            start = end
        if run_at >= 0:
            self._pwrite(view[run_at - offset :], run_at)

    def copy_range(self, source_fd: int, start: int, end: int, source: Path, *, in_kernel: bool) -> None:
        """Copy bytes [start, end) of ``source_fd`` to the same place here: ``in_kernel`` where the
        filesystems allow (zero runs copied as they are), else through a buffer (zero granules
        skipped). The append position does not move."""
        position = start
        try:
            while in_kernel and position < end:
                copied = os.copy_file_range(source_fd, self._fd, end - position, position, position)
                if not copied:
                    raise StorageError(f"{source} shrank while it was being copied")
                position += copied
        except OSError as exc:
            if exc.errno not in NO_KERNEL_COPY:
                raise _storage_error(exc, self.target) from None
        with self._counting:
            self.stored += position - start
        while position < end:
            data = os.pread(source_fd, min(READ_SIZE, end - position), position)
            if not data:
                raise StorageError(f"{source} shrank while it was being copied")
            self.write_at(position, data)
            position += len(data)

    def skip(self, length: int) -> None:
        """Append ``length`` zero bytes known in advance (a hole of the source file)."""
        self._flush()
        self.offset += length

    def commit(self, *, expected_size: int | None = None, grow_to: int = 0, sync: bool = True) -> Written:
        """Check the length, extend to ``grow_to`` if larger, sync, and move the file into place.

        ``sync=False`` leaves the bytes to the kernel's writeback: for a file trusted only until the
        next boot (see ``persist``).
        """
        self._flush()
        if expected_size is not None and self.offset != expected_size:
            raise StreamBroken(
                f"{self.target} would hold {self.offset} bytes but the content has {expected_size}: "
                "the transfer ended early"
            )
        try:
            os.ftruncate(self._fd, max(self.offset, grow_to))
            if sync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.rename(self.part, self.target)
        except OSError as exc:
            raise _storage_error(exc, self.target) from None
        self._committed = True
        if sync:
            try:
                sync_folder(self.target.parent)
            except StorageError:
                remove_file(self.target)
                raise
        return Written(self.offset, self.stored)

    def _flush(self) -> None:
        if not self._pending:
            return
        self._pwrite(self._pending, self._pending_at)
        self._pending.clear()

    def _pwrite(self, data: bytes | bytearray | memoryview, at: int) -> None:
        with memoryview(data) as view:
            done = 0
            try:
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], at + done)
            except OSError as exc:
                raise _storage_error(exc, self.target) from None
            with self._counting:
                self.stored += len(view)


def copy_file(source: Path, target: Path, *, in_kernel: bool = False, grow_to: int = 0) -> Written:
    """A sparse copy: holes of ``source`` are skipped without reading, zero runs in its data too.

    ``in_kernel`` copies the data with copy_file_range instead, where the filesystem allows (a
    reflink on XFS and btrfs): for a source written sparsely here, whose data holds no zero runs.
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _storage_error(exc, source, "read") from None
    try:
        size = os.fstat(fd).st_size
        with SparseFile(target) as out:
            for start, end in _data_extents(fd, size):
                out.copy_range(fd, start, end, source, in_kernel=in_kernel)
            out.skip(size)
            return out.commit(expected_size=size, grow_to=grow_to)
    except OSError as exc:
        raise _storage_error(exc, source, "read") from None
    finally:
        os.close(fd)


def _data_extents(fd: int, size: int) -> Iterable[tuple[int, int]]:
    """(start, end) of each data region, from SEEK_DATA/SEEK_HOLE; the whole file where unsupported."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            if exc.errno == errno.EINVAL:
                yield position, size
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        position = end


def persist(path: Path, target: Path) -> None:
    """Sync a file committed without sync and move it to ``target``: from then on it survives a reboot."""
    _sync(path, os.O_RDONLY, target)
    try:
        os.rename(path, target)
    except OSError as exc:
        raise _storage_error(exc, target, "sync") from None
    sync_folder(target.parent)


def sync_folder(folder: Path) -> None:
    """A rename is durable only once its folder is synced."""
    _sync(folder, os.O_RDONLY | os.O_DIRECTORY, folder)


def _sync(path: Path, flags: int, reported: Path) -> None:
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _storage_error(exc, reported, "sync") from None


def grow(path: Path, size: int) -> bool:
    """Extend a raw file to ``size`` bytes (the new part is a hole); never shrink. True if it grew."""
    try:
        if path.stat().st_size >= size:
            return False
        with open(path, "r+b") as handle:
            handle.truncate(size)
            os.fsync(handle.fileno())
    except OSError as exc:
        raise _storage_error(exc, path, "grow") from None
    return True


def allocated(path: Path) -> int:
    """Bytes a file really takes on disk (holes excluded)."""
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def remove_file(path: Path) -> bool:
    """Remove ``path``; whether it was there. OpenNebula repeats removals, so a missing file is no error."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _storage_error(exc, path, "remove") from None
    return True


def _storage_error(exc: OSError, path: Path, doing: str = "write") -> StorageError:
    return StorageError(f"cannot {doing} {path}: {exc.strerror or exc}")
