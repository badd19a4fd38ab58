"""Where an image's bytes come from when they are not in IPFS yet: a frontend file, an http(s) URL, or a disk
of a VM backup (``rsync://``, ``restic://``), which OpenNebula's own ``downloader.sh`` reads out of its backup
datastore.

Images are streamed, never held whole in memory, decompressed on the fly (gzip, bzip2, xz) and
hashed as they pass so that a template's MD5/SHA1 is checked on the bytes that were published.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import re
import signal
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from one_ipfs.config import remotes_dir
from one_ipfs.diskformat import HEADER_BYTES, detect_compression, detect_format, qcow2_virtual_size
from one_ipfs.errors import InvalidInput, StorageError

MAX_PATH = 4096
READ_CHUNK = 1 << 20
BACKUP_SCHEMES = ("rsync://", "restic://")
"""The sources oned gives the images it restores from a backup (``oneimage restore``): only OpenNebula's
backup datastore drivers know where such a disk is, and their downloaders how to read it."""
_BACKUP_DISK = re.compile(
    r"(?:rsync|restic)://[0-9]{1,10}/[0-9]{0,10}/[0-9]{1,10}:[0-9A-Za-z]{1,64}(?:,[0-9]{1,10}:[0-9A-Za-z]{1,64})*"
    r"(?:/+[A-Za-z0-9_.-]+)+/+disk\.[0-9]{1,10}(?:\.[0-9]{1,10})?"
)
"""``<scheme>://<backup ds>/<backup job>/<increment>:<backup id>,.../<path of the disk>`` as OpenNebula's
backup restore writes it: the downloaders put it in shell commands, so nothing else gets that far."""


class _Peekable(Protocol):
    """What every reader here offers: read, and a look at the first bytes without consuming them."""

    def read(self, size: int = -1, /) -> bytes: ...

    def peek(self, size: int, /) -> bytes: ...


class _Source(Protocol):
    """A published image as opened: a file, or an http(s) response; both read into a buffer."""

    def readinto(self, buffer: memoryview, /) -> int: ...


# Openers of decompressing readers; open_image enters each into its ExitStack.
DECOMPRESSORS: dict[str, Callable[[BinaryIO], _Peekable]] = {
    "gzip": lambda stream: gzip.GzipFile(fileobj=stream, mode="rb"),
    "bzip2": lambda stream: bz2.BZ2File(stream, mode="rb"),
    "xz": lambda stream: lzma.LZMAFile(stream, mode="rb"),  # noqa: SIM115
}


HASHES = {"MD5": "md5", "SHA1": "sha1"}


class HashingReader(io.RawIOBase):
    """A readable stream that feeds every byte it passes on to the checksums the template asks for.

    Hashing costs a CPU core at import speed, so only a checksum to be checked is computed.
    """

    def __init__(self, stream: _Source, expected: Mapping[str, str]) -> None:
        self.stream = stream
        self.expected = {name: value.strip().lower() for name, value in expected.items() if value.strip()}
        self.digests = {name: hashlib.new(HASHES[name], usedforsecurity=False) for name in self.expected}

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        # Into the caller's buffer, without a copy: read() and a copy made this ten times slower.
        count = self.stream.readinto(buffer)
        if self.digests:
            with memoryview(buffer)[:count] as data:
                for digest in self.digests.values():
                    digest.update(data)
        return count


@dataclass
class ImageStream:
    """The decompressed bytes of an image, its format, and the checksums of what was read."""

    reader: BinaryIO
    format: str
    header: bytes
    hashes: HashingReader

    def verify(self) -> None:
        """Refuse an image whose published checksum does not match what was read."""
        for name, expected in self.hashes.expected.items():
            actual = self.hashes.digests[name].hexdigest()
            if actual != expected:
                raise InvalidInput(
                    f"{name} mismatch: the image hashes to {actual}, the template says {expected[:64]}"
                )


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def is_backup(path: str) -> bool:
    return path.startswith(BACKUP_SCHEMES)


def check_local_path(path: str, safe_dirs: Sequence[str], restricted_dirs: Sequence[str]) -> Path:
    """Resolve a frontend path and apply SAFE_DIRS/RESTRICTED_DIRS as OpenNebula's fs driver does.

    A path inside a restricted folder is refused unless it is also inside a safe one; symlinks are
    resolved first so that a link cannot lead out of a safe folder.
    """
    if not path.startswith("/") or len(path) > MAX_PATH or "\0" in path or "\n" in path:
        raise InvalidInput(
            "PATH must be an absolute frontend path, an http(s) URL, an IPFS path or a backup disk "
            f"(rsync://, restic://): {path[:80]!r}"
        )
    real = Path(os.path.realpath(path))

    def inside(folder: str) -> bool:
        base = Path(os.path.realpath(folder))
        return real == base or base in real.parents

    if any(inside(d) for d in restricted_dirs) and not any(inside(d) for d in safe_dirs):
        safe = " ".join(safe_dirs) or "-"
        raise InvalidInput(f"{path[:200]} is in a restricted folder of this datastore (SAFE_DIRS: {safe})")
    if not real.is_file():
        raise InvalidInput(f"{path[:200]} does not exist on the frontend or is not a regular file")
    return real


@contextmanager
def open_raw(
    path: str, safe_dirs: Sequence[str], restricted_dirs: Sequence[str], timeout: float
) -> Iterator[_Source]:
    """The bytes as published: a checked local file, an http(s) response or a backup disk streamed as it
    arrives."""
    if is_backup(path):
        with _backup_download(path, timeout) as stream:
            yield stream
        return
    if is_url(path):
        request = urllib.request.Request(path, headers={"User-Agent": "one-ipfs"})  # noqa: S310
        try:
            response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
        except urllib.error.HTTPError as error:
            raise InvalidInput(f"{path[:200]} answered HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise InvalidInput(f"cannot download {path[:200]}: {reason}") from None
        with response:
            yield response
        return
    real = check_local_path(path, safe_dirs, restricted_dirs)
    try:
        with open(real, "rb") as handle:
            yield handle
    except PermissionError:
        raise StorageError(f"{path[:200]} is not readable by the driver's user") from None


@contextmanager
def _backup_download(path: str, timeout: float) -> Iterator[_Source]:
    """A backup disk as OpenNebula's ``downloader.sh`` reads it (undecompressed: a backup is qcow2 as the
    system datastore wrote it), streamed from its stdout; its failure is its own last line. Its downloaders
    may first merge an increment chain on the backup host, silent meanwhile, so ``timeout`` bounds the
    whole read (the caller gives IPFS_TRANSFER_TIMEOUT)."""
    if len(path) > MAX_PATH or not _BACKUP_DISK.fullmatch(path) or ".." in path.split("/"):
        raise InvalidInput(f"{path[:200]!r} is not a backup disk URL OpenNebula writes")
    downloader = remotes_dir() / "datastore" / "downloader.sh"
    if not downloader.is_file():
        raise StorageError(f"{downloader} is missing: OpenNebula's downloader reads backup disks")
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            [str(downloader), "--nodecomp", path, "-"],
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        ) as process,
    ):
        assert process.stdout is not None
        expired = threading.Event()

        def stop() -> None:
            """The downloader and what it started (ssh, qemu-img), which hold its stdout open."""
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        def expire() -> None:
            expired.set()
            stop()

        deadline = threading.Timer(timeout, expire)
        deadline.start()
        try:
            yield cast(io.BufferedReader, process.stdout)
            while process.stdout.read(READ_CHUNK):
                pass
            process.wait()
        except BaseException:
            stop()
            raise
        finally:
            deadline.cancel()
        errors.seek(0)
        said = errors.read()
    if expired.is_set():
        raise StorageError(f"reading the backup disk {path[:200]} took more than {timeout:.0f} s: stopped")
    if process.returncode != 0:
        reason = said.decode(errors="replace").strip().splitlines()
        raise InvalidInput(
            f"cannot read the backup disk {path[:200]}: {reason[-1] if reason else 'downloader.sh failed'}"
        )


@contextmanager
def open_image(
    path: str,
    safe_dirs: Sequence[str],
    restricted_dirs: Sequence[str],
    timeout: float,
    checksums: Mapping[str, str] | None = None,
) -> Iterator[ImageStream]:
    """Open an image for import: hashed as published (``checksums``: MD5/SHA1 to check), then
    decompressed, with its format known up front."""
    with open_raw(path, safe_dirs, restricted_dirs, timeout) as raw:
        hashes = HashingReader(raw, checksums or {})
        buffered = io.BufferedReader(hashes, buffer_size=READ_CHUNK)
        compression = detect_compression(buffered.peek(8)[:8])
        reader: _Peekable = buffered
        stack = ExitStack()
        if compression is not None:
            reader = stack.enter_context(DECOMPRESSORS[compression](cast(BinaryIO, buffered)))  # type: ignore[arg-type]
        with stack:
            yield _sniffed(path, reader, compression, hashes)


def _sniffed(path: str, reader: _Peekable, compression: str | None, hashes: HashingReader) -> ImageStream:
    try:
        header = reader.peek(HEADER_BYTES)[:HEADER_BYTES]
    except (OSError, EOFError, lzma.LZMAError) as error:
        raise InvalidInput(f"{path[:200]} is not a valid {compression} file: {error}") from None
    return ImageStream(
        reader=cast(BinaryIO, reader), format=detect_format(header), header=header, hashes=hashes
    )


def local_or_url_size(
    path: str, safe_dirs: Sequence[str], restricted_dirs: Sequence[str], timeout: float
) -> int:
    """Bytes an image will take, without reading it whole: qcow2 virtual size, else the file's length.

    Compressed images are sized by their decompressed header only when they are qcow2; otherwise
    the published length is used, as OpenNebula's fs driver reports it before download.
    """
    if is_url(path):
        request = urllib.request.Request(path, method="HEAD", headers={"User-Agent": "one-ipfs"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                length = response.headers.get("Content-Length")
        except urllib.error.HTTPError as error:
            raise InvalidInput(f"{path[:200]} answered HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            raise InvalidInput(f"cannot reach {path[:200]}: {getattr(error, 'reason', error)}") from None
        with open_image(path, safe_dirs, restricted_dirs, timeout) as image:
            virtual = qcow2_virtual_size(image.header)
        if virtual is not None:
            return virtual
        if length is None or not length.isdigit():
            raise InvalidInput(f"{path[:200]} does not say its size (no Content-Length)")
        return int(length)
    real = check_local_path(path, safe_dirs, restricted_dirs)
    with open_image(path, safe_dirs, restricted_dirs, timeout) as image:
        virtual = qcow2_virtual_size(image.header)
    return virtual if virtual is not None else real.stat().st_size
