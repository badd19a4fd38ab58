"""Checks for every value a host command receives: all of them come from templates or the network.

Paths must be absolute and free of ``..``. A disk or VM folder lies in a system datastore where
oned's arguments put it (``<DATASTORE_LOCATION>/<datastore id>/<vm id>``): the admin may symlink
the datastore location or a datastore anywhere, or set another DATASTORE_LOCATION, and those links
are followed; a link at or below the VM folder is refused, so no argument can lead a host command
out of a VM folder. Other paths (the cache folder) stay inside oneadmin's tree (``/var/lib/one``,
or ``ONE_IPFS_HOST_ROOT`` for tests), also after following symlinks. Each check raises
InvalidInput with the reason.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from one_ipfs.errors import InvalidInput
from one_ipfs.host.disks import written_beside
from one_ipfs.ipfs.paths import parse_cid
from one_ipfs.ipfs.rpc import KuboClient

DEFAULT_ROOT = "/var/lib/one"
CACHE_FOLDER = "datastores/.one-ipfs-cache"
MAX_PATH = 1024
MAX_SIZE_MB = 1 << 24
MAX_TIMEOUT = 7 * 86400.0
MAX_ID = 10**9
TM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
VM_FOLDER = re.compile(r"^[0-9]{1,9}$")
DISK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHUNKER = re.compile(r"^size-[1-9][0-9]{0,7}$")
SECONDS = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,15})?(?:e[+-]?[0-9]{1,3})?")
HASH_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
DOMAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LIBVIRT_URI = re.compile(r"^[a-z][a-z0-9+]{0,31}://[A-Za-z0-9._~:@/?=&%+-]{0,200}$")


def root() -> Path:
    """oneadmin's tree on this host; nothing outside it is ever touched."""
    return Path(os.environ.get("ONE_IPFS_HOST_ROOT", DEFAULT_ROOT))


def default_cache_dir() -> Path:
    """Next to the system datastores, so overlay bases sit on the same filesystem as the disks.

    OpenNebula's host monitoring only looks at numeric folders under ``datastores``, so the
    hidden cache folder is never mistaken for a datastore.
    """
    return root() / CACHE_FOLDER


def cid(text: str) -> str:
    """A structurally valid CID (never a path or an option), kept as written: Kubo reads every multibase."""
    parse_cid(text)
    return text


def absolute_path(text: str, what: str) -> Path:
    """An absolute path without ``..``, duplicate slashes collapsed (OpenNebula sends ``//``)."""
    if not text.startswith("/") or len(text) > MAX_PATH or "\0" in text or "\n" in text:
        raise InvalidInput(f"{what} must be an absolute path, not {text[:200]!r}")
    if ".." in text.split("/"):
        raise InvalidInput(f"{what} must not contain '..': {text[:200]}")
    path = posixpath.normpath(text)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return Path(path)


def path_inside_root(text: str, what: str) -> Path:
    """An absolute path inside oneadmin's tree, also after following symlinks."""
    path = str(absolute_path(text, what))
    base = str(root()).rstrip("/")
    if not path.startswith(base + "/"):
        raise InvalidInput(f"{what} {path[:200]} is outside {base}")
    _check_no_escape(Path(path), base, what)
    return Path(path)


def _check_no_escape(path: Path, base: str, what: str) -> None:
    """Symlinks inside the tree must not lead out of it."""
    real_base = os.path.realpath(base)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    real = os.path.realpath(existing)
    if real != real_base and not real.startswith(real_base.rstrip("/") + "/"):
        raise InvalidInput(f"{what} {str(path)[:200]} leads outside {base}")


def disk_path(text: str) -> Path:
    """A file in a VM folder (``<ds>/<vm>/disk.<n>``) or a snapshot of one (``disk.<n>.snap/<id>``);
    nothing else (keys, the cache, other drivers' files) can be named as a disk."""
    path = absolute_path(text, "the disk path")
    if not DISK_NAME.fullmatch(path.name) or path.name.endswith((".part", ".saving")):
        raise InvalidInput(f"{path} is not a disk file name")
    folder = path.parent.parent if path.parent.name.endswith(".snap") else path.parent
    if not _is_vm_folder(folder):
        raise InvalidInput(
            f"{path} is not a disk in a VM folder (<datastore location>/<datastore id>/<vm id>/disk.<n>)"
        )
    for written in (path, *written_beside(path)):
        _check_no_link_below(folder, written, "the disk path")
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory, not a disk")
    return path


