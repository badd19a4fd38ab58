"""The transfer driver under genuine oned: VMs deployed, saved and migrated on real hosts.

Every life cycle checks the disk bytes by hash at each step; the disks live in each host's own
/var/lib/one (its mount namespace), reached here through the bed's root-namespace folders.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.one import Datastore, DiskSpec, OneFailure
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import bitswap_stat
from tests.support.vms import (
    SETTINGS,
    disk_path,
    disks_on,
    guest_view,
    guest_write,
    image_from,
    vm_disks,
    write_into,
)

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]


@pytest.fixture
def linked_datastores(bed: Bed) -> Iterator[Path]:
    """h4's ``/var/lib/one/datastores`` made a link to a folder outside ``/var/lib/one``, as the shipped
    oned.conf allows (``DATASTORE_LOCATION``: "You can symlink this directory to any other path")."""
    host = bed.host("h4")
    owner = host.var_lib_one.stat()
    elsewhere = Path(tempfile.mkdtemp(prefix="one-ipfs-linked-ds-", dir="/var/tmp"))
    target = elsewhere / "datastores"
    target.mkdir()
    for folder in (elsewhere, target):
        os.chown(folder, owner.st_uid, owner.st_gid)
    linked = host.var_lib_one / "datastores"
    kept = linked.with_name("datastores.kept")
    if linked.exists():
        linked.rename(kept)
    linked.symlink_to(target)
    try:
        yield target
    finally:
        linked.unlink()
        if kept.exists():
            kept.rename(linked)
        shutil.rmtree(elsewhere)


def test_deploy_on_every_host_writes_sparse_byte_identical_disks(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(8 << 20, seed=21)
    image = image_from(bed, one, ipfs_ds, data, "fleet")

    vms = [one.vm_deploy([image], host) for host in ("h1", "h2", "h3")]

    for vm in vms:
        path = disk_path(bed, one, vm)
        assert sha256(path.read_bytes()) == sha256(data)
        assert path.stat().st_blocks * 512 <= 0.55 * len(data)
        assert not path.with_name("disk.0.part").exists()
        assert (path.parent.parent / ".monitor").read_text().strip() == "ssh"
    for vm in vms:
        one.vm_terminate(vm)
        assert not disk_path(bed, one, vm, host=one.vm(vm).hostname).exists()


@pytest.mark.current_version
def test_deploy_grows_the_disk_to_the_size_the_vm_asks_for(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(2 << 20, seed=22)
    image = image_from(bed, one, ipfs_ds, data, "grow")

    vm = one.vm_deploy([DiskSpec(image, size_mb=64)], "h1")

    content = disk_path(bed, one, vm).read_bytes()
    assert len(content) == 64 << 20
    assert content[: len(data)] == data
    assert content[len(data) :].count(0) == len(content) - len(data)
    one.vm_terminate(vm)


def test_a_persistent_disk_saved_on_one_host_deploys_with_its_change_on_another(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(4 << 20, seed=23)
    image = image_from(bed, one, ipfs_ds, data, "persistent", persistent=True)
    first_cid = one.image(image).template["IPFS_CID"]

    vm = one.vm_deploy([image], "h1")
    write_into(disk_path(bed, one, vm), 1 << 20, b"changed on h1" * 100)
    changed = disk_path(bed, one, vm).read_bytes()
    one.vm_terminate(vm)

    saved = one.image(image)
    versions = saved.template["IPFS_VERSIONS"].split()
    assert versions[0] == f"1:{first_cid}"
    assert versions[1].startswith("2:")
    assert saved.template["IPFS_CID"] != first_cid
    assert first_cid in {pin.cid for pin in bed.frontend.client().pin_ls()}
    again = one.vm_deploy([image], "h2")
    assert sha256(disk_path(bed, one, again).read_bytes()) == sha256(changed)
    one.vm_terminate(again)


@pytest.mark.current_version
def test_an_unchanged_persistent_disk_records_no_new_version(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_from(bed, one, ipfs_ds, disk_bytes(1 << 20, seed=24), "untouched", persistent=True)

    one.vm_terminate(one.vm_deploy([image], "h2"))

    assert len(one.image(image).template["IPFS_VERSIONS"].split()) == 1


@pytest.mark.current_version
def test_a_fixed_ipfs_source_cannot_be_persistent_and_fails_at_deploy(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    cid = bed.host("h1").node.client().add(io.BytesIO(disk_bytes(1 << 20, seed=25)), settings=SETTINGS).cid
    image = one.image_create(
        ipfs_ds, name="fixed", source=f"/ipfs/{cid}", format="raw", size_mb=1, persistent=True
    )

    with pytest.raises(OneFailure) as failure:
        one.vm_deploy([image], "h1")

    assert "cannot be a persistent disk" in failure.value.info
    assert "\n" not in failure.value.info


@pytest.mark.current_version
def test_a_fixed_ipfs_source_deploys_as_a_non_persistent_disk(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(1 << 20, seed=26)
    cid = bed.host("h2").node.client().add(io.BytesIO(data), settings=SETTINGS).cid
    image = one.image_create(ipfs_ds, name="fixed-np", source=f"/ipfs/{cid}", format="raw", size_mb=1)

    vm = one.vm_deploy([image], "h1")

    assert disk_path(bed, one, vm).read_bytes() == data
    one.vm_terminate(vm)


def test_disk_saveas_makes_a_new_image_with_the_disk_content(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_from(bed, one, ipfs_ds, disk_bytes(2 << 20, seed=27), "saveas-source")
    vm = one.vm_deploy([image], "h3")
    write_into(disk_path(bed, one, vm), 0, b"saved as a new image")
    expected = disk_path(bed, one, vm).read_bytes()

    saved = one.disk_saveas(vm, 0, "saved")

    content = b"".join(bed.frontend.client().cat(f"/ipfs/{one.image(saved).template['IPFS_CID']}"))
    assert sha256(content) == sha256(expected)
    one.vm_terminate(vm)


def test_live_migration_keeps_the_disk_and_the_target_fetches_the_image_from_ipfs(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(4 << 20, seed=28)
    image = image_from(bed, one, ipfs_ds, data, "live")
    vm = one.vm_deploy([image], "h1")
    write_into(disk_path(bed, one, vm), 0, b"state before migration")
    before = disk_path(bed, one, vm).read_bytes()
    cid = one.image(image).template["IPFS_CID"]

    one.vm_migrate(vm, "h2", live=True)

    assert one.vm(vm).hostname == "h2"
    assert sha256(disk_path(bed, one, vm, host="h2").read_bytes()) == sha256(before)
    stat = bed.host("h2").node.client().files_stat(f"/ipfs/{cid}", with_local=True)
    assert stat.local
    one.vm_terminate(vm)


@pytest.mark.parametrize("how", ["stop", "undeploy", "migrate"])
def test_cold_life_cycle_keeps_the_disk_byte_identical(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, how: str
) -> None:
    image = image_from(bed, one, ipfs_ds, disk_bytes(2 << 20, seed=29), f"cold-{how}")
    vm = one.vm_deploy([image], "h1")
    write_into(disk_path(bed, one, vm), 4096, how.encode() * 50)
    before = sha256(disk_path(bed, one, vm).read_bytes())

    if how == "migrate":
        one.vm_migrate(vm, "h3")
    else:
        getattr(one, f"vm_{how}")(vm)
        one.vm_resume(vm, "h3")

    assert one.vm(vm).hostname == "h3"
    assert sha256(disk_path(bed, one, vm).read_bytes()) == before
    one.vm_terminate(vm)


@pytest.mark.current_version
def test_overlay_mode_deploys_a_qcow2_overlay_on_a_base_kept_once_per_host(
    bed: Bed, one: GenuineOne, overlay_ds: Datastore
) -> None:
    data = disk_bytes(4 << 20, seed=30)
    image = image_from(bed, one, overlay_ds, data, "overlay")

    first, second = one.vm_deploy([image], "h2"), one.vm_deploy([image], "h2")

    for vm in (first, second):
        assert disk_path(bed, one, vm).read_bytes()[:4] == b"QFI\xfb"
        assert guest_view(bed, one, vm)[: len(data)] == data
    bases = bed.host("h2").var_lib_one / "datastores" / ".one-ipfs-cache" / "bases"
    cid = one.image(image).template["IPFS_CID"]
    assert [base.name for base in bases.glob(f"{cid}*")] == [cid]  # synced: overlays outlive a reboot
    one.vm_terminate(first)
    one.vm_migrate(second, "h1", live=True)
    assert guest_view(bed, one, second)[: len(data)] == data
    one.vm_terminate(second)


def test_a_live_migration_whose_premigrate_failed_lands_every_byte_and_saves_the_persistent_disk_once(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, overlay_ds: Datastore
) -> None:
    """OpenNebula's system-datastore TMs (7.x ``local``, ``ssh``) ignore the exit status of the image
    TMs' premigrate: the migration goes on though the target fetched nothing, not even an overlay's base."""
    base = disk_bytes(4 << 20, seed=37)
    overlay = image_from(bed, one, overlay_ds, base, "premigrate-failed-overlay")
    kept = disk_bytes(2 << 20, seed=38)
    persistent = image_from(bed, one, ipfs_ds, kept, "premigrate-failed", persistent=True)
    vm = one.vm_deploy([overlay, persistent], "h1")
    guest_write(bed, one, vm, 4096, b"written on h1 before the migration")
    write_into(disk_path(bed, one, vm, 1), 1 << 20, b"kept across the migration" * 40)
    before = guest_view(bed, one, vm)
    changed = disk_path(bed, one, vm, 1).read_bytes()
    target = bed.host("h2").node
    bed.stop_node(target)
    try:
        one.vm_migrate(vm, "h2", live=True)
    finally:
        bed.start_node(target)

    assert one.vm(vm).hostname == "h2"
    base_cid = one.image(overlay).template["IPFS_CID"]
    assert not target.client().files_stat(f"/ipfs/{base_cid}", with_local=True).local
    assert guest_view(bed, one, vm) == before
    one.vm_terminate(vm)
    versions = one.image(persistent).template["IPFS_VERSIONS"].split()
    assert len(versions) == 2
    saved = versions[1].split(":", 1)[1]
    assert sha256(b"".join(bed.frontend.client().cat(f"/ipfs/{saved}"))) == sha256(changed)
    assert not vm_disks(bed, "h2", vm) and not vm_disks(bed, "h1", vm)


@pytest.mark.current_version
@pytest.mark.parametrize("mode", ["COPY", "OVERLAY"])
def test_a_datastore_location_linked_outside_var_lib_one_deploys_saves_and_deletes(
    bed: Bed, one: GenuineOne, linked_datastores: Path, mode: str
) -> None:
    ds = one.datastore_create(
        ipfs_datastore_template(bed, f"ipfs-linked-{mode.lower()}", IPFS_DEPLOY_MODE=mode)
    )
    data = disk_bytes(2 << 20, seed=36)
    image = image_from(bed, one, ds, data, f"linked-{mode.lower()}", persistent=mode == "COPY")

    vm = one.vm_deploy([image], "h4")
    folder = linked_datastores / "0" / str(vm.id)
    assert (folder / "disk.0").is_file()
    assert guest_view(bed, one, vm)[: len(data)] == data
    one.vm_poweroff(vm)
    one.disk_snapshot_create(vm, 0, "linked")
    one.vm_terminate(vm)

    assert not folder.exists()


@pytest.mark.current_version
def test_a_link_inside_a_vm_folder_is_refused_with_one_line_and_nothing_written(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_from(bed, one, ipfs_ds, disk_bytes(1 << 20, seed=37), "link-in-vm-folder")
    vm = one.vm_deploy([image], "h3")
    one.vm_poweroff(vm)
    outside = Path(tempfile.mkdtemp(prefix="one-ipfs-link-target-", dir="/var/tmp"))
    owner = bed.host("h3").var_lib_one.stat()
    os.chown(outside, owner.st_uid, owner.st_gid)  # the driver could write there: only the check stops it
    snapshots = disk_path(bed, one, vm).with_name("disk.0.snap")
    snapshots.symlink_to(outside)
    try:
        with pytest.raises(OneFailure) as failure:
            one.disk_snapshot_create(vm, 0, "through a link")
        left = list(outside.iterdir())
    finally:
        snapshots.unlink()
        shutil.rmtree(outside)
        one.vm_terminate(vm)

    assert failure.value.info.startswith("h3: ")
    assert "inside a VM folder" in failure.value.info
    assert "\n" not in failure.value.info
    assert left == []


@pytest.mark.current_version
def test_a_second_copy_of_an_image_on_a_host_is_made_from_its_base_without_any_fetch(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(4 << 20, seed=35)
    image = image_from(bed, one, ipfs_ds, data, "second-copy")
    cid = one.image(image).template["IPFS_CID"]
    first = one.vm_deploy([image], "h1")
    received = bitswap_stat(bed.host("h1").node)["DataReceived"]

    second = one.vm_deploy([image], "h1")

    assert bitswap_stat(bed.host("h1").node)["DataReceived"] == received
    for vm in (first, second):
        assert disk_path(bed, one, vm).read_bytes()[: len(data)] == data
    bases = bed.host("h1").var_lib_one / "datastores" / ".one-ipfs-cache" / "bases"
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert [base.name for base in bases.glob(f"{cid}*")] == [f"{cid}.boot-{boot}"]  # left to writeback
    for vm in (first, second):
        one.vm_terminate(vm)


def test_disk_snapshots_revert_to_what_the_disk_held(bed: Bed, one: GenuineOne, ipfs_ds: Datastore) -> None:
    image = image_from(bed, one, ipfs_ds, disk_bytes(2 << 20, seed=31), "snapshots")
    vm = one.vm_deploy([image], "h1")
    one.vm_poweroff(vm)
    before = disk_path(bed, one, vm).read_bytes()

    snapshot = one.disk_snapshot_create(vm, 0, "before")
    write_into(disk_path(bed, one, vm), 0, b"after the snapshot")
    later = one.disk_snapshot_create(vm, 0, "after")
    one.disk_snapshot_revert(vm, 0, snapshot)

    assert disk_path(bed, one, vm).read_bytes() == before
    one.disk_snapshot_delete(vm, 0, later)
    assert not (disk_path(bed, one, vm).parent / "disk.0.snap" / str(later)).exists()
    one.disk_resize(vm, 0, 16)
    assert disk_path(bed, one, vm).stat().st_size == 16 << 20
    one.vm_terminate(vm)


@pytest.mark.current_version
def test_a_stopped_host_node_fails_the_deploy_with_one_line_and_no_disk(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_from(bed, one, ipfs_ds, disk_bytes(1 << 20, seed=32), "node-down")
    disks = disks_on(bed, "h2")
    node = bed.host("h2").node
    bed.stop_node(node)
    try:
        with pytest.raises(OneFailure) as failure:
            one.vm_deploy([image], "h2")
    finally:
        bed.start_node(node)

    assert failure.value.info.startswith("h2: ")
    assert "daemon may be down" in failure.value.info
    assert disks_on(bed, "h2") == disks


@pytest.mark.current_version
def test_content_nobody_holds_fails_the_deploy_after_the_stall_timeout(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    cid = bed.frontend.client().add(io.BytesIO(os.urandom(4096)), settings=SETTINGS, only_hash=True).cid
    image = one.image_create(ipfs_ds, name="nobody", source=f"/ipfs/{cid}", format="raw", size_mb=1)
    disks = disks_on(bed, "h3")

    with pytest.raises(OneFailure) as failure:
        one.vm_deploy([image], "h3")

    assert cid in failure.value.info
    assert cid not in {pin.cid for pin in bed.host("h3").node.client().pin_ls()}
    assert disks_on(bed, "h3") == disks


@pytest.mark.current_version
def test_a_full_disk_on_the_host_fails_the_deploy_with_one_line_and_no_disk(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_from(bed, one, ipfs_ds, disk_bytes(16 << 20, seed=33), "disk-full")
    host = bed.host("h1")
    owner = host.var_lib_one.stat()
    options = f"size=2m,mode=0755,uid={owner.st_uid},gid={owner.st_gid}"
    for folder in ("/var/lib/one/datastores", "/var/lib/one/datastores/0"):
        bed.host_run(host, ["install", "-d", "-o", str(owner.st_uid), "-g", str(owner.st_gid), folder])
    bed.host_run(host, ["mount", "-t", "tmpfs", "-o", options, "one-ipfs-full", "/var/lib/one/datastores/0"])
    try:
        with pytest.raises(OneFailure) as failure:
            one.vm_deploy([image], "h1")
        left = bed.host_run(host, ["find", "/var/lib/one/datastores/0", "-name", "disk.*"]).stdout
    finally:
        bed.host_run(host, ["umount", "/var/lib/one/datastores/0"])

    assert failure.value.info.startswith("h1: ")
    assert "space" in failure.value.info.lower()
    assert "\n" not in failure.value.info
    assert left == b""
    cid = one.image(image).template["IPFS_CID"]
    assert cid not in {pin.cid for pin in host.node.client().pin_ls()}
