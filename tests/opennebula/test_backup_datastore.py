"""The IPFS backup datastore (``DS_MAD=ipfs``, ``TYPE=BACKUP_DS``) under genuine oned, driven by ``onevm
backup`` and ``oneimage restore``: each backup is one IPFS directory the VM's host adds and the frontend pins
peer to peer, so a backup of an unchanged disk, or of another VM of the same image, stores next to nothing;
a restore gives ``ipfs`` images of the backup's disks (zero copy) that deploy byte-identical on a host that
never held them; and oned's KEEP_LAST deleting the oldest backup unpins exactly the blocks no remaining
backup uses.

Run on the current version only (docs/testing.md): the backup calls of 6.10.5 and 7.4.0 are the same.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.kubo import Node
from testbed.one import Datastore, Image, OneFailure, VirtualMachine
from testbed.one.documents import parse_xml
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import ipfs_cli, settle
from tests.support.vms import file_view, guest_write, image_from, parse_increments, stored_views

pytestmark = [pytest.mark.bed, pytest.mark.opennebula, pytest.mark.current_version]

SIZE = 16 << 20
"""Half of it data (``disk_bytes``): the first backup stores 8 MiB."""


@pytest.fixture(scope="module")
def ipfs_backup_ds(bed: Bed, one: GenuineOne) -> Datastore:
    """A backup datastore of the ipfs driver, as an admin creates it."""
    return one.datastore_create(ipfs_datastore_template(bed, "ipfs-backups", TYPE="BACKUP_DS", TM_MAD="-"))


def repo_size(node: Node) -> int:
    return node.client().repo_stat().repo_size


def backup_cid(backup: Image) -> str:
    """The directory a backup's SOURCE (``<token>-<cid>``) names."""
    return backup.source.rpartition("-")[2]


def blocks(node: Node, backup: Image) -> set[str]:
    """Every block of a backup's directory, its root included."""
    cid = backup_cid(backup)
    return {cid, *ipfs_cli(node, "refs", "-r", "--unique", cid).split()}


def pinned_blocks(node: Node) -> set[str]:
    """Every block a pin keeps, directly or below a recursive pin."""
    return set(ipfs_cli(node, "pin", "ls", "--type=all", "--quiet").split())


def seen(bed: Bed, one: GenuineOne, vm: VirtualMachine) -> str:
    """The hash of what the guest reads through its first disk."""
    return sha256(file_view(bed, one, vm, "disk.0", one.vm(vm).disk(0)["DRIVER"]))


def gone(one: GenuineOne, image: Image) -> bool:
    try:
        one.image(image)
    except OneFailure:
        return True
    return False


def test_backups_store_each_block_once_restore_byte_identical_and_keep_last_releases_only_the_oldest(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, ipfs_backup_ds: Datastore
) -> None:
    frontend = bed.frontend
    image = image_from(bed, one, ipfs_ds, disk_bytes(SIZE, seed=71), "ipfs-backed-up")
    with ThreadPoolExecutor(2) as pool:
        vm, sibling = pool.map(lambda host: one.vm_poweroff(one.vm_deploy([image], host)), ("h1", "h2"))
    one.vm_backup_config(vm, {"MODE": "FULL", "KEEP_LAST": "2"})

    before = repo_size(frontend)
    oldest = one.vm_backup(vm, ipfs_backup_ds)
    first_growth = repo_size(frontend) - before
    guest_write(bed, one, vm, 5 << 20, b"changed!" * 512)
    changed_view = seen(bed, one, vm)
    before = repo_size(frontend)
    changed = one.vm_backup(vm, ipfs_backup_ds)
    changed_growth = repo_size(frontend) - before
    before = repo_size(frontend)
    other = one.vm_backup(sibling, ipfs_backup_ds)
    sibling_growth = repo_size(frontend) - before

    assert first_growth > SIZE // 4
    assert changed_growth < first_growth // 4, "a 4 KiB change stored more than a few blocks"
    assert sibling_growth < first_growth // 4, "another VM of the same image stored its unchanged disk again"

    restored = one.backup_restore(changed, ipfs_ds, "ipfs-restored")
    assert restored[0].template["IPFS_CID"] in blocks(frontend, changed)
    elsewhere = one.vm_deploy(restored, "h3")
    assert seen(bed, one, elsewhere) == changed_view

    oldest_blocks = blocks(frontend, oldest)
    with ThreadPoolExecutor(1) as pool:
        ending = pool.submit(one.vm_terminate, elsewhere)
        newest = one.vm_backup(vm, ipfs_backup_ds)
        ending.result()
    settle(lambda: gone(one, oldest), "oned deleting the backup beyond KEEP_LAST=2")
    kept = blocks(frontend, changed) | blocks(frontend, newest) | blocks(frontend, other)
    only_oldest = oldest_blocks - kept
    pinned = pinned_blocks(frontend)
    assert only_oldest, "the oldest backup had no block of its own (its directory and vm.xml at least)"
    assert not only_oldest & pinned
    assert kept <= pinned
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one.vm_terminate, (vm, sibling)))


def test_incremental_backups_store_changed_blocks_restore_each_increment_and_keep_last_merges_the_oldest(
    bed: Bed,
    one: GenuineOne,
    ipfs_ds: Datastore,
    overlay_ds: Datastore,
    ipfs_backup_ds: Datastore,
    tmp_path: Path,
) -> None:
    frontend = bed.frontend
    image = image_from(bed, one, overlay_ds, disk_bytes(SIZE, seed=81), "inc-backed-up")
    vm = one.vm_poweroff(one.vm_deploy([image], "h1"))
    one.vm_backup_config(vm, {"MODE": "INCREMENT", "KEEP_LAST": "2"})
    views, growth = [], []
    for increment in range(3):
        guest_write(bed, one, vm, increment << 20, bytes([increment + 1]) * 65536)
        views.append(seen(bed, one, vm))
        before = repo_size(frontend)
        backup = one.vm_backup(vm, ipfs_backup_ds)
        growth.append(repo_size(frontend) - before)
        if increment == 1:
            first_two = one.image(backup).xml

    assert growth[1] < growth[0] // 4, "an increment of 64 KiB stored more than its changed blocks"
    settle(
        lambda: parse_increments(one.image(backup)) == [1, 2], "oned merging increments 0 and 1 (KEEP_LAST=2)"
    )
    merged = one.image(backup)
    assert parse_increments(merged) == [1, 2]
    assert stored_views(bed, one.backup_restore(merged, ipfs_ds, "inc-1", increment=1), tmp_path) == [
        views[1]
    ]
    assert stored_views(bed, one.backup_restore(merged, ipfs_ds, "inc-2"), tmp_path) == [views[2]]
    pinned = pinned_blocks(frontend)
    for source in sources(first_two):
        assert source.rpartition("-")[2] not in pinned, "an increment merged away is still pinned"

    one.vm_restore(vm, merged, increment=1)
    assert seen(bed, one, vm) == views[1]
    one.vm_terminate(vm)


def sources(xml: str) -> list[str]:
    return [node.text or "" for node in parse_xml(xml).findall("BACKUP_INCREMENTS/INCREMENT/SOURCE")]
