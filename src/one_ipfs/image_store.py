"""The image store on the datastore's node, as every driver reads and holds it: the node's client, an
image version held or released by the rules of ``images.ContentRegistry``, and what an image holds now.

The datastore driver imports content into it (``datastore.content``); the transfer driver saves disks back
into it and the marketplace publishes from it, all through here, so that a saved disk is a new version of
its image held exactly like an imported one.
"""

from __future__ import annotations

from dataclasses import dataclass

from one_ipfs.config import DatastoreConfig, state_dir
from one_ipfs.errors import InvalidInput
from one_ipfs.images import ContentRegistry, ImageHandle, ImageVersions, Replicas
from one_ipfs.ipfs.cluster import ClusterClient
from one_ipfs.ipfs.paths import parse_ipfs_path
from one_ipfs.ipfs.rpc import KuboClient
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.documents import ImageTemplate
from one_ipfs.opennebula.output import log_info


def client(config: DatastoreConfig) -> KuboClient:
    return KuboClient(config.api, timeout=config.rpc_timeout, auth=config.api_authorization())


def registry(config: DatastoreConfig) -> ContentRegistry:
    replicas = None
    if config.replication is not None:
        replicas = Replicas(ClusterClient(config.cluster_api, timeout=config.rpc_timeout), config.replication)
    return ContentRegistry(client(config), state_dir() / "locks", replicas)


def import_attributes(config: DatastoreConfig) -> dict[str, str]:
    """The import settings an image's CIDs were made with: they change CIDs, so they are recorded."""
    settings = config.import_settings
    return {
        "IPFS_IMPORT": (
            f"chunker={settings.chunker} cid-version={settings.cid_version} "
            f"raw-leaves={str(settings.raw_leaves).lower()} hash={settings.hash}"
        )
    }


def hold(cid: str, name: str, config: DatastoreConfig, total_bytes: int | None = None) -> None:
    registry(config).hold(
        cid,
        name,
        log=log_info,
        timeout=config.transfer_timeout,
        stall_timeout=config.stall_timeout,
        total_bytes=total_bytes,
    )


def release(cid: str, name: str, config: DatastoreConfig) -> None:
    if registry(config).release(cid, name):
        log_info(f"unpinned {cid}: nothing holds it any more")


def release_unrecorded(handle: ImageHandle, versions: ImageVersions, config: DatastoreConfig) -> None:
    for cid in registry(config).release_unrecorded(handle, versions):
        log_info(f"released {cid}: a version of {handle} that was saved but never recorded")


def resolve(path: str, config: DatastoreConfig) -> tuple[str, str]:
    """An IPFS PATH to ``(cid, origin)``: IPNS names are resolved once, here, and the CID kept."""
    given = parse_ipfs_path(path)
    node = client(config)
    resolved = given.path
    if given.is_mutable:
        resolved = node.name_resolve(given.path, timeout=config.stall_timeout)
        log_info(f"{given.path} resolved to {resolved}")
    info = node.files_stat(resolved, timeout=config.stall_timeout)
    if info.type != "file":
        raise InvalidInput(f"{path[:200]} is a {info.type}, not a disk image file")
    return info.cid, given.path


@dataclass(frozen=True)
class Content:
    """What an image holds now: its CID and the format of those bytes (None where nothing records it)."""

    cid: str
    format: str | None


def current_content(source: str, config: DatastoreConfig) -> Content:
    """The last recorded version of a handle, or the content a fixed SOURCE names (whose format is the
    image's FORMAT, which the caller has)."""
    handle = ImageHandle.parse(source)
    if handle is not None:
        return recorded_content(handle)
    cid, _ = resolve(source, config)
    return Content(cid, None)


def recorded_content(handle: ImageHandle) -> Content:
    """The last version recorded in the template of the image behind ``handle``, and its format."""
    image = oned.show_image(handle.image_id)
    cid = ImageVersions.from_template(image.template).current_cid
    if cid is None:
        raise InvalidInput(f"image {handle.image_id} has no content yet (no IPFS_CID recorded)")
    return Content(cid, stored_format(image))


def stored_format(image: ImageTemplate) -> str:
    """The format of the bytes an image's CID holds: ``IPFS_FORMAT``, recorded because the FORMAT oned
    announces may differ from it (``datastore.content.announced_format``); images made before it have the
    two alike."""
    return image.template.get("IPFS_FORMAT") or image.format


def format_attributes(stored: str) -> dict[str, str]:
    return {"IPFS_FORMAT": stored}


def capacity_mb(config: DatastoreConfig) -> tuple[int, int, int]:
    """USED, TOTAL and FREE MB: the repo's size against the lower of its storage limit and its disk."""
    node = client(config)
    stats = node.repo_stat()
    used, limit = stats.repo_size, stats.storage_max
    disk_total = used + node.repo_disk().free
    total = min(limit, disk_total) if limit > 0 else disk_total
    used_mb, total_mb = used >> 20, total >> 20
    return used_mb, total_mb, max(total_mb - used_mb, 0)
