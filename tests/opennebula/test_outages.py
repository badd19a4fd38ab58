"""Under genuine oned: a node, a link or sshd that is down before an OpenNebula operation starts, and
deploys that race each other, as oned orders them in the normal course of ``onevm deploy``.

Each case must end with one line a user understands (``onevm show`` and the VM log), no partial
``disk.i`` nor temporary file on the host, no pin on any node that nothing accounts for, and a VM that
``onevm recover --retry`` brings up once the fault is gone. Faults that must land at an exact moment of an
action stay on the simulator (tests/test_faults.py). Run on the current version only (docs/testing.md).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.one import Datastore, OneFailure
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import all_pins, bitswap_received, ipfs_cli, pins
from tests.support.vms import disk_path, image_from, leftovers, vm_disks

pytestmark = [pytest.mark.bed, pytest.mark.opennebula, pytest.mark.current_version]

STALL = 20


@pytest.fixture(scope="module")
def outage_ds(bed: Bed, one: GenuineOne) -> Datastore:
    """An IPFS datastore whose stall timeout is short, so that every fault is seen within seconds."""
    return one.datastore_create(ipfs_datastore_template(bed, "ipfs-outages", IPFS_STALL_TIMEOUT=str(STALL)))


def test_a_deploy_succeeds_from_the_hosts_that_hold_the_image_while_the_frontend_node_is_stopped(
    bed: Bed, one: GenuineOne, outage_ds: Datastore
) -> None:
    data = disk_bytes(2 << 20, seed=72)
    image = image_from(bed, one, outage_ds, data, "frontend-down")
    first = one.vm_deploy([image], "h1")
    h2_before = pins(bed.host("h2").node)
    bed.stop_node(bed.frontend)
    try:
        second = one.vm_deploy([image], "h2")
    finally:
        bed.start_node(bed.frontend)

    assert sha256(disk_path(bed, one, second).read_bytes()) == sha256(data)
    cid = one.image(image).template["IPFS_CID"]
    assert pins(bed.host("h2").node) - h2_before == {(cid, f"one-cache-{cid}")}
    for vm in (first, second):
        one.vm_terminate(vm)
    assert leftovers(bed, "h2") == []


def test_two_deploys_of_one_image_on_one_host_at_once_fetch_it_once_and_both_get_every_byte(
    bed: Bed, one: GenuineOne, outage_ds: Datastore
) -> None:
    size = 4 << 20
    data = disk_bytes(size, seed=74)
    image = image_from(bed, one, outage_ds, data, "twice-at-once")
    before, fetched = pins(bed.host("h2").node), bitswap_received(bed.host("h2").node)

    with ThreadPoolExecutor(2) as pool:
        vms = list(pool.map(lambda _: one.vm_deploy([image], "h2"), range(2)))

    assert bitswap_received(bed.host("h2").node) - fetched < size * 3 // 2
    for vm in vms:
        assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
    cid = one.image(image).template["IPFS_CID"]
    assert pins(bed.host("h2").node) - before == {(cid, f"one-cache-{cid}")}
    for vm in vms:
        one.vm_terminate(vm)
    assert leftovers(bed, "h2") == []


def test_a_host_that_lost_its_peers_dials_them_at_the_next_deploy_instead_of_waiting_for_kubo(
    bed: Bed, one: GenuineOne, outage_ds: Datastore
) -> None:
    # As after an outage of the host's network: no connection left, so not even the DHT can find the
    # frontend. Kubo's peering redials a lost peer 7.5 to 12.5 s after the loss at the soonest, far
    # beyond this datastore's stall timeout, which a deploy that waited for Kubo would run into.
    ds = one.datastore_create(ipfs_datastore_template(bed, "ipfs-redial", IPFS_STALL_TIMEOUT="5"))
    data = disk_bytes(1 << 20, seed=77)
    image = image_from(bed, one, ds, data, "redial")
    host = bed.host("h4")
    for peer in {peer for peer, _ in host.node.client().swarm_peers()}:
        ipfs_cli(host.node, "swarm", "disconnect", f"/p2p/{peer}")
    assert host.node.client().swarm_peers() == []

    vm = one.vm_deploy([image], host.name, context=False)

    assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
    one.vm_terminate(vm)
    one.image_delete(image)


@pytest.mark.parametrize("how", ["host-unreachable", "sshd-stopped"])
def test_ssh_failing_fails_onevm_deploy_with_one_line_leaves_nothing_and_recover_retry_deploys(
    bed: Bed, one: GenuineOne, outage_ds: Datastore, how: str
) -> None:
    data = disk_bytes(1 << 20, seed=76)
    image = image_from(bed, one, outage_ds, data, f"ssh-{how}")
    host = bed.host("h3")
    before = all_pins(bed)
    breaks, repairs = (bed.stop_sshd, bed.start_sshd) if how == "sshd-stopped" else (bed.partition, bed.heal)
    breaks(host)
    try:
        with pytest.raises(OneFailure) as raised:
            one.vm_deploy([image], "h3")
    finally:
        repairs(host)

    failure = raised.value
    assert failure.info.startswith("h3: ssh: connect to host")
    reasons = ("Connection refused",) if how == "sshd-stopped" else ("No route to host", "timed out")
    assert any(reason in failure.info for reason in reasons)
    assert "\n" not in failure.info and "Traceback" not in failure.info
    assert failure.oid is not None
    vm = one.vm(failure.oid)
    assert vm.lcm_state == "PROLOG_FAILURE"
    assert vm_disks(bed, "h3", vm) == []
    assert all_pins(bed) == before
    one.vm_recover_retry(vm)
    assert disk_path(bed, one, vm).read_bytes() == data
    one.vm_terminate(vm)
