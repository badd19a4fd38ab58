"""Disk images for tests: generated like real disks, half data and half zero runs."""

from __future__ import annotations

import hashlib
import random


def disk_bytes(size: int, seed: int = 0) -> bytes:
    """``size`` bytes alternating 64 KiB of random data and 64 KiB of zeros, reproducible by seed."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(64 << 10)
        out += bytes(64 << 10)
    return bytes(out[:size])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def unixfs_file_node(child_sizes: list[int]) -> bytes:
    """The UnixFS ``Data`` of a file node whose children hold ``child_sizes`` bytes (protobuf by hand)."""
    data = b"\x08\x02" + b"\x18" + _varint(sum(child_sizes))
    return data + b"".join(b"\x20" + _varint(size) for size in child_sizes)
