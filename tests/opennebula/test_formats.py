"""The format oned announces for a disk is the format of the file the hypervisor gets.

oned sets every disk's DRIVER and FORMAT to its image's FORMAT (``Image::disk_attribute``), and libvirt
opens the file with that driver: a qcow2 overlay announced as raw shows the guest a qcow2 header. Each
test follows raw and qcow2 images through a whole life in a COPY and an OVERLAY datastore (deploys
as non-persistent and persistent disks, snapshots, resize, live and cold migration, save-as, save back,
a clone into the other datastore) and after every step compares ``qemu-img info`` of every disk file
with the DISK's DRIVER and FORMAT, and the bytes the guest sees with the image's. The cases of a format unlike
the mode's own (the overlay of a raw image, a qcow2 image copied whole) run on every version; the other two,
two minutes each, on the current one only (``current_version``).
"""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from one_ipfs.ipfs.rpc import ImportSettings
from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.one import Datastore, DiskSpec, Image, VirtualMachine
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]

SIZE = 2 << 20
CHANGE = b"\x5a" * (64 << 10)


@pytest.fixture(scope="module")
def datastores(bed: Bed, one: GenuineOne) -> dict[str, Datastore]:
    return {
        mode: one.datastore_create(
            ipfs_datastore_template(bed, f"ipfs-formats-{mode.lower()}", IPFS_DEPLOY_MODE=mode)
        )
        for mode in ("COPY", "OVERLAY")
    }


def in_format(data: bytes, image_format: str) -> bytes:
    """``data`` as an image file of ``image_format``."""
    if image_format == "raw":
        return data
    with tempfile.TemporaryDirectory() as folder:
        raw, converted = Path(folder) / "disk.raw", Path(folder) / "disk.qcow2"
        raw.write_bytes(data)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, converted], check=True)
        return converted.read_bytes()


def folder_of(vm: VirtualMachine) -> str:
    return f"/var/lib/one/datastores/0/{vm.id}"


def file_format(bed: Bed, host: str, path: str) -> str:
    """What the file is, as qemu-img (and so libvirt with a wrong DRIVER) tells from its bytes."""
    info = bed.host_run(bed.host(host), ["qemu-img", "info", "-U", "--output=json", path]).stdout
    return str(json.loads(info)["format"])


def assert_formats_announced(bed: Bed, one: GenuineOne, vm: VirtualMachine, step: str) -> None:
    """Every ipfs disk of the VM, and each of its snapshots, is a file of the DISK's DRIVER and FORMAT."""
    current = one.vm(vm)
    for disk in current.disks:
        if disk["TM_MAD"] != "ipfs":
            continue
        announced = (disk["DRIVER"], disk["FORMAT"])
        path = f"{folder_of(current)}/disk.{disk.id}"
        snapshots = (
            bed.host(current.hostname).var_lib_one / "datastores" / "0" / str(vm.id) / f"disk.{disk.id}.snap"
        )
        files = [
            path,
            *(f"{path}.snap/{entry.name}" for entry in snapshots.glob("*") if entry.name.isdigit()),
        ]
        for file in files:
            found = file_format(bed, current.hostname, file)
            assert (found, found) == announced, f"{step}: {file} is {found}, oned announces {announced}"


def guest_view(bed: Bed, one: GenuineOne, vm: VirtualMachine, disk_id: int) -> bytes:
    """The first SIZE bytes the guest reads through the disk, with the driver oned announces."""
    current = one.vm(vm)
    driver = current.disk(disk_id)["DRIVER"]
    path = f"{folder_of(current)}/disk.{disk_id}"
    flat = f"{folder_of(current)}/guest.raw"
    host = bed.host(current.hostname)
    bed.host_run(host, ["qemu-img", "convert", "-U", "-f", driver, "-O", "raw", path, flat])
    local = host.var_lib_one / "datastores" / "0" / str(vm.id) / "guest.raw"
    try:
        with open(local, "rb") as view:
            return view.read(SIZE)
    finally:
        local.unlink()


