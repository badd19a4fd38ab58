"""The datastore driver (DS_MAD ``ipfs``): one function per action oned sends, and the table of them.

Each action gets the parsed DRV_ACTION and the datastore's settings, and returns the one stdout
line OpenNebula expects (``SOURCE FORMAT`` for cp, MB for stat, ...). Errors are raised, and turned
into OpenNebula's failure line in ``opennebula.output``.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import BinaryIO

from one_ipfs import image_store
from one_ipfs.config import DatastoreConfig, load_config
from one_ipfs.datastore import backups, content
from one_ipfs.errors import InvalidInput, NotSupported
from one_ipfs.images import ImageHandle, ImageSnapshots, ImageVersions
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.documents import DsAction, ImageTemplate, read_ds_action
from one_ipfs.opennebula.output import dispatch, log_info

SAVE_AS = "save_as"


def cp(action: DsAction, config: DatastoreConfig) -> str:
    """Register an image: fetch and pin IPFS content, or add a frontend file or URL, under a new handle."""
    image = _image(action)
    handle = ImageHandle(action.datastore.id, _image_id(image))
    imported = content.import_image(image, handle.hold_name(1), config)
    attributes = {**imported.attributes, **image_store.format_attributes(imported.format)}
    _record(handle, ImageVersions().with_version(imported.cid), attributes, config)
    log_info(f"image {handle.image_id} is {imported.cid} ({imported.format})")
    return f"{handle} {content.announced_format(imported.format, config)}"


def stat(action: DsAction, config: DatastoreConfig) -> str:
    """Size in MB, rounded up, without downloading the image."""
    return str(content.image_size_mb(_image(action).path, config))


def clone(action: DsAction, config: DatastoreConfig) -> str:
    """A new image with the same content: a new handle and hold, zero bytes copied."""
    image = _image(action)
    handle = ImageHandle(action.datastore.id, _image_id(image))
    held = image_store.current_content(image.path, config)
    stored = held.format or image.format or content.read_format(held.cid, config)
    image_store.hold(held.cid, handle.hold_name(1), config)
    attributes = {"IPFS_CLONED_FROM": image.path, **image_store.format_attributes(stored)}
    _record(handle, ImageVersions().with_version(held.cid), attributes, config)
    return f"{handle} {content.announced_format(stored, config)}"


def mkfs(action: DsAction, config: DatastoreConfig) -> str:
    """An empty datablock (sparse, formatted when FS is set); a save-as placeholder gets content later."""
    image = _image(action)
    handle = ImageHandle(action.datastore.id, _image_id(image))
    if SAVE_AS in (image.format, image.fs):
        return str(handle)
    if image.size_mb is None or image.size_mb <= 0:
        raise InvalidInput("a datablock needs a SIZE in MB greater than 0")
    stored = image.format or "raw"
    cid = content.create_datablock(image.size_mb, image.fs, stored, handle.hold_name(1), config)
    _record(handle, ImageVersions().with_version(cid), image_store.format_attributes(stored), config)
    return str(handle)


def rm(action: DsAction, config: DatastoreConfig) -> None:
    """Release this image's versions; content another image still holds stays pinned."""
    image = _image(action)
    handle = ImageHandle.parse(image.source)
    if handle is None:
        log_info(f"{image.source[:200]} names fixed content this datastore never pinned: nothing to release")
        return
    own = ImageHandle(action.datastore.id, _image_id(image))
    if handle != own:
        raise InvalidInput(
            f"SOURCE {handle} belongs to image {handle.image_id} of datastore {handle.datastore_id}, "
            f"not to image {own.image_id} of datastore {own.datastore_id}: its content is left alone"
        )
    versions = ImageVersions.from_template(image.template)
    for number, cid in reversed(versions.entries):
        image_store.release(cid, handle.hold_name(number), config)
    image_store.release_unrecorded(handle, versions, config)
    for snapshot_id, cid in ImageSnapshots.from_template(image.template).entries:
        image_store.release(cid, handle.snapshot_hold_name(snapshot_id), config)
    log_info(f"released {len(versions.entries)} version(s) of image {handle.image_id}")


def monitor(action: DsAction, config: DatastoreConfig) -> str:
    used, total, free = image_store.capacity_mb(config)
    return f"USED_MB={used}\nTOTAL_MB={total}\nFREE_MB={free}"


