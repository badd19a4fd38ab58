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
