"""Load under genuine oned: deploy-terminate cycles in a row leave no pin, file or process behind.

Run on the current version only: what a cycle leaves is the drivers' and Kubo's, whichever oned orders the
same deploy and terminate (docs/testing.md). ``make test`` runs 8 cycles, 2 on each host; the 200-cycle
soak is a ``long`` case (``make test-long``). Many deploys at once stay on the simulator (tests/test_load.py).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest

from one_ipfs.defaults import SSH_CONTROL_PERSIST
from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.one import Image
from testbed.system import Process
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes
from tests.support.nodes import command_lines, files_under, pins, processes_of, settle
from tests.support.vms import disk_path

pytestmark = [pytest.mark.bed, pytest.mark.opennebula, pytest.mark.current_version]

MIB = 1 << 20


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
    # Only what the cycles started: oned's own monitoring probes keep starting on the frontend, and a full
    # session's VMs (other tests' poweroff and undeployed ones) can keep one always running there.
    after = [processes_of(bed, machine) for machine in machines]
    for machine, before, now in zip(machines, processes_before, after, strict=True):
        started_by_cycles = now - before
        # An sshd session ends a moment after its client has gone, and a host's shared ssh connection (a
        # master the cycles started when the one before had expired) ControlPersist after its last use.
        name = machine.name if machine else "the frontend"
        settle(
            partial(_all_ended, started_by_cycles),
            f"every process the cycles started on {name} ending",
            limit=SSH_CONTROL_PERSIST + 30.0,
            why=partial(_still_running, started_by_cycles),
        )
    print(f"\n{cycles} deploy-terminate cycles: {elapsed:.1f} s ({elapsed / cycles:.2f} s each)")


def _all_ended(processes: set[Process]) -> bool:
    return not any(process.alive() for process in processes)


def _still_running(processes: set[Process]) -> str:
    return f"(still running: {command_lines(p for p in processes if p.alive())})"
