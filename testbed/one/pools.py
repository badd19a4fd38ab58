"""oned's object pools as the simulator keeps them: the state folder's documents, read as the views tests get,
and the bookkeeping every manager shares (a VM's state, the id lists a host and a datastore keep)."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from testbed.one.documents import (
    LCM_STATES,
    VM_STATES,
    Datastore,
    Image,
    VirtualMachine,
    collection_ids,
    log_time,
    set_collection,
    set_text,
    template_set,
    text,
    to_string,
    vector_get,
)
from testbed.one.failure import OneFailure
from testbed.one.state import StateStore

ImageRef = Image | int
DatastoreRef = Datastore | int
VmRef = VirtualMachine | int


def oid(ref: Image | Datastore | VirtualMachine | int) -> int:
    """The id of an object or of its view."""
    return ref if isinstance(ref, int) else ref.id


def b64(document: str) -> str:
    """How oned hands a document to a driver: base64 on stdin or in an argument."""
    return base64.b64encode(document.encode()).decode()


def set_error(root: ET.Element, section: str, message: str) -> None:
    """The ERROR attribute oned stamps into an object's ``section`` (TEMPLATE, a VM's USER_TEMPLATE)."""
    node = root.find(section)
    assert node is not None
    template_set(node, "ERROR", f"{log_time()}: {message}")


def set_vm_state(root: ET.Element, state: str, lcm: str = "LCM_INIT") -> None:
    """A VM document's new STATE and LCM_STATE, the old ones kept as PREV_*."""
    set_text(root, "PREV_STATE", text(root, "STATE"))
    set_text(root, "PREV_LCM_STATE", text(root, "LCM_STATE"))
    set_text(root, "STATE", VM_STATES[state])
    set_text(root, "LCM_STATE", LCM_STATES[lcm])


def find_disk(root: ET.Element, disk_id: int) -> ET.Element:
    """The DISK vector ``disk_id`` of a VM document."""
    for disk in root.findall("TEMPLATE/DISK"):
        if vector_get(disk, "DISK_ID") == str(disk_id):
            return disk
    raise OneFailure(
        "one.vm.info", f"VM {text(root, 'ID')} has no DISK with ID {disk_id}", int(text(root, "ID"))
    )


class Pools:
    """The image, datastore, VM and host pools in ``store``."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def read(self, kind: str, number: int) -> ET.Element:
        """One document, or oned's failure for an object it does not hold."""
        root = self.store.read(kind, number)
        if root is None:
            noun = {"vm": "virtual machine"}.get(kind, kind)
            raise OneFailure(f"one.{kind}.info", f"Error getting {noun} [{number}].", number)
        return root

    def image(self, image: ImageRef) -> Image:
        return Image.from_xml(to_string(self.read("image", oid(image))))

    def datastore(self, datastore: DatastoreRef) -> Datastore:
        return Datastore.from_xml(to_string(self.read("datastore", oid(datastore))))

    def vm(self, vm: VmRef) -> VirtualMachine:
        return VirtualMachine.from_xml(to_string(self.read("vm", oid(vm))))

    def images(self) -> list[Image]:
        return [self.image(number) for number in self.store.ids("image")]

    def host_id(self, name: str) -> int:
        for number in self.store.ids("host"):
            root = self.store.read("host", number)
            if root is not None and text(root, "NAME") == name:
                return number
        raise OneFailure("one.host.info", f"Host named {name} not found.")

    def vm_state(self, vmid: int) -> tuple[str, str]:
        view = self.vm(vmid)
        return view.state, view.lcm_state

    def set_vm_state(self, vmid: int, state: str, lcm: str = "LCM_INIT") -> None:
        with self.store.edit("vm", vmid) as root:
            set_vm_state(root, state, lcm)

    def datastore_images(self, ds_id: int, add: int | None = None, remove: int | None = None) -> None:
        """A datastore's IMAGES list after an image came or went."""
        with self.store.edit("datastore", ds_id) as ds:
            ids = [i for i in collection_ids(ds, "IMAGES") if i != remove]
            set_collection(ds, "IMAGES", ids + ([add] if add is not None else []))

    def host_vms(self, name: str, add: int | None = None, remove: int | None = None) -> None:
        """A host's VMS list and RUNNING_VMS after a VM came or went."""
        with self.store.edit("host", self.host_id(name)) as root:
            ids = [i for i in collection_ids(root, "VMS") if i != remove] + ([add] if add is not None else [])
            set_collection(root, "VMS", ids)
            set_text(root, "HOST_SHARE/RUNNING_VMS", len(set(ids)))
