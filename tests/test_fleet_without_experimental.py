"""A fleet deploy on nodes without one of Kubo's experimental features (pubsub, p2p stream mounting, the p2p
HTTP proxy), which a future Kubo may drop: every host still writes the whole disk and leaves nothing behind.

The fallback each absence takes is proven without Kubo in tests/test_fetching_unit.py; here real Kubo
answers as those fakes do, and the drivers run end to end through the simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from one_ipfs.errors import CommandFailed
from one_ipfs.ipfs.gateway import PEER_PROTOCOL, Gateway
from testbed.bed import Bed
from testbed.kubo import EXPERIMENTAL
from testbed.one import Datastore, OneSim
from tests.support.images import disk_bytes, sha256
from tests.support.kubo_wire import NOT_ENABLED
from tests.support.nodes import all_pins, host_commands
from tests.support.vms import disk_path, leftovers, vm_disks

pytestmark = pytest.mark.bed

HOSTS = ("h1", "h2", "h3")
LEAF = "bafkreiaaxfh2od7ltc5qkiauc64rpoivktcgqjqfcfculmf7yo5vpusdry"
"""A raw sha2-256 block that no node holds."""


@pytest.fixture(scope="module")
def restored(bed: Bed) -> Iterator[Bed]:
    """The bed, with every experimental feature on again once the module is done."""
    yield bed
    bed.switch_off(())


def answers_as_kubo_without(bed: Bed, off: str) -> str:
    """Kubo's error when the frontend's node is asked for what ``off`` provides."""
    client = bed.frontend.client(timeout=10)
    host, port = client.gateway_address() or ("", 0)
    attempts: dict[str, Callable[[], object]] = {
        "pubsub": lambda: client.pubsub_subscribe("one-ipfs/test/off", timeout=10).close(),
        "p2p": lambda: client.p2p_listen(PEER_PROTOCOL, f"/ip4/{host}/tcp/{port}"),
        "http-proxy": lambda: Gateway(host, port).peer_block(bed.host("h1").node.peer_id, LEAF, 10),
    }
    with pytest.raises(CommandFailed) as failure:
        attempts[off]()
    return str(failure.value)


@pytest.mark.parametrize("off", list(EXPERIMENTAL))
def test_a_fleet_deploy_without_one_of_kubos_experimental_features_writes_every_disk_and_leaves_nothing(
    restored: Bed, one: OneSim, ipfs_ds: Datastore, local_dir: Path, off: str
) -> None:
    bed = restored
    bed.switch_off([off])
    assert NOT_ENABLED[off] in answers_as_kubo_without(bed, off)
    data = disk_bytes(8 << 20, seed=sum(map(ord, off)))
    path = local_dir / f"without-{off}.raw"
    path.write_bytes(data)
    path.chmod(0o644)
    image = one.image_create(ipfs_ds, name=f"without-{off}", path=str(path))
    cid = one.image(image).template["IPFS_CID"]
    pins_before = all_pins(bed)

    with ThreadPoolExecutor(len(HOSTS)) as deploys:  # all at once: a fleet
        vms = dict(zip(HOSTS, deploys.map(lambda host: one.vm_deploy([image], host), HOSTS), strict=True))

    for vm in vms.values():
        assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
    pins_after = all_pins(bed)
    assert pins_after["frontend"] == pins_before["frontend"]
    for host in HOSTS:
        assert {pinned for pinned, _ in pins_after[host] - pins_before[host]} == {cid}
        assert pins_before[host] <= pins_after[host]
    for host, vm in vms.items():
        one.vm_terminate(vm)
        assert vm_disks(bed, host, vm) == []
        assert leftovers(bed, host) == []
    for host in HOSTS:  # the host side, and any thread of the fleet it started, ended with each action
        assert host_commands(bed.host(host)) == []
