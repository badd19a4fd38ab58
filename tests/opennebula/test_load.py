"""Load under genuine oned: hosts deploying one image at once, and deploy-terminate cycles in a row.

What a cloud under load relies on: every disk is its image byte for byte, hosts deploying one image at once
read each other's leaves and receive it once, and cycles in a row leave no pin, file or process behind. The
deploys at once start together (``GenuineOne.vm_deploy_at_once``: each VM held by ``onevm create --hold``,
then every ``one.vm.deploy`` sent back to back over XML-RPC, the call ``onevm deploy`` makes, since a Ruby
CLI process each would spread the starts apart). 32 deploys at once stay on the simulator (tests/test_load.py
says why).

Run on the current version only: what the hosts fetch and leave is the drivers' and Kubo's, whichever oned
orders the same clone and delete (docs/testing.md). ``make test`` runs 8 cycles, 2 on each host; the 200-cycle
soak is a ``long`` case (``make test-long``).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from testbed.bed import Bed, Host
from testbed.genuine import GenuineOne
from testbed.one import Datastore, Image
from testbed.system import Process
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import bitswap_stat, files_under, pins, processes_of, received_from_hosts, settle
from tests.support.vms import disk_path, imported

pytestmark = [pytest.mark.bed, pytest.mark.opennebula, pytest.mark.current_version]

MIB = 1 << 20
FLEET_MBIT = 20.0


def test_hosts_deploying_one_image_at_once_read_each_others_leaves_and_receive_it_once(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, local_dir: Path
) -> None:
    data = disk_bytes(16 * MIB, seed=int.from_bytes(os.urandom(4), "big"))  # content no host holds yet
    image = imported(one, ipfs_ds, local_dir, "fleet", data)
    before = {host.name: bitswap_stat(host.node) for host in bed.hosts}
    from_hosts_before = {host.name: received_from_hosts(host.node) for host in bed.hosts}
    links = ["frontend", *(host.name for host in bed.hosts)]
    try:
        for link in links:  # slow enough that the hosts hear of each other long before they are done
            bed.set_rate(link, FLEET_MBIT)
        vms = one.vm_deploy_at_once([([image], host.name) for host in bed.hosts], context=False)
    finally:
        for link in links:
            bed.set_rate(link, None)

    cid = one.image(image).template["IPFS_CID"]
    for vm, host in zip(vms, bed.hosts, strict=True):
        assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data), host.name
        assert (cid, f"one-cache-{cid}") in pins(host.node), host.name
        after = bitswap_stat(host.node)
        by_bitswap = after["DataReceived"] - after["DupDataReceived"]
        by_bitswap -= before[host.name]["DataReceived"] - before[host.name]["DupDataReceived"]
        from_hosts = received_from_hosts(host.node) - from_hosts_before[host.name]
        # Part of the image came from the other hosts' gateways, the rest by bitswap, none of it twice
        # (libp2p's count of a protocol's bytes falls a little short of what was read: about 8% here).
        assert by_bitswap < len(data) and from_hosts > 0, (host.name, by_bitswap, from_hosts)
        assert by_bitswap + from_hosts <= len(data) + 256 * 1024, (host.name, by_bitswap, from_hosts)
    with ThreadPoolExecutor(len(vms)) as pool:
        list(pool.map(one.vm_terminate, vms))
    one.image_delete(image)


@pytest.fixture(scope="module")
def cycled(bed: Bed, one: GenuineOne, local_dir: Path) -> Image:
    """An image in a datastore whose hosts keep no cache, having run one life cycle on each host: a first
    use leaves what any does (bytecode of the host bundle, the cache's own folders)."""
    ds = one.datastore_create(ipfs_datastore_template(bed, "ipfs-cycles", IPFS_HOST_CACHE_MB="0"))
    path = local_dir / "cycles.raw"
    path.write_bytes(disk_bytes(1 * MIB, seed=799))
    path.chmod(0o644)
    image = one.image_create(ds, name="cycles", path=str(path))
    for host in bed.hosts:
        one.vm_terminate(one.vm_deploy([image], host.name, context=False))
    return image


@pytest.mark.parametrize("cycles", [8, pytest.param(200, marks=pytest.mark.long)])
def test_deploy_terminate_cycles_leave_no_pin_file_or_process_behind(
    bed: Bed, one: GenuineOne, cycled: Image, local_dir: Path, cycles: int
) -> None:
    data = (local_dir / "cycles.raw").read_bytes()
    nodes = [bed.frontend, *(host.node for host in bed.hosts)]
    places = [
        bed.frontend_var_lib_one,
        *(folder for h in bed.hosts for folder in (h.var_lib_one, h.var_tmp_one)),
    ]
    pins_before = {node.name: pins(node) for node in nodes}
    files_before = {place: files_under(place) for place in places}
    machines = [None, *bed.hosts]
    processes_before = [processes_of(bed, machine) for machine in machines]

    started = time.monotonic()
    for cycle in range(cycles):
        vm = one.vm_deploy([cycled], bed.hosts[cycle % len(bed.hosts)].name, context=False)
        assert disk_path(bed, one, vm).read_bytes() == data, cycle
        one.vm_terminate(vm)
    elapsed = time.monotonic() - started

    assert {node.name: pins(node) for node in nodes} == pins_before
    assert {place: files_under(place) for place in places} == files_before
    for machine, before in zip(machines, processes_before, strict=True):
        # An sshd session ends a moment after its client has gone: wait for it, within a bound.
        name = machine.name if machine else "the frontend"
        settle(partial(_no_new_process, bed, machine, before), f"every new process on {name} ending")
    print(f"\n{cycles} deploy-terminate cycles: {elapsed:.1f} s ({elapsed / cycles:.2f} s each)")


def _no_new_process(bed: Bed, machine: Host | None, before: set[Process]) -> bool:
    return processes_of(bed, machine) <= before
