"""Load: many deploys at once, through the drivers on the bed's real hosts, ordered by the simulator.

What a cloud under load relies on: every disk is its image byte for byte, and a host fetches an image once
however many of its VMs use it. These stay on the simulator, which starts every deploy at the same moment
and records every driver reply. Under genuine oned (deploys sent back to back over XML-RPC) the 32 failed
while the drivers ran ``onevm show -x`` and ``onedatastore show -x`` for each of the 15 transfers oned runs
at once, a Ruby process each, which on 2 shared cores missed the driver's 60 s bound (the drivers now ask
oned over XML-RPC; the 32 are to be tried there again). The fleet test once saw a host receive part of the
image twice under heavy machine load (docs/reliability.md: how a leaf could come twice, closed since).
Deploy-terminate cycles leaving nothing behind run under genuine oned (tests/opennebula/test_load.py).
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testbed.bed import Bed
from testbed.one import Datastore, Image, OneSim, VirtualMachine
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import bitswap_stat, pins, received_from_hosts

pytestmark = pytest.mark.bed

MIB = 1 << 20
IMAGES = 4
DEPLOYS = 32
CYCLES = 200
FLEET_MBIT = 20.0
FETCHING = re.compile(r"fetching (\w+) \(\d+ MiB\) into this host's IPFS node")


def disk_path(bed: Bed, one: OneSim, vm: VirtualMachine) -> Path:
    return bed.host(one.vm(vm).hostname).var_lib_one / "datastores" / "0" / str(vm.id) / "disk.0"


def fetches(one: OneSim, vms: list[VirtualMachine]) -> Counter[tuple[str, str]]:
    """(host, CID) of every fetch into a host's node the VMs' transfers logged."""
    ids = {vm.id for vm in vms}
    logged = (
        (one.vm(result.id).hostname, line.text)
        for result in one.results("TRANSFER")
        if result.id in ids
        for step in result.steps
        for line in step.logs
    )
    return Counter((host, match[1]) for host, text in logged if (match := FETCHING.search(text)))


def imported(one: OneSim, ds: Datastore, folder: Path, name: str, data: bytes) -> Image:
    """``oneimage create --path``: the datastore driver imports the file into the frontend's node."""
    path = folder / f"{name}.raw"
    path.write_bytes(data)
    path.chmod(0o644)
    return one.image_create(ds, name=name, path=str(path))


def test_32_deploys_of_4_images_on_4_hosts_at_once_are_byte_identical_and_fetched_once_per_host(
    bed: Bed, one: OneSim, ipfs_ds: Datastore, local_dir: Path
) -> None:
    contents = [disk_bytes(2 * MIB, seed=700 + i) for i in range(IMAGES)]
    images = [imported(one, ipfs_ds, local_dir, f"load-{i}", data) for i, data in enumerate(contents)]
    hosts = [host.name for host in bed.hosts]
    # VM i runs image i // len(hosts) % IMAGES on host i % len(hosts): every host runs every image twice.
    plan = [(i // len(hosts) % IMAGES, hosts[i % len(hosts)]) for i in range(DEPLOYS)]
    before = {host.name: bitswap_stat(host.node) for host in bed.hosts}
    from_hosts_before = {host.name: received_from_hosts(host.node) for host in bed.hosts}

    started = time.monotonic()
    with ThreadPoolExecutor(DEPLOYS) as pool:
        vms = list(pool.map(lambda step: one.vm_deploy([images[step[0]]], step[1], context=False), plan))
    elapsed = time.monotonic() - started

    for vm, (number, name) in zip(vms, plan, strict=True):
        assert one.vm(vm).lcm_state == "RUNNING"
        assert one.vm(vm).hostname == name
        assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(contents[number]), (vm.id, name)
    cids = [one.image(image).template["IPFS_CID"] for image in images]
    # Each host fetched each image once, however many of its VMs use it; the others found it held.
    assert fetches(one, vms) == Counter((name, cid) for name in hosts for cid in cids)
    distinct = sum(len(data) for data in contents)
    figures = []
    for host in bed.hosts:
        after = bitswap_stat(host.node)
        received = after["DataReceived"] - before[host.name]["DataReceived"]
        duplicate = after["DupDataReceived"] - before[host.name]["DupDataReceived"]
        from_hosts = received_from_hosts(host.node) - from_hosts_before[host.name]
        # And what arrived is the images once, not once per VM. Bitswap counts a block as a duplicate only
        # if it was stored before the copy arrived: two peers answering one want at the same moment (a
        # session asks a second peer when the first is slow, and two cores for 32 deploys make everything
        # slow) add a few blocks it counts as new, so the bound is between once and twice.
        assert received - duplicate + from_hosts < 1.5 * distinct, (host.name, received, from_hosts)
        figures.append(
            f"{host.name} received {received / MIB:.2f} MiB by bitswap ({duplicate / MIB:.2f} MiB twice)"
            f" and {from_hosts / MIB:.2f} MiB from other hosts"
        )
        held = {cid for cid, name in pins(host.node) if name.startswith("one-cache-")}
        assert held >= set(cids), host.name
    print(f"\n{DEPLOYS} deploys of {IMAGES} images on {len(hosts)} hosts at once: {elapsed:.1f} s;", *figures)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one.vm_terminate, vms))
    for image in images:
        one.image_delete(image)


def test_hosts_deploying_one_image_at_once_read_each_others_leaves_and_receive_it_once(
    bed: Bed, one: OneSim, ipfs_ds: Datastore, local_dir: Path
) -> None:
    data = disk_bytes(16 * MIB, seed=int.from_bytes(os.urandom(4), "big"))  # content no host holds yet
    image = imported(one, ipfs_ds, local_dir, "fleet", data)
    before = {host.name: bitswap_stat(host.node) for host in bed.hosts}
    from_hosts_before = {host.name: received_from_hosts(host.node) for host in bed.hosts}
    links = ["frontend", *(host.name for host in bed.hosts)]
    try:
        for link in links:  # slow enough that the hosts hear of each other long before they are done
            bed.set_rate(link, FLEET_MBIT)
        with ThreadPoolExecutor(len(bed.hosts)) as pool:
            vms = list(pool.map(lambda host: one.vm_deploy([image], host.name, context=False), bed.hosts))
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
