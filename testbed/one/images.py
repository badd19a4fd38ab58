"""oned's ImageManager (``ImageManagerActions.cc``, ``ImageManagerProtocol.cc``): images created, cloned,
deleted, acquired by VMs and released, each through the datastore driver as oned sends and reads it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping

from testbed.one.datastores import Datastores
from testbed.one.documents import (
    IMAGE_STATES,
    IMAGE_TYPES,
    Image,
    collection_ids,
    image_document,
    integer,
    set_collection,
    set_text,
    template_attributes,
    template_get,
    text,
    to_string,
)
from testbed.one.failure import OneFailure
from testbed.one.pools import DatastoreRef, ImageRef, Pools, oid, set_error


def error_text(prefix: str, info: str) -> str:
    """oned appends the driver's info unless it is empty or starts with ``-``."""
    return f"{prefix}: {info}" if info and not info.startswith("-") else prefix


def set_image_state(root: ET.Element, state: str) -> None:
    set_text(root, "PREV_STATE", text(root, "STATE"))
    set_text(root, "STATE", IMAGE_STATES.index(state))


def unlock(root: ET.Element) -> None:
    """``Image::set_state_unlock``: a LOCKED image is READY (an ERROR stays)."""
    if IMAGE_STATES[integer(root, "STATE")] == "LOCKED":
        set_image_state(root, "READY")


def fail(root: ET.Element, message: str) -> None:
    """An image left in ERROR with oned's message."""
    set_error(root, "TEMPLATE", message)
    set_image_state(root, "ERROR")


