"""Disk files on a host: what each one is made of, and the qemu-img steps some of them need.

A raw disk belongs to its guest, which can write anything into it, a qcow2 header included. So a
disk's format is never guessed from its first bytes once a guest may have run on it: the deploy
records it in the VM folder (``.one-ipfs/disk.<n>.json``, moved along with the folder when the VM
moves), and qemu-img is always told the format (``-f``) instead of probing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from one_ipfs.diskformat import HEADER_BYTES, QCOW2_MAGIC, detect_format, qcow2_virtual_size
from one_ipfs.errors import InvalidInput, StorageError
from one_ipfs.host.sparse import grow, part_path, persist, remove_file, sync_folder

RECORDS = ".one-ipfs"
FORMATS = ("raw", "qcow2")
COPY, OVERLAY = "copy", "overlay"
QCOW2_EXTERNAL_DATA = 1 << 2
SNAPSHOTS_SUFFIX = ".snap"


@dataclass(frozen=True)
class DiskRecord:
    """What the deploy made a disk from: the CID, the disk file's format and the deploy mode."""

    cid: str
    format: str
    mode: str


@dataclass(frozen=True)
class ContentFormat:
    """A format read from content nobody has run a guest on (an IPFS image or a base)."""

    format: str
    virtual_size: int


def record_path(disk: Path) -> Path:
    return disk.parent / RECORDS / f"{disk.name}.json"


def disk_of(path: Path) -> Path:
    """The disk a path belongs to: itself, or ``disk.<n>`` for a snapshot ``disk.<n>.snap/<id>``."""
    if path.parent.name.endswith(SNAPSHOTS_SUFFIX):
        return path.parent.with_name(path.parent.name[: -len(SNAPSHOTS_SUFFIX)])
    return path


def snapshots_dir(disk: Path) -> Path:
    return disk.with_name(disk.name + SNAPSHOTS_SUFFIX)


def saving_path(disk: Path) -> Path:
    """Where a disk converted for a save is written before it is added."""
    return disk.with_name(disk.name + ".saving")


def written_beside(path: Path) -> list[Path]:
    """What the host commands write for a disk (or a snapshot of one) besides the file itself: a link
    there would send those writes out of the VM folder."""
    disk = disk_of(path)
    return [snapshots_dir(disk), record_path(disk).parent, part_path(path), saving_path(disk)]


def write_record(disk: Path, record: DiskRecord) -> None:
    path = record_path(disk)
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(mode=0o755, exist_ok=True)
        temporary.write_text(json.dumps({"cid": record.cid, "format": record.format, "mode": record.mode}))
        os.replace(temporary, path)
    except OSError as exc:
        raise StorageError(f"cannot record what {disk} is made of: {exc.strerror}") from None
    sync_folder(path.parent)


