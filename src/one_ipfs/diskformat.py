"""Disk image formats as OpenNebula names them, told from an image's first bytes.

Standard library only, so hosts can tell formats too.
"""

from __future__ import annotations

import struct

QCOW2_MAGIC = b"QFI\xfb"
HEADER_BYTES = 512
COMPRESSIONS = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)


def detect_format(header: bytes) -> str:
    """``qcow2`` for a qcow2 header, otherwise ``raw`` (what OpenNebula's fs driver reports too)."""
    return "qcow2" if header.startswith(QCOW2_MAGIC) else "raw"


def qcow2_virtual_size(header: bytes) -> int | None:
    """The guest-visible size in bytes recorded in a qcow2 header, or None if this is no qcow2."""
    if not header.startswith(QCOW2_MAGIC) or len(header) < 32:
        return None
    (size,) = struct.unpack(">Q", header[24:32])
    return int(size)


def detect_compression(header: bytes) -> str | None:
    for magic, name in COMPRESSIONS:
        if header.startswith(magic):
            return name
    return None


def size_mb(size_bytes: int) -> int:
    """Bytes to MiB rounded up, as OpenNebula's ``fs_size`` does: a 1-byte image is 1 MB."""
    return max(1, -(-size_bytes // (1 << 20))) if size_bytes > 0 else 0