def export(action: DsAction, config: DatastoreConfig) -> str:
    """IMPORT_INFO for the marketplace: the image on the frontend's IPFS gateway, which OpenNebula's
    http and s3 marketplaces download with ``downloader.sh``, and from which an IPFS datastore takes
    the CID again without copying anything."""
    image = _image(action)
    held = image_store.current_content(image.source, config)
    cid = held.cid
    source = content.gateway_url(cid, config)
    size_mb, md5 = content.size_and_md5(cid, config)
    image_format = held.format or image.format or content.read_format(cid, config)
    return (
        "<IMPORT_INFO>"
        f"<IMPORT_SOURCE><![CDATA[{source}]]></IMPORT_SOURCE>"
        f"<MD5><![CDATA[{md5}]]></MD5>"
        f"<SIZE><![CDATA[{size_mb}]]></SIZE>"
        f"<FORMAT><![CDATA[{html.escape(image_format)}]]></FORMAT>"
        "<DISPOSE>NO</DISPOSE>"
        "</IMPORT_INFO>"
    )


def _snapshots_not_supported(action: DsAction, config: DatastoreConfig) -> None:
    raise NotSupported(
        "image snapshots are not supported by the ipfs datastore: every saved version of a persistent "
        "image is kept in IPFS_VERSIONS instead"
    )


ACTIONS: dict[str, Callable[[DsAction, DatastoreConfig], str | None]] = {
    "cp": cp,
    "stat": stat,
    "clone": clone,
    "mkfs": mkfs,
    "rm": rm,
    "monitor": monitor,
    "export": export,
    "snap_delete": _snapshots_not_supported,
    "snap_revert": _snapshots_not_supported,
    "snap_flatten": _snapshots_not_supported,
}


BACKUP_DS_ACTIONS: dict[str, Callable[[DsAction, DatastoreConfig], str | None]] = {
    "stat": stat,
    "monitor": monitor,
    **backups.ACTIONS,
}
"""What a backup datastore (``TYPE=BACKUP_DS``) answers; its backup, backup_cancel and ls come as
``backups.VM_ACTIONS``."""


def run(name: str, args: list[str], stdin: BinaryIO) -> str | None:
    """Parse what oned sent (the VM manager's calling convention for backups, else either of the datastore
    driver manager's) and run the action it names, from the table of the datastore's type."""
    if name in backups.VM_ACTIONS:
        return dispatch("datastore", backups.VM_ACTIONS, name, lambda: (args, stdin))
    return dispatch("datastore", BY_TYPE, name, lambda: _configured(read_ds_action(args, stdin)[0]))


def _by_datastore_type(name: str) -> Callable[[DsAction, DatastoreConfig], str | None]:
    """Action ``name`` of the table of the datastore's type: a backup datastore answers its own."""

    def act(action: DsAction, config: DatastoreConfig) -> str | None:
        backup = action.datastore.type == backups.BACKUP_DS
        action_fn = (BACKUP_DS_ACTIONS if backup else ACTIONS).get(name)
        if action_fn is None:
            kind = "a backup" if backup else "an image"
            raise NotSupported(f"{kind} datastore of the ipfs driver has no action {name[:40]!r}")
        return action_fn(action, config)

    return act


BY_TYPE = {name: _by_datastore_type(name) for name in (*ACTIONS, *BACKUP_DS_ACTIONS)}


def _configured(action: DsAction) -> tuple[DsAction, DatastoreConfig]:
    backup = action.datastore.type == backups.BACKUP_DS
    return action, load_config(action.datastore.attributes, backup=backup)


def _image(action: DsAction) -> ImageTemplate:
    if action.image is None:
        raise InvalidInput("the driver action carries no IMAGE")
    return action.image


def _image_id(image: ImageTemplate) -> int:
    if image.id is None:
        raise InvalidInput("the driver action's IMAGE has no ID")
    return image.id


def _record(
    handle: ImageHandle, versions: ImageVersions, extra: dict[str, str], config: DatastoreConfig
) -> None:
    """Write the CIDs into OpenNebula's database; if that fails, release what was pinned for it."""
    current = versions.current
    assert current is not None
    try:
        oned.update_image(
            handle.image_id, {**versions.attributes(), **image_store.import_attributes(config), **extra}
        )
    except Exception:
        image_store.release(current[1], handle.hold_name(current[0]), config)
        raise