def write_as_guest(bed: Bed, one: GenuineOne, vm: VirtualMachine, disk_id: int) -> None:
    """A guest write at 1 MiB, through the driver oned announces."""
    current = one.vm(vm)
    path = f"{folder_of(current)}/disk.{disk_id}"
    command = [
        "qemu-io",
        "-f",
        current.disk(disk_id)["DRIVER"],
        "-c",
        f"write -P 0x5a {1 << 20} {len(CHANGE)}",
        path,
    ]
    bed.host_run(bed.host(current.hostname), command)


def changed(data: bytes) -> bytes:
    return data[: 1 << 20] + CHANGE + data[(1 << 20) + len(CHANGE) :]


@pytest.mark.parametrize(
    ("mode", "image_format"),
    [
        pytest.param("COPY", "raw", marks=pytest.mark.current_version),
        ("OVERLAY", "raw"),
        ("COPY", "qcow2"),
        pytest.param("OVERLAY", "qcow2", marks=pytest.mark.current_version),
    ],
)
def test_every_disk_file_is_the_format_oned_announces_through_its_whole_life(
    bed: Bed, one: GenuineOne, datastores: dict[str, Datastore], mode: str, image_format: str
) -> None:
    ds, other_ds = datastores[mode], datastores["OVERLAY" if mode == "COPY" else "COPY"]
    data = disk_bytes(SIZE, seed=len(mode) * 7 + len(image_format))
    cid = (
        bed.host("h3")
        .node.client()
        .add(io.BytesIO(in_format(data, image_format)), settings=ImportSettings())
        .cid
    )
    name = f"{mode.lower()}-{image_format}"
    shared = one.image_create(ds, name=f"fmt-{name}", path=f"/ipfs/{cid}")
    own = one.image_create(ds, name=f"fmt-{name}-persistent", path=f"/ipfs/{cid}", persistent=True)

    vm = one.vm_deploy([shared, own], "h1")
    assert_formats_announced(bed, one, vm, "clone and ln")
    assert guest_view(bed, one, vm, 0) == data
    assert guest_view(bed, one, vm, 1) == data

    one.vm_poweroff(vm)
    snapshot = one.disk_snapshot_create(vm, 0, "before")
    write_as_guest(bed, one, vm, 0)
    one.disk_snapshot_create(vm, 0, "after")
    assert_formats_announced(bed, one, vm, "snap_create")
    one.disk_snapshot_revert(vm, 0, snapshot)
    assert_formats_announced(bed, one, vm, "snap_revert")
    assert guest_view(bed, one, vm, 0) == data
    one.disk_resize(vm, 0, 16)
    assert_formats_announced(bed, one, vm, "resize")

    one.vm_resume(vm)
    one.vm_migrate(vm, "h2", live=True)
    assert_formats_announced(bed, one, vm, "live migration")
    one.vm_migrate(vm, "h3")
    assert_formats_announced(bed, one, vm, "cold migration")

    write_as_guest(bed, one, vm, 1)
    one.vm_poweroff(vm)
    saved = one.disk_saveas(vm, 1, f"fmt-{name}-saved")
    one.vm_terminate(vm)
    after_save: list[tuple[str, Image]] = [("cpds", saved), ("mvds", own)]
    after_save.append(("clone", one.image_clone(shared, f"fmt-{name}-clone", other_ds)))
    vms = {step: one.vm_deploy([DiskSpec(image)], "h2") for step, image in after_save}

    expected = {"cpds": changed(data), "mvds": changed(data), "clone": data}
    for step, deployed in vms.items():
        assert_formats_announced(bed, one, deployed, step)
        assert guest_view(bed, one, deployed, 0) == expected[step], step
        one.vm_terminate(deployed)
    assert len(one.image(own).template["IPFS_VERSIONS"].split()) == 2
    assert one.image(own).template["IPFS_FORMAT"] == image_format  # a save back keeps the content's format