def acquire(image: ET.Element, vmid: int) -> None:
    """``ImageManager::acquire_image``: a READY image is USED (USED_PERS when persistent) by one more VM."""
    if IMAGE_STATES[integer(image, "STATE")] == "READY":
        set_image_state(image, "USED_PERS" if text(image, "PERSISTENT") == "1" else "USED")
    vms = [*collection_ids(image, "VMS"), vmid]
    set_collection(image, "VMS", vms)
    set_text(image, "RUNNING_VMS", len(set(vms)))


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class ImageManager:
    """Images of the image datastores, their drivers called through ``datastores``."""

    def __init__(self, pools: Pools, datastores: Datastores) -> None:
        self.pools = pools
        self.datastores = datastores

    def create(
        self,
        datastore: DatastoreRef,
        *,
        name: str,
        path: str | None = None,
        source: str | None = None,
        size_mb: int | None = None,
        type: str = "OS",
        persistent: bool = False,
        format: str = "",
        fs: str = "",
        template: Mapping[str, str] | None = None,
    ) -> Image:
        """``oneimage create``: STAT (sync) and CP for a PATH, nothing for a SOURCE, MKFS for an empty one.

        Raises OneFailure("one.image.allocate", ...) when oned refuses the request (no image is
        created) and OneFailure(<action>, info, image id) when the driver fails (the image stays, in ERROR).
        """
        ds_id = oid(datastore)
        ds_root = self.pools.read("datastore", ds_id)
        image_type = type.upper()
        size = self._stat(path, source, size_mb, ds_id)
        if not path and not source:
            # Image::insert: an MKFS image's FORMAT is the datastore's DRIVER, else the template's, else raw.
            node = ds_root.find("TEMPLATE")
            format = (template_get(node, "DRIVER") if node is not None else "") or format or "raw"
        number = self.allocate(
            ds_root,
            size,
            lambda number: image_document(
                number,
                name,
                datastore=ds_root,
                image_type=IMAGE_TYPES.index(image_type),
                persistent=persistent,
                source=source or "",
                path=path or "",
                image_format=format,
                fs=fs,
                size_mb=size,
                attributes=[(k.upper(), v) for k, v in (template or {}).items()],
            ),
        )
        return self.register(number, ds_id)

    def _stat(self, path: str | None, source: str | None, size_mb: int | None, ds_id: int) -> int:
        """``ImageManager::stat_image``: SIZE from the template (mandatory without a PATH), or a
        synchronous STAT of the PATH, whose id is a sync-request id, not an image id."""
        api = "one.image.allocate"
        if not path:
            if size_mb is None:
                raise OneFailure(api, "Cannot determine Image SIZE: Wrong number or missing SIZE attribute.")
            return size_mb
        request = self.pools.store.next_id("request")
        image_xml = f"<IMAGE><PATH>{_escape(path)}</PATH></IMAGE>"
        result = self.datastores.request("STAT", request, self.datastores.payload(image_xml, ds_id))
        if not result.success:
            raise OneFailure("STAT", result.info, request)
        try:
            return int(result.info.split()[0])
        except (ValueError, IndexError):
            raise OneFailure(api, f"Cannot parse image SIZE: {result.info}") from None

    def allocate(self, ds_root: ET.Element, size_mb: int, document: Callable[[int], ET.Element]) -> int:
        """``ImagePool::allocate`` once the datastore has room for ``size_mb``: a new id, its ``document``
        written and listed in the datastore; the id."""
        self.datastores.check_capacity(ds_root, size_mb)
        number = self.pools.store.next_id("image")
        with self.pools.store.locked():
            self.pools.store.write("image", number, document(number))
            self.pools.datastore_images(integer(ds_root, "ID"), add=number)
        return number

    def register(self, number: int, ds_id: int) -> Image:
        """``ImageManager::register_image`` and the reply handlers ``_cp``/``_mkfs``; an image saved from a
        VM's disk (SAVE_AS_HOT) stays LOCKED for the CPDS that fills it."""
        root = self.pools.read("image", number)
        path, source = text(root, "PATH"), text(root, "SOURCE")
        node = root.find("TEMPLATE")
        saving = node is not None and template_get(node, "SAVE_AS_HOT").upper() == "YES"
        if not path and source:
            with self.pools.store.edit("image", number) as image:
                unlock(image)
            return self.pools.image(number)
        action = "CP" if path else "MKFS"
        result = self.datastores.request(action, number, self.datastores.payload(to_string(root), ds_id))
        failure = ""
        with self.pools.store.edit("image", number) as image:
            if action == "CP" and result.success:
                words = result.info.split()
                set_text(image, "SOURCE", words[0] if words else "")
                if len(words) < 2:
                    failure = "CP operation succeeded but image FORMAT was not returned."
                else:
                    set_text(image, "FORMAT", words[1])
                    unlock(image)
            elif action == "CP":
                failure = error_text("Error copying image in the datastore", result.info)
            elif result.success:
                set_text(image, "SOURCE", result.info)
                if not saving:
                    unlock(image)
            else:
                failure = error_text("Error creating datablock", result.info)
            if failure:
                fail(image, failure)
        if not saving or failure:
            self.datastores.monitor(ds_id)
        if failure:
            raise OneFailure(action, result.info if not result.success else failure, number)
        return self.pools.image(number)

    def clone(self, image: ImageRef, name: str, datastore: DatastoreRef | None = None) -> Image:
        """``oneimage clone``: a new image whose PATH is the original's SOURCE; CLONE on the target DS."""
        source_id = oid(image)
        original = self.pools.read("image", source_id)
        ds_id = oid(datastore) if datastore is not None else integer(original, "DATASTORE_ID")
        ds_root = self.pools.read("datastore", ds_id)
        number = self.allocate(
            ds_root,
            integer(original, "SIZE"),
            lambda number: image_document(
                number,
                name,
                datastore=ds_root,
                image_type=integer(original, "TYPE"),
                persistent=text(original, "PERSISTENT") == "1",
                path=text(original, "SOURCE"),
                image_format=text(original, "FORMAT"),
                size_mb=integer(original, "SIZE"),
                attributes=template_attributes(original.find("TEMPLATE")),
                cloning_id=source_id,
            ),
        )
        with self.pools.store.edit("image", source_id) as src:
            set_text(src, "CLONING_OPS", integer(src, "CLONING_OPS") + 1)
            set_collection(src, "CLONES", [*collection_ids(src, "CLONES"), number])
            if IMAGE_STATES[integer(src, "STATE")] == "READY":
                set_image_state(src, "CLONE" if text(src, "PERSISTENT") == "1" else "USED")
        clone = to_string(self.pools.read("image", number))
        result = self.datastores.request("CLONE", number, self.datastores.payload(clone, ds_id))
        words = result.info.split() if result.success else []
        with self.pools.store.edit("image", number) as new:
            if words:
                set_text(new, "SOURCE", words[0])
                if len(words) > 1:
                    set_text(new, "FORMAT", words[1])
                unlock(new)
            else:
                fail(new, error_text(f"Error cloning from Image {source_id}", result.info))
            set_text(new, "CLONING_ID", -1)
        self._release_cloning(source_id, number)
        if not words:
            raise OneFailure("CLONE", result.info, number)
        self.datastores.monitor(ds_id)
        return self.pools.image(number)

    def _release_cloning(self, source_id: int, clone_id: int) -> None:
        with self.pools.store.edit("image", source_id) as src:
            clones = [i for i in collection_ids(src, "CLONES") if i != clone_id]
            set_collection(src, "CLONES", clones)
            set_text(src, "CLONING_OPS", len(clones))
            state = IMAGE_STATES[integer(src, "STATE")]
            if state in ("USED", "CLONE") and not clones and integer(src, "RUNNING_VMS") == 0:
                set_image_state(src, "READY")

    def delete(self, image: ImageRef) -> None:
        """``oneimage delete``: RM through the driver when the image has a SOURCE; ERROR if RM fails."""
        number = oid(image)
        root = self.pools.read("image", number)
        ds_id = integer(root, "DATASTORE_ID")
        if text(root, "SOURCE"):
            with self.pools.store.edit("image", number) as current:
                set_image_state(current, "DELETE")
                payload = self.datastores.payload(to_string(current), ds_id)
            result = self.datastores.request("RM", number, payload)
            node = root.find("TEMPLATE")
            forced = node is not None and template_get(node, "FORCE_DELETE").upper() == "YES"
            if not (result.success or forced):
                with self.pools.store.edit("image", number) as current:
                    # oned writes the SOURCE variable before setting it, hence the two spaces.
                    fail(
                        current,
                        "Error removing image from datastore. Retry the operation or manually remove image "
                        "source  and run the delete --force operation to completely delete the image",
                    )
                raise OneFailure("RM", result.info, number)
        with self.pools.store.locked():
            self.pools.store.delete("image", number)
            self.pools.datastore_images(ds_id, remove=number)
        if text(root, "SOURCE"):
            self.datastores.monitor(ds_id)

    def persistent(self, image: ImageRef, persistent: bool) -> Image:
        """``oneimage persistent|nonpersistent``."""
        number = oid(image)
        with self.pools.store.edit("image", number) as root:
            set_text(root, "PERSISTENT", int(persistent))
        return self.pools.image(number)

    def release(self, vmid: int, image_id: int) -> None:
        """``ImageManager::release_image``: the VM no longer uses the image, READY once no VM does."""
        with self.pools.store.locked():
            image = self.pools.read("image", image_id)
            vms = [i for i in collection_ids(image, "VMS") if i != vmid]
            set_collection(image, "VMS", vms)
            set_text(image, "RUNNING_VMS", len(vms))
            state = IMAGE_STATES[integer(image, "STATE")]
            if not vms and (state == "USED_PERS" or integer(image, "CLONING_OPS") == 0):
                set_image_state(image, "READY")
            self.pools.store.write("image", image_id, image)