def vm_folder(text: str) -> Path:
    """A VM's folder in a system datastore: ``<location>/<datastore id>/<vm id>``, nothing shorter."""
    path = absolute_path(text, "the VM folder")
    if not _is_vm_folder(path):
        raise InvalidInput(f"{path} is not a VM folder (<datastore location>/<datastore id>/<vm id>)")
    _check_no_link_below(path, path, "the VM folder")
    return path


def _is_vm_folder(path: Path) -> bool:
    """``<location>/<datastore id>/<vm id>`` with a location of its own: never ``/<ds>/<vm>``."""
    return bool(
        VM_FOLDER.fullmatch(path.name)
        and VM_FOLDER.fullmatch(path.parent.name)
        and path.parent.parent != path.parent.parent.parent
    )


def _check_no_link_below(folder: Path, path: Path, what: str) -> None:
    """The datastore may be a link (the admin's choice); the VM folder and what lies in it may not,
    or a file written there would land wherever the link points."""
    current = path
    while True:
        if current.is_symlink():
            raise InvalidInput(f"{what} {str(path)[:200]} goes through the link {current} inside a VM folder")
        if current == folder:
            return
        current = current.parent


def cache_dir(text: str) -> Path:
    return path_inside_root(text, "the cache folder")


def size_mb(text: str) -> int:
    """A size in MiB; 0 means 'as large as the content'."""
    return _bounded_int(text, "the size in MB", 0, MAX_SIZE_MB)


def positive_size_mb(text: str) -> int:
    return _bounded_int(text, "the size in MB", 1, MAX_SIZE_MB)


def cache_mb(text: str) -> int:
    return _bounded_int(text, "the cache size in MB", 0, 1 << 40)


def identifier(text: str) -> int:
    """A VM or snapshot id."""
    return _bounded_int(text, "the id", 0, MAX_ID)


def timeout(text: str) -> float:
    """Seconds as the frontend writes them (``{value:g}``): digits, a decimal point, an exponent."""
    if not SECONDS.fullmatch(text):
        raise InvalidInput(f"the timeout must be a number of seconds, not {text[:40]!r}")
    value = float(text)
    if not 0 < value <= MAX_TIMEOUT:
        raise InvalidInput(f"the timeout must be between 0 and {MAX_TIMEOUT:g} seconds, not {text[:40]}")
    return value


def api_address(text: str) -> str:
    """The host's own Kubo RPC: a loopback URL or multiaddr, so a template cannot point it elsewhere."""
    allowed = (
        "http://127.0.0.1:",
        "http://localhost:",
        "http://[::1]:",
        "/ip4/127.0.0.1/tcp/",
        "/ip6/::1/tcp/",
    )
    if not text.startswith(allowed) or len(text) > 200 or any(c.isspace() for c in text):
        raise InvalidInput(f"the Kubo API must be a loopback address, not {text[:80]!r}")
    if KuboClient(text).host not in ("127.0.0.1", "localhost", "::1"):
        raise InvalidInput(f"the Kubo API must be a loopback address, not {text[:80]!r}")
    return text


def secret_file(text: str) -> str:
    """The file with the host node's RPC secret: an absolute path (the secret itself is never an argument)."""
    if not text.startswith("/") or len(text) > 200 or not text.isprintable():
        raise InvalidInput("--api-auth-file must be the absolute path of the file that holds the secret")
    return text


def domain_name(text: str) -> str:
    """A libvirt domain name as OpenNebula makes them (DEPLOY_ID, ``one-<vm id>``)."""
    if not DOMAIN_NAME.fullmatch(text):
        raise InvalidInput(f"not a domain name: {text[:40]!r}")
    return text


def libvirt_uri(text: str) -> str:
    if not LIBVIRT_URI.fullmatch(text):
        raise InvalidInput(f"not a libvirt URI: {text[:60]!r}")
    return text


def tm_name(text: str) -> str:
    if not TM_NAME.fullmatch(text):
        raise InvalidInput(f"not a transfer driver name: {text[:40]!r}")
    return text


def _bounded_int(text: str, what: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 15:
        raise InvalidInput(f"{what} must be a whole number, not {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low} and {high}, not {value}")
    return value


def boolean(text: str) -> bool:
    if text.lower() not in ("true", "false", "yes", "no"):
        raise InvalidInput(f"expected true or false, not {text[:40]!r}")
    return text.lower() in ("true", "yes")


def chunker(text: str) -> str:
    """Fixed-size chunking only: the same bytes must always give the same CID."""
    if not CHUNKER.fullmatch(text):
        raise InvalidInput(f"the chunker must look like size-<bytes>, not {text[:40]!r}")
    return text


def hash_name(text: str) -> str:
    if not HASH_NAME.fullmatch(text):
        raise InvalidInput(f"not a hash function name: {text[:40]!r}")
    return text
