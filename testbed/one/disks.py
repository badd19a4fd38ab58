"""A VM's DISK vectors as oned composes them from its images (``VirtualMachineDisks::get_images``,
``Image::disk_attribute``, ``Datastore::disk_attribute``) and checks them against the system datastore at
deploy."""

from __future__ import annotations

import string
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from testbed.one.conf import OnedConf
from testbed.one.documents import (
    DISK_TYPES,
    IMAGE_TYPES,
    integer,
    template_get,
    text,
    vector_element,
    vector_get,
    vector_set,
)
from testbed.one.images import acquire
from testbed.one.pools import ImageRef, Pools, oid


def image_disks(
    pools: Pools, conf: OnedConf, vmid: int, images: Sequence[ImageRef], context: ET.Element | None
) -> list[ET.Element]:
    """Acquire each image for ``vmid`` and assign TARGETs: the first OS disk first, then the context CD,
    then the rest."""
    disks: list[ET.Element] = []
    queues: dict[str, list[tuple[str, ET.Element]]] = {"os": [], "cdrom": [], "datablock": []}
    for disk_id, image in enumerate(images):
        disk, image_type = _image_disk(pools, conf, vmid, disk_id, oid(image))
        kind = "os" if image_type == "OS" and not queues["os"] else "datablock"
        queues[kind].append((vector_get(disk, "DEV_PREFIX"), disk))
        disks.append(disk)
    if context is not None:
        queues["cdrom"].append((conf.default_cdrom_device_prefix, context))
    used: set[str] = set()
    for kind in ("os", "cdrom", "datablock"):
        for prefix, disk in queues[kind]:
            vector_set(disk, "TARGET", _next_target(prefix, used))
    return disks


def _image_disk(
    pools: Pools, conf: OnedConf, vmid: int, disk_id: int, image_id: int
) -> tuple[ET.Element, str]:
    """The image acquired and its DISK vector composed; the image's type."""
    with pools.store.locked():
        image = pools.read("image", image_id)
        acquire(image, vmid)
        pools.store.write("image", image_id, image)
    ds = pools.read("datastore", integer(image, "DATASTORE_ID"))
    image_format = text(image, "FORMAT").lower()
    values: dict[str, str] = {
        "DISK_ID": str(disk_id),
        "DEV_PREFIX": conf.default_device_prefix,
        "IMAGE": text(image, "NAME"),
        "IMAGE_ID": str(image_id),
        "IMAGE_UID": text(image, "UID"),
        "IMAGE_UNAME": text(image, "UNAME"),
        "SOURCE": text(image, "SOURCE"),
        "ORIGINAL_SIZE": text(image, "SIZE"),
        "SIZE": text(image, "SIZE"),
        "DISK_SNAPSHOT_TOTAL_SIZE": "0",
        "IMAGE_STATE": text(image, "STATE"),
        "TYPE": next((n for n, c in DISK_TYPES.items() if c == integer(image, "DISK_TYPE")), "FILE"),
        "DATASTORE": text(ds, "NAME"),
        "DATASTORE_ID": text(ds, "ID"),
        "TM_MAD": text(ds, "TM_MAD"),
        "CLUSTER_ID": "0",
        "READONLY": "NO",
    }
    if image_format:
        values["DRIVER"] = values["FORMAT"] = image_format
    if text(image, "PERSISTENT") == "1":
        values.update(PERSISTENT="YES", CLONE="NO", SAVE="YES")
    else:
        values.update(CLONE="YES", SAVE="NO")
    ds_template = ds.find("TEMPLATE")
    if ds_template is not None:
        for name in ("CLONE_TARGET", "LN_TARGET"):
            value = template_get(ds_template, name)
            if value:
                values[name] = value
    return vector_element("DISK", values), IMAGE_TYPES[integer(image, "TYPE")]


def _next_target(prefix: str, used: set[str]) -> str:
    target = next(f"{prefix}{letter}" for letter in string.ascii_lowercase if f"{prefix}{letter}" not in used)
    used.add(target)
    return target


def system_mode(pools: Pools, disk: ET.Element, system_tm: str) -> str:
    """``check_tm_mad_disks`` for one DISK: its image datastore's TM_MAD_SYSTEM mode for ``system_tm``
    copied into the disk; what oned refuses the deploy with ('' if nothing)."""
    ds = pools.read("datastore", int(vector_get(disk, "DATASTORE_ID")))
    node = ds.find("TEMPLATE")
    mode = system_tm.strip().upper()
    values = [
        template_get(node, f"{n}_{mode}") if node is not None else ""
        for n in ("CLONE_TARGET", "LN_TARGET", "DISK_TYPE")
    ]
    if not all(values):
        return f"Image Datastore does not support transfer mode: {system_tm}"
    clone_target, ln_target, disk_type = values
    vector_set(disk, "CLONE_TARGET", clone_target)
    vector_set(disk, "LN_TARGET", ln_target)
    vector_set(disk, "TYPE", disk_type)
    vector_set(disk, "DISK_TYPE", disk_type)
    vector_set(disk, "TM_MAD_SYSTEM", system_tm)
    return ""
