"""TM arguments of the form ``host:path``, checked before anything uses them.

The host becomes an ssh destination and the path a file the host side touches, so both are refused
unless they are plainly what oned writes: a host name or IPv4 address (nothing ssh could take for an
option, such as ``-oProxyCommand=...``) and an absolute path with no ``..`` and no character a
shell would interpret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from one_ipfs.errors import InvalidInput

MAX_LOCATION = 4096
MAX_HOST = 253
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PATH_CHARACTERS = re.compile(r"[A-Za-z0-9._/+@%=,~-]*")
_DISK = re.compile(r"(?P<vm_dir>.*/(?P<vm_id>[0-9]{1,10}))/disk\.(?P<disk_id>[0-9]{1,10})")


@dataclass(frozen=True)
class Location:
    """A place on a host, e.g. ``h1:/var/lib/one/datastores/0/42/disk.0``."""

    host: str
    path: str

    @classmethod
    def parse(cls, text: str) -> Location:
        """Split on the first ``:`` like tm_common.sh's ``arg_host``/``arg_path``, collapsing duplicate
        slashes (oned writes ``/var/lib/one//datastores``) and dropping a trailing one."""
        if len(text) > MAX_LOCATION:
            raise InvalidInput(f"a host:path argument has more than {MAX_LOCATION} characters")
        host, colon, path = text.partition(":")
        if not colon:
            raise InvalidInput(f"{_shown(text)} is not a host:path argument")
        if not is_host_name(host):
            raise InvalidInput(f"{_shown(host)} in {_shown(text)} is not a host name or IPv4 address")
        path = re.sub("/+", "/", path)
        if not path.startswith("/"):
            raise InvalidInput(f"the path in {_shown(text)} is not absolute")
        if not _PATH_CHARACTERS.fullmatch(path):
            bad = next(char for char in path if not _PATH_CHARACTERS.fullmatch(char))
            raise InvalidInput(f"the path in {_shown(text)} may not contain {bad!a}")
        if ".." in path.split("/"):
            raise InvalidInput(f"the path in {_shown(text)} may not contain '..'")
        return cls(host, path.rstrip("/") or "/")


def is_host_name(text: str) -> bool:
    """A name or IPv4 address ssh can only take as a destination: no option, user, port or shell character."""
    return len(text) <= MAX_HOST and _HOST.fullmatch(text) is not None


def check_host_name(text: str) -> str:
    if not is_host_name(text):
        raise InvalidInput(f"{_shown(text)} is not a host name or IPv4 address")
    return text


@dataclass(frozen=True)
class DiskPath:
    """A VM disk's path split into the VM folder (``.../<vm_id>``) and the disk number."""

    vm_dir: str
    vm_id: int
    disk_id: int


def parse_disk_path(path: str) -> DiskPath | None:
    """``.../<vm_id>/disk.<n>`` is a disk (tm_common.sh ``is_disk``); the VM folder and others are not."""
    match = _DISK.fullmatch(path)
    if match is None:
        return None
    return DiskPath(match.group("vm_dir"), int(match.group("vm_id")), int(match.group("disk_id")))


def disk_id_of(path: str) -> int | None:
    """The disk number of a VM disk path, or None for any other path."""
    disk = parse_disk_path(path)
    return None if disk is None else disk.disk_id


def _shown(text: str) -> str:
    return ascii(text[:80]) + ("..." if len(text) > 80 else "")
