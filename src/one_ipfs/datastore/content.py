"""Image content coming into the datastore's node: importing, sizing, making datablocks, and the node's
gateway as a source.

The actions in ``actions.py`` say what OpenNebula asked for; this module says how that is done with Kubo,
holding what it brings in through the image store (``one_ipfs.image_store``) that the other drivers share.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from one_ipfs import image_store
from one_ipfs.config import DatastoreConfig, state_dir
from one_ipfs.defaults import MKFS_TIMEOUT
from one_ipfs.diskformat import HEADER_BYTES, detect_format, qcow2_virtual_size, size_mb
from one_ipfs.errors import InvalidInput, NotSupported, StorageError
from one_ipfs.ipfs.paths import looks_like_ipfs_path
from one_ipfs.ipfs.rpc import UNSPECIFIED_TO_LOOPBACK
from one_ipfs.opennebula.documents import ImageTemplate
from one_ipfs.opennebula.output import log_info

FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "vfat", "btrfs")


@dataclass(frozen=True)
class ImportedContent:
    cid: str
    format: str
    attributes: dict[str, str] = field(default_factory=dict)


def gateway_url(cid: str, config: DatastoreConfig) -> str:
    """``http://<gateway>/ipfs/<cid>`` on the datastore node's gateway as the admin bound it: a source
    OpenNebula's ``downloader.sh`` (http and s3 marketplaces) can read."""
    root = gateway_root(config)
    if root is None:
        raise NotSupported(
            "the datastore's IPFS node serves no HTTP gateway (Addresses.Gateway): "
            "a marketplace could not download the image"
        )
    return f"{root}/ipfs/{cid}"


def gateway_root(config: DatastoreConfig) -> str | None:
    """``http://<host>:<port>`` of the node's gateway, None when it serves none. A gateway bound to
    every interface is named by the frontend's host name."""
    bound = image_store.client(config).gateway_bound()
    if bound is None:
        return None
    host, port = bound
    if host in UNSPECIFIED_TO_LOOPBACK:
        host = socket.getfqdn()
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def own_gateway_path(path: str, config: DatastoreConfig) -> str | None:
    """``/ipfs/<cid>[/path]`` when ``path`` is a URL of the datastore node's own gateway (what ``export``
    gives): the content is taken by its CID, and nothing is downloaded or added."""
    parts = urlsplit(path)
    if parts.scheme not in ("http", "https") or not parts.path.startswith("/ipfs/") or parts.query:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    bound = image_store.client(config).gateway_bound()
    if bound is None or port != bound[1]:
        return None
    host = bound[0]
    names = {host}
    if host in UNSPECIFIED_TO_LOOPBACK:
        names |= {UNSPECIFIED_TO_LOOPBACK[host], "localhost", socket.gethostname(), socket.getfqdn()}
    return parts.path if parts.hostname in {name.lower() for name in names} else None


def as_ipfs_path(path: str, config: DatastoreConfig) -> str:
    """PATH as the datastore takes it: a URL of its own gateway becomes the IPFS path it serves."""
    if path[:8].lower().startswith(("http://", "https://")):
        return own_gateway_path(path, config) or path
    return path


def read_header(cid: str, config: DatastoreConfig) -> bytes:
    return b"".join(
        image_store.client(config).cat(f"/ipfs/{cid}", length=HEADER_BYTES, timeout=config.stall_timeout)
    )


def read_format(cid: str, config: DatastoreConfig) -> str:
    return detect_format(read_header(cid, config))


