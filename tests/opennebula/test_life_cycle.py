"""A VM's whole life under genuine oned, as an admin drives it with OpenNebula's CLI.

Images created every way ``oneimage create`` takes them, VMs deployed on every host at once and on each
system datastore TM the version ships, a powered-off VM resumed, a disk attached and detached, images
cloned and deleted, and failures shown the way an admin sees them: our one line in ``onevm show`` and in
the VM log, a VM that ``onevm recover --retry`` brings back once the cause is gone, and a failed
save-back through each of ``onevm recover``'s ways out.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.genuine.cloud import driver_line
from testbed.one import Datastore, OneFailure
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import pins, settle
from tests.support.vms import (
    SETTINGS,
    disk_path,
    disks_on,
    file_view,
    guest_write,
    image_from,
    vm_disks,
    write_into,
)

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]


@pytest.fixture(scope="module")
def system_datastores(one: GenuineOne) -> list[int]:
    """Every system datastore TM the version ships for hosts' local disks: the default one (``ssh`` on
    6.x, ``local`` on 7.x), and on 7.x one more with ``ssh``, created as an admin would."""
    found = [0]
    if one.datastore(0).template.get("TM_MAD") != "ssh":
        created = one.datastore_create({"NAME": "system-ssh", "TYPE": "SYSTEM_DS", "TM_MAD": "ssh"})
        found.append(created.id)
    return found


def test_images_from_a_file_an_ipfs_path_an_ipfs_url_and_a_gateway_url_deploy_at_once_on_every_host(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, local_dir: Path
) -> None:
    data = disk_bytes(4 << 20, seed=41)
    cid = bed.frontend.client().add(io.BytesIO(data), settings=SETTINGS).cid
    (local_dir / "disk.img").write_bytes(data)
    (local_dir / "disk.img").chmod(0o644)
    paths = {
        "file": str(local_dir / "disk.img"),
        "ipfs-path": f"/ipfs/{cid}",
        "ipfs-url": f"ipfs://{cid}",
        "gateway-url": f"{bed.frontend.gateway}/ipfs/{cid}",
    }
    images = [one.image_create(ipfs_ds, name=f"from-{how}", path=path) for how, path in paths.items()]
    hosts = [host.name for host in bed.hosts]

    with ThreadPoolExecutor(len(hosts)) as pool:
        vms = list(pool.map(lambda pair: one.vm_deploy([pair[0]], pair[1]), zip(images, hosts, strict=True)))

    assert {image.template["IPFS_CID"] for image in images} == {cid}
    for vm, host in zip(vms, hosts, strict=True):
        assert one.vm(vm).hostname == host
        assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
        one.vm_terminate(vm)


def test_each_system_datastore_tm_deploys_and_migrates_the_disk_byte_identical(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, system_datastores: list[int]
) -> None:
    data = disk_bytes(2 << 20, seed=42)
    image = image_from(bed, one, ipfs_ds, data, "system-tms")

    for system_ds in system_datastores:
        vm = one.vm_deploy([image], "h1", system_ds=system_ds)
        assert one.vm(vm).history[-1].ds_id == system_ds
        assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
        one.vm_migrate(vm, "h2", live=True)
        one.vm_migrate(vm, "h3")
        assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
        one.vm_terminate(vm)
        assert not disk_path(bed, one, vm).parent.exists()


def test_a_powered_off_vm_resumes_on_its_host_with_its_disk(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_from(bed, one, ipfs_ds, disk_bytes(2 << 20, seed=43), "poweroff")
    vm = one.vm_deploy([image], "h2")
    write_into(disk_path(bed, one, vm), 8192, b"before poweroff")
    before = sha256(disk_path(bed, one, vm).read_bytes())

    assert one.vm_poweroff(vm).state == "POWEROFF"
    resumed = one.vm_resume(vm)

    assert resumed.lcm_state == "RUNNING"
    assert resumed.hostname == "h2"
    assert sha256(disk_path(bed, one, vm).read_bytes()) == before
    one.vm_terminate(vm)


def test_a_disk_attached_to_a_running_vm_holds_its_image_and_detach_removes_it(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    boot = image_from(bed, one, ipfs_ds, disk_bytes(1 << 20, seed=44), "boot")
    data = disk_bytes(2 << 20, seed=45)
    extra = image_from(bed, one, ipfs_ds, data, "hot-plugged", type="DATABLOCK")
    vm = one.vm_deploy([boot], "h3")

    disk_id = one.disk_attach(vm, extra)

    attached = disk_path(bed, one, vm, disk_id)
    assert sha256(attached.read_bytes()) == sha256(data)
    one.disk_detach(vm, disk_id)
    assert not attached.exists()
    assert disk_id not in {disk.id for disk in one.vm(vm).disks}
    one.vm_terminate(vm)


def test_a_running_vm_grows_its_disks_hot_plugs_a_persistent_disk_and_suspends_keeping_every_byte(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, overlay_ds: Datastore
) -> None:
    data = disk_bytes(2 << 20, seed=48)
    copy = image_from(bed, one, ipfs_ds, data, "running-copy")
    overlay = image_from(bed, one, overlay_ds, data, "running-overlay")
    kept = disk_bytes(1 << 20, seed=49)
    persistent = image_from(bed, one, ipfs_ds, kept, "hot-persistent", persistent=True)
    vm = one.vm_deploy([copy, overlay], "h3")

    one.disk_resize(vm, 0, 8)
    one.disk_resize(vm, 1, 8)
    disk_id = one.disk_attach(vm, persistent)
    guest_write(bed, one, vm, 4096, b"written while hot-plugged" * 40, disk_id=disk_id)
    changed = file_view(bed, one, vm, f"disk.{disk_id}", "raw")
    one.vm_suspend(vm)
    resumed = one.vm_resume(vm)
    one.disk_detach(vm, disk_id)

    for grown, driver in ((0, "raw"), (1, "qcow2")):
        view = file_view(bed, one, vm, f"disk.{grown}", driver)
        assert (len(view), sha256(view[: len(data)])) == (8 << 20, sha256(data))
    assert (resumed.lcm_state, resumed.hostname) == ("RUNNING", "h3")
    one.vm_terminate(vm)
    versions = one.image(persistent).template["IPFS_VERSIONS"].split()
    assert len(versions) == 2  # saved once, at the detach
    saved = versions[1].split(":", 1)[1]
    assert sha256(b"".join(bed.frontend.client().cat(f"/ipfs/{saved}"))) == sha256(changed)


def test_a_cloned_image_deploys_its_source_content_and_deleting_both_unpins_it_on_the_frontend(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(2 << 20, seed=46)
    image = image_from(bed, one, ipfs_ds, data, "to-clone")
    cid = image.template["IPFS_CID"]

    clone = one.image_clone(image, "the-clone")
    vm = one.vm_deploy([clone], "h4")

    assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
    one.vm_terminate(vm)
    one.image_delete(clone)
    one.image_delete(image)
    assert cid not in {pinned for pinned, _ in pins(bed.frontend)}


def test_content_nobody_holds_fails_the_deploy_with_our_line_in_onevm_show_and_the_vm_log_then_recovers(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = os.urandom(1 << 20)
    cid = bed.frontend.client().add(io.BytesIO(data), settings=SETTINGS, only_hash=True).cid
    image = one.image_create(ipfs_ds, name="held-by-nobody", source=f"/ipfs/{cid}", format="raw", size_mb=1)
    disks = disks_on(bed, "h2")

    with pytest.raises(OneFailure) as failure:
        one.vm_deploy([image], "h2")

    line, vm = failure.value.info, one.vm(failure.value.oid or 0)
    assert vm.lcm_state == "PROLOG_FAILURE"
    assert cid in line
    assert "\n" not in line
    assert line.startswith(driver_line(vm.error))  # onevm show: as much of it as oned keeps
    assert line in one.vm_log(vm)
    assert disks_on(bed, "h2") == disks
    bed.host("h3").node.client().add(io.BytesIO(data), settings=SETTINGS)
    assert one.vm_recover_retry(vm).lcm_state == "RUNNING"
    assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
    one.vm_terminate(vm)


def test_a_stopped_host_node_fails_the_deploy_with_one_line_and_the_vm_recovers_once_it_is_back(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(1 << 20, seed=47)
    image = image_from(bed, one, ipfs_ds, data, "node-down-recovered")
    node = bed.host("h1").node
    bed.stop_node(node)
    try:
        with pytest.raises(OneFailure) as failure:
            one.vm_deploy([image], "h1")
    finally:
        bed.start_node(node)

    line, vm = failure.value.info, one.vm(failure.value.oid or 0)
    assert line.startswith("h1: ")
    assert "daemon may be down" in line
    assert line.startswith(driver_line(vm.error))  # onevm show: as much of it as oned keeps
    assert line in one.vm_log(vm)
    assert one.vm_recover_retry(vm).lcm_state == "RUNNING"
    assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
    one.vm_terminate(vm)


def test_a_failed_save_back_is_saved_once_by_recover_retry_and_dropped_by_recover_delete_or_success(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(2 << 20, seed=48)
    image = image_from(bed, one, ipfs_ds, data, "recovered-save-back", persistent=True)
    first = one.image(image).template["IPFS_VERSIONS"]
    vm = one.vm_deploy([image], "h1")
    write_into(disk_path(bed, one, vm), 1 << 20, b"kept through a failed epilog" * 64)
    changed = sha256(disk_path(bed, one, vm).read_bytes())
    h1_pins = pins(bed.host("h1").node)
    bed.stop_node(bed.frontend)
    try:
        with pytest.raises(OneFailure) as failure:
            one.vm_terminate(vm)
        assert one.vm_recover(vm, "failure", until="EPILOG_FAILURE").state == "ACTIVE"
    finally:
        bed.start_node(bed.frontend)

    assert "\n" not in failure.value.info
    assert one.image(image).template["IPFS_VERSIONS"] == first
    assert sha256(disk_path(bed, one, vm).read_bytes()) == changed
    # what h1's node added stays a cache entry of the disk, for the datastore's node to fetch on retry
    assert all(name.startswith("one-cache-") for _, name in pins(bed.host("h1").node) - h1_pins)
    assert one.vm_recover_retry(vm).state == "DONE"
    saved = one.image(image).template["IPFS_VERSIONS"].split()
    assert saved[0] == first and len(saved) == 2
    assert vm_disks(bed, "h1", vm) == []

    discarded = one.vm_deploy([image], "h2")
    assert sha256(disk_path(bed, one, discarded).read_bytes()) == changed
    write_into(disk_path(bed, one, discarded), 0, b"discarded by recover --delete" * 64)
    one.vm_recover_delete(discarded)
    assert one.image(image).state == "ERROR"  # oned's: a disk deleted in use may be incomplete
    assert one.image_enable(image).template["IPFS_VERSIONS"].split() == saved
    # oned marks the VM DONE first, then its TM deletes the disks
    settle(lambda: vm_disks(bed, "h2", discarded) == [], "the deleted VM's disks going from h2")

    declared_done = one.vm_deploy([image], "h3")
    write_into(disk_path(bed, one, declared_done), 0, b"never saved: recover --success" * 64)
    bed.stop_node(bed.frontend)
    try:
        with pytest.raises(OneFailure):
            one.vm_terminate(declared_done)
    finally:
        bed.start_node(bed.frontend)
    assert one.vm_recover(declared_done, "success", until="DONE").state == "DONE"
    assert one.image(image).template["IPFS_VERSIONS"].split() == saved
    assert one.image(image).state == "READY"
    left = vm_disks(bed, "h3", declared_done)  # --success runs no driver: the folder is the admin's
    assert left
    for disk in left:
        disk.unlink()
