"""VM disks as the tests reach them: images put on one host's node, disks read and written on their host.

Each helper takes the cloud that runs the drivers, genuine oned or the simulator (``testbed.genuine.Cloud``).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from one_ipfs.ipfs.rpc import ImportSettings
from testbed.bed import Bed
from testbed.genuine import Cloud
from testbed.one import Datastore, Image, VirtualMachine
from testbed.one.documents import parse_xml
from tests.support.images import sha256

SETTINGS = ImportSettings()
LEFTOVERS = ("*.part", "*.saving", "*.tmp")


def disk_path(bed: Bed, one: Cloud, vm: VirtualMachine, disk_id: int = 0, host: str | None = None) -> Path:
    """A disk of ``vm`` in its host's system datastore, as the root namespace reaches it."""
    last = one.vm(vm).history[-1]
    folder = bed.host(host or last.hostname).var_lib_one / "datastores" / str(last.ds_id) / str(vm.id)
    return folder / f"disk.{disk_id}"


def deploy_checked(bed: Bed, one: Cloud, disks: list[tuple[Image, bytes]], host: str) -> VirtualMachine:
    """A VM of the images of ``disks`` on ``host``, each disk checked to hold its image's content (sha256)."""
    vm = one.vm_deploy([image for image, _ in disks], host)
    for disk_id, (_, content) in enumerate(disks):
        assert sha256(disk_path(bed, one, vm, disk_id).read_bytes()) == sha256(content), (vm.id, disk_id)
    return vm


def guest_change(bed: Bed, one: Cloud, vm: VirtualMachine, disk_id: int, offset: int, data: bytes) -> bytes:
    """Write into a VM's disk as its guest does (``write_into``); the whole disk after."""
    path = disk_path(bed, one, vm, disk_id)
    write_into(path, offset, data)
    return path.read_bytes()


def add_on(bed: Bed, host: str, data: bytes) -> str:
    """Put content on one host's node only, so the frontend has to fetch it over the private network."""
    return bed.host(host).node.client().add(io.BytesIO(data), settings=SETTINGS).cid


def image_from(bed: Bed, one: Cloud, ds: Datastore, data: bytes, name: str, **kwargs: object) -> Image:
    """An image whose content was put on h3's node only: deploys must fetch it peer to peer."""
    return one.image_create(ds, name=name, path=f"/ipfs/{add_on(bed, 'h3', data)}", **kwargs)  # type: ignore[arg-type]


def guest_view(bed: Bed, one: Cloud, vm: VirtualMachine) -> bytes:
    """The bytes the guest sees through its disk, read on its host (a qcow2 overlay's base lives there)."""
    host = bed.host(one.vm(vm).hostname)
    folder = f"/var/lib/one/datastores/0/{vm.id}"
    bed.host_run(host, ["qemu-img", "convert", "-O", "raw", f"{folder}/disk.0", f"{folder}/guest.raw"])
    flat = host.var_lib_one / "datastores" / "0" / str(vm.id) / "guest.raw"
    try:
        return flat.read_bytes()
    finally:
        flat.unlink()


def file_view(bed: Bed, one: Cloud, vm: VirtualMachine, name: str, driver: str) -> bytes:
    """What a guest reads through ``name`` in the VM folder (``disk.0``, ``disk.0.snap/1``) opened as
    ``driver``, read on the VM's host (where an overlay's base lives)."""
    current = one.vm(vm)
    host = bed.host(current.hostname)
    folder = f"/var/lib/one/datastores/{current.history[-1].ds_id}/{vm.id}"
    flat = f"{folder}/guest.raw"
    bed.host_run(host, ["qemu-img", "convert", "-U", "-f", driver, "-O", "raw", f"{folder}/{name}", flat])
    local = host.var_lib_one / "datastores" / str(current.history[-1].ds_id) / str(vm.id) / "guest.raw"
    try:
        return local.read_bytes()
    finally:
        local.unlink()


def guest_write(bed: Bed, one: Cloud, vm: VirtualMachine, offset: int, data: bytes, disk_id: int = 0) -> None:
    """A guest write into a disk through the driver oned announces (a qcow2 overlay stays a qcow2)."""
    current = one.vm(vm)
    path = disk_path(bed, one, vm, disk_id)
    staged = path.with_name("guest.write")
    staged.write_bytes(data)
    driver = current.disk(disk_id)["DRIVER"]
    folder = f"/var/lib/one/datastores/{current.history[-1].ds_id}/{vm.id}"
    command = ["qemu-io", "-f", driver, "-c", f"write -s {folder}/guest.write {offset} {len(data)}"]
    try:
        bed.host_run(bed.host(current.hostname), [*command, f"{folder}/disk.{disk_id}"])
    finally:
        staged.unlink()


def disks_on(bed: Bed, host: str) -> set[Path]:
    """Every disk file (and partial one) in the host's system datastore."""
    return set((bed.host(host).var_lib_one / "datastores" / "0").rglob("disk.*"))


def write_into(path: Path, offset: int, data: bytes) -> None:
    """What a guest does to its disk."""
    with open(path, "r+b") as disk:
        disk.seek(offset)
        disk.write(data)


def leftovers(bed: Bed, host: str) -> list[Path]:
    """Partial disks and temporary files anywhere in the host's datastores."""
    folder = bed.host(host).var_lib_one / "datastores"
    return sorted(path for pattern in LEFTOVERS for path in folder.rglob(pattern))


def vm_disks(bed: Bed, host: str, vm: VirtualMachine) -> list[Path]:
    """The VM's disk files on ``host``'s system datastore (none once it is gone from there)."""
    folder = bed.host(host).var_lib_one / "datastores" / "0" / str(vm.id)
    return sorted(folder.glob("disk.*")) if folder.exists() else []


def stored_views(bed: Bed, images: list[Image], folder: Path) -> list[str]:
    """What a guest would read through images restored into an ``ipfs`` datastore, read from the IPFS
    content each one records (a backup disk is qcow2), without deploying them."""
    seen_in = []
    for image in images:
        stored, flat = folder / f"{image.id}.qcow2", folder / f"{image.id}.raw"
        stored.write_bytes(b"".join(bed.frontend.client().cat(f"/ipfs/{image.template['IPFS_CID']}")))
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", stored, flat], check=True)
        seen_in.append(sha256(flat.read_bytes()))
    return seen_in


def parse_increments(backup: Image) -> list[int]:
    """The increment IDs oned recorded in a backup image."""
    return [
        int(node.text or "-1") for node in parse_xml(backup.xml).findall("BACKUP_INCREMENTS/INCREMENT/ID")
    ]