def read_record(disk: Path) -> DiskRecord | None:
    try:
        data = json.loads(record_path(disk_of(disk)).read_text(encoding="utf-8"))
        record = DiskRecord(str(data["cid"]), str(data["format"]), str(data["mode"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise StorageError(f"the record of {disk} ({record_path(disk_of(disk))}) is damaged") from None
    if record.format not in FORMATS or record.mode not in (COPY, OVERLAY):
        raise StorageError(f"the record of {disk} names an unknown format or mode")
    return record


def remove_record(disk: Path) -> None:
    path = record_path(disk)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def content_format(path: Path, declared: str | None) -> ContentFormat:
    """The format of a file written from IPFS (as declared, else told from its header), refusing
    qcow2 files that would open other host files.

    A qcow2 header may name a backing file or an external data file anywhere on the host; an
    image must be self-contained, or qemu-img and the hypervisor would read that file into a VM.
    """
    header = _header(path)
    found = declared or detect_format(header)
    if found == "raw":
        return ContentFormat("raw", path.stat().st_size)
    if not header.startswith(QCOW2_MAGIC):
        raise InvalidInput("the image is declared qcow2 but its content is not a qcow2 file")
    (version,) = struct.unpack(">I", header[4:8]) if len(header) >= 8 else (0,)
    if len(header) < (104 if version >= 3 else 72):
        raise InvalidInput("the image's qcow2 header is truncated")
    (backing_offset,) = struct.unpack(">Q", header[8:16])
    (incompatible,) = struct.unpack(">Q", header[72:80]) if version >= 3 else (0,)
    if backing_offset or incompatible & QCOW2_EXTERNAL_DATA:
        raise InvalidInput("the image is a qcow2 file that refers to other files (backing or data file)")
    return ContentFormat("qcow2", qcow2_virtual_size(header) or 0)


def _header(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(HEADER_BYTES)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None


def probe_format(path: Path) -> str:
    """For disks this driver did not deploy only: what qemu-img would probe, as OpenNebula's scripts do."""
    return "qcow2" if _header(path).startswith(QCOW2_MAGIC) else "raw"


def qemu_img(args: list[str], *, timeout: float, doing: str) -> bytes:
    """Run qemu-img with an argument list and return its output; its last error line is the failure reason."""
    return run_tool("qemu-img", args, timeout=timeout, doing=doing)


def run_tool(tool: str, args: list[str], *, timeout: float, doing: str) -> bytes:
    """Run a host tool (qemu-img, virsh) with an argument list; its last error line is the failure reason."""
    if shutil.which(tool) is None:
        raise StorageError(f"{tool} is not installed on this host (needed for {doing})")
    try:
        result = subprocess.run(
            [tool, *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise StorageError(f"{tool} took longer than {timeout:g} s for {doing}") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
        raise StorageError(f"{tool} failed for {doing}: {lines[-1].strip() if lines else result.returncode}")
    return result.stdout


def create_overlay(base: Path, base_format: str, disk: Path, size: int | None, *, timeout: float) -> None:
    """A qcow2 disk whose unwritten clusters read from ``base``; written as ``.part``, then renamed."""
    part = part_path(disk)
    args = ["create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base), str(part)]
    if size is not None:
        args.append(str(size))
    remove_file(part)
    try:
        qemu_img(args, timeout=timeout, doing=f"the overlay {disk}")
        os.rename(part, disk)
    except BaseException:
        remove_file(part)
        raise
    sync_folder(disk.parent)


def convert(source: Path, source_format: str, target: Path, target_format: str, *, timeout: float) -> None:
    """A self-contained copy of ``source`` (its backing chain flattened) in ``target_format``; sparse."""
    qemu_img(
        ["convert", "-q", "-f", source_format, "-O", target_format, str(source), str(target)],
        timeout=timeout,
        doing=f"converting {source} to {target_format}",
    )


def convert_disk(
    base: Path, base_format: str, disk: Path, disk_format: str, size: int, *, timeout: float
) -> None:
    """A disk in ``disk_format`` with the content of ``base`` (in another format), at least ``size``
    bytes large: written as ``.part``, synced, then renamed."""
    part = part_path(disk)
    remove_file(part)
    try:
        convert(base, base_format, part, disk_format, timeout=timeout)
        if disk_format == "qcow2":
            if size > qcow2_size(part):
                resize_qcow2(part, size, timeout=timeout)
        else:
            grow(part, size)
        persist(part, disk)
    except BaseException:
        remove_file(part)
        raise


def overlay_untouched(disk: Path, base: ContentFormat, *, timeout: float) -> bool:
    """True when an overlay holds no cluster of its own and is as large as its base (up to the last
    sector): then its content is exactly the base's."""
    if qcow2_size(disk) > -(-base.virtual_size // 512) * 512:
        return False
    listing = qemu_img(
        ["map", "--output=json", "-f", "qcow2", str(disk)], timeout=timeout, doing=f"mapping {disk}"
    )
    try:
        extents = json.loads(listing)
    except ValueError:
        raise StorageError(f"qemu-img map printed no JSON for {disk}") from None
    return not any(
        extent.get("depth") == 0 and extent.get("present", extent.get("data") or extent.get("zero"))
        for extent in extents
    )


def resize_qcow2(disk: Path, size: int, *, timeout: float) -> None:
    qemu_img(["resize", "-q", "-f", "qcow2", str(disk), str(size)], timeout=timeout, doing=f"resizing {disk}")


def qcow2_size(disk: Path) -> int:
    return qcow2_virtual_size(_header(disk)) or 0