def import_image(image: ImageTemplate, name: str, config: DatastoreConfig) -> ImportedContent:
    """Bring an image's content into the datastore's node, completely, and hold it under ``name``."""
    path = as_ipfs_path(image.path, config)
    if looks_like_ipfs_path(path):
        cid, origin = image_store.resolve(path, config)
        size = image_store.client(config).files_stat(f"/ipfs/{cid}", timeout=config.stall_timeout).size
        log_info(f"pinning {cid} ({size >> 20} MiB) on the datastore's node")
        image_store.hold(cid, name, config, total_bytes=size)
        return ImportedContent(cid, read_format(cid, config), {"IPFS_ORIGIN": origin})
    from one_ipfs.datastore import sources  # urllib, http and the decompressors: only imports need them

    checksums = {name: image.template.get(name, "") for name in sources.HASHES}
    # A backup's downloader is silent while it merges increments: only the whole read is bounded.
    timeout = config.transfer_timeout if sources.is_backup(image.path) else config.stall_timeout
    with sources.open_image(
        image.path, config.safe_dirs, config.restricted_dirs, timeout, checksums
    ) as stream:
        # Pinned as it is added, unless a checksum (or a backup downloader's exit status) may still refuse
        # it: pinning after the add reads the whole image back. A driver killed before the hold
        # leaves a pin ``rm`` releases.
        verified_later = bool(stream.hashes.expected) or sources.is_backup(image.path)
        added = image_store.client(config).add(
            stream.reader,
            settings=config.import_settings,
            pin=not verified_later,
            pin_name=name,
            progress=_add_progress(),
        )
        stream.verify()
        image_format = stream.format
    log_info(f"added {added.size >> 20} MiB as {added.cid}")
    image_store.hold(added.cid, name, config)
    return ImportedContent(added.cid, image_format)


def image_size_mb(path: str, config: DatastoreConfig) -> int:
    """MB an image will take, read from IPFS metadata (and a qcow2 header), never the whole image."""
    path = as_ipfs_path(path, config)
    if looks_like_ipfs_path(path):
        cid, _ = image_store.resolve(path, config)
        info = image_store.client(config).files_stat(f"/ipfs/{cid}", timeout=config.stall_timeout)
        virtual = qcow2_virtual_size(read_header(cid, config)) if info.size >= 32 else None
        return size_mb(virtual if virtual is not None else info.size)
    from one_ipfs.datastore import sources

    return size_mb(
        sources.local_or_url_size(path, config.safe_dirs, config.restricted_dirs, config.stall_timeout)
    )


def announced_format(stored: str, config: DatastoreConfig) -> str:
    """The FORMAT oned gets for an image, which it sets as every disk's DRIVER: the disks an OVERLAY
    datastore deploys are qcow2 overlays, whatever their base holds; a COPY datastore's disks hold the
    bytes as they are."""
    return "qcow2" if config.deploy_mode == "OVERLAY" else stored


def create_datablock(
    size: int, filesystem: str, image_format: str, name: str, config: DatastoreConfig
) -> str:
    """Make an empty sparse disk (formatted with ``filesystem`` if given) and add it; zeros cost nothing."""
    if filesystem and filesystem not in FILESYSTEMS:
        raise InvalidInput(f"FS must be one of {', '.join(FILESYSTEMS)}, not {filesystem[:40]!r}")
    if image_format not in ("raw", "qcow2"):
        raise InvalidInput(f"FORMAT must be raw or qcow2 for a datablock, not {image_format[:40]!r}")
    scratch = state_dir() / "tmp"
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        disk = Path(folder) / "disk.raw"
        with open(disk, "wb") as handle:
            handle.truncate(size << 20)
        if filesystem:
            run_tool(
                [f"mkfs.{filesystem}", *(["-F"] if filesystem.startswith("ext") else []), "-q", str(disk)]
            )
        if image_format == "qcow2":
            converted = Path(folder) / "disk.qcow2"
            run_tool(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disk), str(converted)])
            disk = converted
        node = image_store.client(config)
        added = node.add(disk, settings=config.import_settings, pin=False)
    image_store.hold(added.cid, name, config)
    return added.cid


def size_and_md5(cid: str, config: DatastoreConfig) -> tuple[int, str]:
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    for chunk in image_store.client(config).cat(f"/ipfs/{cid}", timeout=config.transfer_timeout):
        digest.update(chunk)
        size += len(chunk)
    return size_mb(size), digest.hexdigest()


def _add_progress() -> Callable[[int], None]:
    last = [0.0]

    def report(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 5:
            last[0] = now
            log_info(f"added {done >> 20} MiB")

    return report


def run_tool(argv: list[str], timeout: float = MKFS_TIMEOUT) -> bytes:
    """Run a disk tool (mkfs, qemu-img) on the frontend: its output, or its last error line as ours."""
    if shutil.which(argv[0]) is None:
        raise StorageError(f"{argv[0]} is not installed on the frontend")
    try:
        result = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise StorageError(f"{argv[0]} {argv[1]} did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise StorageError(
            f"{argv[0]} failed: {message[-1] if message else 'exit ' + str(result.returncode)}"
        )
    return result.stdout
